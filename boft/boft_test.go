package boft_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/boft"
	"github.com/gopeft/peft/internal/orth/orthtest"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/stretchr/testify/require"
)

// llama-tiny__boft (PEFT 0.13.2: block size 8, one butterfly factor, on q,
// v and down_proj).
func TestBOFTFixture(t *testing.T) { orthtest.Fixture(t, "boft", 1e-4) }

// A fresh adapter (zero blocks, unit scales) gives the base logits; a few
// steps train only boft_R and boft_s and lower the loss, with one and with
// three butterfly factors and with boft_dropout.
func TestTrain(t *testing.T) {
	e := testutil.OpenExpected(t, "llama-tiny__boft")
	base := orthtest.LoadLlama(t)
	want, _ := testutil.LogitsOf(t, base, e)
	cfg := boft.NewConfig()
	cfg.BoftBlockSize, cfg.BoftNButterflyFactor = 4, 3
	m, err := boft.Wrap(base, cfg)
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.Equal(t, []string{"q_proj", "v_proj"}, cfg.TargetModules.List) // PEFT's default for llama
	got, _ := testutil.LogitsOf(t, m, e)
	require.LessOrEqual(t, testutil.MaxDiff(want, got), 1e-5)
	orthtest.Train(t, m, 4, ".boft_R.", ".boft_s.")

	c2 := boft.NewConfig()
	c2.BoftBlockNum, c2.BoftBlockSize, c2.BoftDropout = 8, 0, 0.5
	c2.BoftNButterflyFactor = 2
	m2, err := boft.Wrap(orthtest.LoadLlama(t), c2)
	require.NoError(t, err)
	defer nn.FreeParams(m2)
	orthtest.Train(t, m2, 4, ".boft_R.", ".boft_s.")
}

// A factor ≥ 2 adapter saves boft_R [factors, blocks, b, b] and loads back
// bit-identically with the same logits; PEFT's CPU fallback (a config
// saying factor 2 over blocks of one factor) is refused with an error
// naming the tensor.
func TestButterflySaveLoad(t *testing.T) {
	e := testutil.OpenExpected(t, "llama-tiny__boft")
	cfg := boft.NewConfig()
	cfg.BoftBlockSize, cfg.BoftNButterflyFactor = 8, 2
	cfg.InitWeights = new(bool)
	m, err := boft.Wrap(orthtest.LoadLlama(t), cfg)
	require.NoError(t, err)
	defer nn.FreeParams(m)
	adapted, _ := testutil.LogitsOf(t, m, e)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	back, err := peft.Load(orthtest.LoadLlama(t), dir)
	require.NoError(t, err)
	defer nn.FreeParams(back)
	again, _ := testutil.LogitsOf(t, back, e)
	require.Equal(t, adapted, again)
	st, err := back.AdapterStateDict(peft.DefaultAdapter)
	require.NoError(t, err)
	require.Equal(t, []int64{2, 8, 8, 8}, st[0].Param.Shape(), st[0].Name)

	// the shipped factor-1 weights under a config claiming factor 2
	cpu := t.TempDir()
	py := testutil.Fixtures(t, "adapters", "llama-tiny", "boft")
	w, err := os.ReadFile(filepath.Join(py, peft.WeightsName))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(cpu, peft.WeightsName), w, 0o644))
	c := testutil.ReadJSON(t, filepath.Join(py, peft.ConfigName))
	c["boft_n_butterfly_factor"] = 2
	b, err := peft.EncodeConfig(c)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(cpu, peft.ConfigName), b, 0o644))
	_, err = peft.Load(orthtest.LoadLlama(t), cpu)
	require.ErrorContains(t, err, "boft_R")
}

// Bad configs fail with errors naming the field; layers whose width does
// not fit the blocks fail naming the module.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ json, want string }{
		{`{"peft_type":"BOFT","boft_block_size":4,"boft_block_num":4}`, `"boft_block_size"`},
		{`{"peft_type":"BOFT","boft_block_size":0,"boft_block_num":0}`, `"boft_block_num"`},
		{`{"peft_type":"BOFT","boft_block_size":4,"boft_n_butterfly_factor":0}`, `"boft_n_butterfly_factor"`},
		{`{"peft_type":"BOFT","boft_block_size":4,"boft_dropout":2}`, `"boft_dropout"`},
		{`{"peft_type":"BOFT","boft_block_size":4,"bias":"lora_only"}`, `"bias"`},
	} {
		_, err := boft.Decode([]byte(tc.json))
		require.ErrorContains(t, err, tc.want, tc.json)
	}
	for _, tc := range []struct {
		size, num, factor int
		want              string
	}{
		{size: 6, factor: 1, want: "divisible by boft_block_size"},
		{size: 16, factor: 4, want: "invalid combination of in_features"},
		{num: 5, factor: 1, want: "divisible by boft_block_num"},
		{num: 4, factor: 4, want: "invalid combination of boft_n_butterfly_factor"},
		{size: 2, factor: 2, want: ""}, // fits: 64 = 2·2·16
	} {
		c := boft.NewConfig()
		c.BoftBlockSize, c.BoftBlockNum, c.BoftNButterflyFactor = tc.size, tc.num, tc.factor
		m, err := boft.Wrap(orthtest.LoadLlama(t), c)
		if tc.want == "" {
			require.NoError(t, err)
			nn.FreeParams(m)
			continue
		}
		require.ErrorContains(t, err, tc.want)
		require.ErrorContains(t, err, "q_proj")
	}
}

// peft estimate's BOFT row counts the fixture's trainable parameters.
func TestEstimate(t *testing.T) { orthtest.RequireEstimate(t, "boft", "boft", 8) }

// Two active adapters on biased layers (BLOOM's query_key_value, dense):
// merged, unmerged and forward agree (the scale applies to W x, not to the
// bias).
func TestTwoAdaptersOnBiasedLayers(t *testing.T) {
	orthtest.RequireTwoAdaptersOnBiasedLayers(t, func() peft.Config {
		c := boft.NewConfig()
		c.BoftBlockSize, c.BoftNButterflyFactor = 4, 2
		c.TargetModules = boft.List("query_key_value", "dense")
		c.InitWeights = new(bool)
		return c
	})
}
