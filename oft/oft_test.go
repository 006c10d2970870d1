package oft_test

import (
	"math"
	"testing"

	"github.com/gopeft/peft/internal/orth/orthtest"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/oft"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// llama-tiny__oft (PEFT 0.10: r 4 on q, v, down_proj).
func TestOFTFixture(t *testing.T) { orthtest.Fixture(t, "oft", 1e-4) }

// llama-tiny__oft-coft-share (PEFT 0.10: r 8, coft with eps 0.2, one
// shared block per layer).
func TestOFTCoftShareFixture(t *testing.T) { orthtest.Fixture(t, "oft-coft-share", 1e-4) }

// A fresh adapter (zero blocks: R = I) gives exactly the base logits;
// a few steps train only oft_r and lower the loss; coft keeps every block
// inside its ball.
func TestTrain(t *testing.T) {
	e := testutil.OpenExpected(t, "llama-tiny__oft")
	base := orthtest.LoadLlama(t)
	want, _ := testutil.LogitsOf(t, base, e)
	cfg := oft.NewConfig()
	cfg.R = 4
	cfg.TargetModules = oft.List("q_proj", "v_proj", "down_proj")
	m, err := oft.Wrap(base, cfg)
	require.NoError(t, err)
	defer nn.FreeParams(m)
	got, _ := testutil.LogitsOf(t, m, e)
	require.LessOrEqual(t, testutil.MaxDiff(want, got), 1e-5)
	orthtest.Train(t, m, 4, ".oft_r.")

	c2 := oft.NewConfig()
	c2.R, c2.Coft, c2.Eps, c2.BlockShare = 8, true, 1e-3, true
	c2.TargetModules = oft.List("q_proj")
	c2.InitWeights = new(bool) // random blocks, outside the ball
	m2, err := oft.Wrap(orthtest.LoadLlama(t), c2)
	require.NoError(t, err)
	defer nn.FreeParams(m2)
	orthtest.Train(t, m2, 3, ".oft_r.")
	s := tensor.NoGradScope()
	defer s.Close()
	for _, np := range m2.TrainableParams() {
		// forward projects before use: radius eps·b²/√1 with b = 64/8
		testutil.LogitsOf(t, m2, e)
		v := s.Float32s(np.Param.T())
		var ss float64
		for _, x := range v {
			ss += float64(x) * float64(x)
		}
		require.LessOrEqual(t, math.Sqrt(ss), 1e-3*64*(1+1e-5), np.Name)
	}
}

// Bad configs fail with errors naming the field.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ json, want string }{
		{`{"peft_type":"OFT","r":0,"target_modules":["q_proj"]}`, `"r"`},
		{`{"peft_type":"OFT","r":4,"module_dropout":1.5,"target_modules":["q_proj"]}`, `"module_dropout"`},
		{`{"peft_type":"OFT","r":4,"eps":-1,"target_modules":["q_proj"]}`, `"eps"`},
		{`{"peft_type":"OFT","r":4,"rank_pattern":{"q_proj":0},"target_modules":["q_proj"]}`, `"rank_pattern"`},
		{`{"peft_type":"OFT","r":0,"oft_block_size":32,"target_modules":["q_proj"]}`, `"oft_block_size"`},
	} {
		_, err := oft.Decode([]byte(tc.json))
		require.ErrorContains(t, err, tc.want, tc.json)
	}
	_, err := oft.Wrap(orthtest.LoadLlama(t), oft.NewConfig())
	require.ErrorContains(t, err, `"target_modules" is required`)
	c := oft.NewConfig()
	c.TargetModules = oft.List("embed_tokens")
	_, err = oft.Wrap(orthtest.LoadLlama(t), c)
	require.ErrorContains(t, err, "Linear layers only")
}

// r that does not divide out_features: blocks of ⌈out/r⌉ cut to out;
// rank_pattern picks r per module; merge and unmerge agree with the
// forward.
func TestUnevenBlocksAndRankPattern(t *testing.T) {
	e := testutil.OpenExpected(t, "llama-tiny__oft")
	cfg := oft.NewConfig()
	cfg.R = 3 // q_proj: 64 = 3·22 - 2
	cfg.TargetModules = oft.List("q_proj", "v_proj")
	require.NoError(t, cfg.RankPattern.UnmarshalJSON([]byte(`{"v_proj": 2}`)))
	cfg.InitWeights = new(bool)
	m, err := oft.Wrap(orthtest.LoadLlama(t), cfg)
	require.NoError(t, err)
	defer nn.FreeParams(m)
	shapes := map[string][]int64{}
	st, err := m.AdapterStateDict(peft.DefaultAdapter)
	require.NoError(t, err)
	for _, np := range st {
		shapes[np.Name] = np.Param.Shape()
	}
	require.Equal(t, []int64{3, 22, 22}, shapes["base_model.model.model.layers.0.self_attn.q_proj.oft_r"])
	require.Equal(t, []int64{2, 16, 16}, shapes["base_model.model.model.layers.0.self_attn.v_proj.oft_r"])
	adapted, _ := testutil.LogitsOf(t, m, e)
	require.NoError(t, m.Merge(false))
	merged, _ := testutil.LogitsOf(t, m, e)
	require.LessOrEqual(t, testutil.MaxDiff(adapted, merged), 1e-4)
	require.NoError(t, m.Unmerge())
	un, _ := testutil.LogitsOf(t, m, e)
	require.LessOrEqual(t, testutil.MaxDiff(adapted, un), 1e-4)
}

// peft estimate's OFT row counts the fixture's trainable parameters.
func TestEstimate(t *testing.T) { orthtest.RequireEstimate(t, "oft", "oft", 4) }

// Two active adapters on biased layers (BLOOM's query_key_value, dense):
// merged, unmerged and forward agree (the bias stays outside the rotation).
func TestTwoAdaptersOnBiasedLayers(t *testing.T) {
	orthtest.RequireTwoAdaptersOnBiasedLayers(t, func() peft.Config {
		c := oft.NewConfig()
		c.R = 4
		c.TargetModules = oft.List("query_key_value", "dense")
		c.InitWeights = new(bool)
		return c
	})
}
