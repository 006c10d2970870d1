package hra_test

import (
	"testing"

	"github.com/gopeft/peft/hra"
	"github.com/gopeft/peft/internal/orth/orthtest"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/stretchr/testify/require"
)

// llama-tiny__hra (PEFT 0.13.2: r 4 on q, v, down_proj).
func TestHRAFixture(t *testing.T) { orthtest.Fixture(t, "hra", 1e-4) }

// llama-tiny__hra-gs (PEFT 0.13.2: r 4, apply_GS, on q and v).
func TestHRAGSFixture(t *testing.T) { orthtest.Fixture(t, "hra-gs", 1e-4) }

// A fresh adapter (each vector twice: H = I) gives the base logits; a few
// steps train only hra_u and lower the loss, with and without apply_GS.
func TestTrain(t *testing.T) {
	e := testutil.OpenExpected(t, "llama-tiny__hra")
	base := orthtest.LoadLlama(t)
	want, _ := testutil.LogitsOf(t, base, e)
	cfg := hra.NewConfig()
	cfg.R = 4
	m, err := hra.Wrap(base, cfg)
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.Equal(t, []string{"q_proj", "v_proj"}, cfg.TargetModules.List) // PEFT's default for llama
	got, _ := testutil.LogitsOf(t, m, e)
	require.LessOrEqual(t, testutil.MaxDiff(want, got), 1e-5)
	orthtest.Train(t, m, 4, ".hra_u.")

	gs := hra.NewConfig()
	gs.R, gs.ApplyGS = 4, true
	gs.InitWeights = new(bool)
	m2, err := hra.Wrap(orthtest.LoadLlama(t), gs)
	require.NoError(t, err)
	defer nn.FreeParams(m2)
	orthtest.Train(t, m2, 4, ".hra_u.")
}

// Bad configs fail with errors naming the field.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ json, want string }{
		{`{"peft_type":"HRA","r":0}`, `"r"`},
		{`{"peft_type":"HRA","r":4,"bias":"lora_only"}`, `"bias"`},
		{`{"peft_type":"HRA","r":4,"target_modules":"q_proj(","layers_to_transform":null}`, `target_modules`},
		{`{"peft_type":"HRA","r":4,"target_modules":".*q_proj","layers_to_transform":[0]}`, `"layers_to_transform"`},
	} {
		_, err := hra.Decode([]byte(tc.json))
		require.ErrorContains(t, err, tc.want, tc.json)
	}
	c := hra.NewConfig()
	c.TargetModules = hra.List("embed_tokens")
	_, err := hra.Wrap(orthtest.LoadLlama(t), c)
	require.ErrorContains(t, err, "Linear layers only")
}

// peft estimate's HRA row counts the fixtures' trainable parameters.
func TestEstimate(t *testing.T) {
	orthtest.RequireEstimate(t, "hra", "hra", 4)
	orthtest.RequireEstimate(t, "hra-gs", "hra", 4)
}

// Two active adapters on biased layers (BLOOM's query_key_value, dense):
// merged, unmerged and forward agree.
func TestTwoAdaptersOnBiasedLayers(t *testing.T) {
	for _, gs := range []bool{false, true} {
		orthtest.RequireTwoAdaptersOnBiasedLayers(t, func() peft.Config {
			c := hra.NewConfig()
			c.R, c.ApplyGS = 4, gs
			c.TargetModules = hra.List("query_key_value", "dense")
			c.InitWeights = new(bool)
			return c
		})
	}
}
