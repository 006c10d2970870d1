package main

import (
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/stretchr/testify/require"
)

// Every method of -method all has a spec whose config wraps a LLaMA model
// and whose estimate options are valid (llama-tiny stands in for the
// quickstart's base).
func TestMethodSpecs(t *testing.T) {
	shape, err := peft.ReadModelShape(testutil.Fixtures(t, "llama-tiny"))
	require.NoError(t, err)
	for _, m := range AllMethods {
		sp, err := methodSpec(m)
		require.NoError(t, err, m)
		if m == "bitfit" {
			continue // llama-tiny has no biases (the quickstart's base has)
		}
		_, err = peft.EstimateMemory(shape, sp.estimate)
		require.NoError(t, err, m)
		if sp.config == nil {
			continue // full fine-tuning
		}
		if m == "adaption" {
			continue // prompts on the quickstart base's 4 layers; llama-tiny has 2 (methods_prompts_test.go builds it on 4)
		}
		base := testutil.Load(t, llama.Load, "llama-tiny")
		pm, err := peft.New(base, sp.config())
		require.NoError(t, err, m)
		tr, _ := nn.CountParams(pm)
		require.Positive(t, tr, m)
	}
	_, err = methodSpec("nope")
	require.ErrorContains(t, err, "loha, lokr")
}
