package loha_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/gopeft/peft/internal/lycoris/lycoristest"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/loha"
	"github.com/gopeft/peft/models/gpt2"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// The fixture's config made through the API.
func fixtureConfig() *loha.Config {
	return &loha.Config{R: 4, Alpha: 8, TargetModules: loha.List("v_proj", "q_proj", "down_proj")}
}

// llama-tiny__loha (PEFT 0.10): adapted, disabled and merged logits, the
// merged weights, unmerge.
func TestFixture(t *testing.T) {
	lycoristest.RequireFixture(t, "loha", "hada_")
}

// A fresh adapter with the fixture's settings has PEFT's trainable count,
// leaves the model as it was, and saves PEFT's keys and shapes.
func TestFreshAdapter(t *testing.T) {
	m := lycoristest.RequireTrainableCount(t, "loha", fixtureConfig())
	lycoristest.RequireSavedLikePEFT(t, m, "loha", nil, nil)
	lycoristest.RequireIdentityAtInit(t, "loha", fixtureConfig())

	// init_weights=false: hada_w2_b is random too, the model changes
	cfg := fixtureConfig()
	cfg.InitWeights = loha.Init{Value: "false"}
	e := testutil.OpenExpected(t, "llama-tiny__loha")
	r, err := peft.New(lycoristest.Llama(t), cfg)
	require.NoError(t, err)
	got, _ := testutil.LogitsOf(t, r, e)
	require.Greater(t, testutil.MaxDiff(got, e.F32(t, "logits_base")), 1e-3)
}

func TestSaveRoundTrip(t *testing.T) {
	lycoristest.RequireRoundTrip(t, "loha")
}

// Training changes only the hada_ parameters and lowers the loss, also
// with rank and module dropout on.
func TestTraining(t *testing.T) {
	m, err := loha.Wrap(lycoristest.Llama(t), fixtureConfig())
	require.NoError(t, err)
	lycoristest.RequireTraining(t, m, "hada_", 1e-2, 6)

	cfg := fixtureConfig()
	cfg.RankDropout, cfg.ModuleDropout = 0.3, 0.2
	peft.SetSeed(3)
	m, err = loha.Wrap(lycoristest.Llama(t), cfg)
	require.NoError(t, err)
	lycoristest.RequireTraining(t, m, "hada_", 1e-2, 8)
}

// ΔW is (w1_a·w1_b) ⊙ (w2_a·w2_b)·alpha/r, computed here by hand from
// the layer's parameters in Go.
func TestDeltaByHand(t *testing.T) {
	cfg := fixtureConfig()
	cfg.InitWeights = loha.Init{Value: "false"}
	cfg.AlphaPattern, _ = loha.MakePattern("v_proj", 2)
	m, err := loha.Wrap(lycoristest.Llama(t), cfg)
	require.NoError(t, err)
	s := tensor.NoGradScope()
	defer s.Close()
	for _, at := range peft.Tuners(m.Base()) {
		l := at.Tuner.(*loha.Linear)
		a, _ := l.Adapter("default")
		wantScale := 8.0 / 4 // alpha / r
		if strings.HasSuffix(at.Path, "v_proj") {
			wantScale = 2.0 / 4 // alpha_pattern
		}
		require.Equal(t, wantScale, a.Scaling, at.Path)
		get := func(n string) ([]float32, []int64) {
			p, ok := l.Param(n, "default")
			require.True(t, ok, n)
			return s.Float32s(p.T()), p.Shape()
		}
		w1a, sa := get("hada_w1_a")
		w1b, sb := get("hada_w1_b")
		w2a, _ := get("hada_w2_a")
		w2b, _ := get("hada_w2_b")
		out, r, in := sa[0], sa[1], sb[1]
		got := s.Float32s(l.Delta(s, "default"))
		var maxd float64
		for i := int64(0); i < out; i++ {
			for j := int64(0); j < in; j++ {
				var p1, p2 float64
				for k := int64(0); k < r; k++ {
					p1 += float64(w1a[i*r+k]) * float64(w1b[k*in+j])
					p2 += float64(w2a[i*r+k]) * float64(w2b[k*in+j])
				}
				maxd = math.Max(maxd, math.Abs(p1*p2*a.Scaling-float64(got[i*in+j])))
			}
		}
		require.Less(t, maxd, 1e-5, at.Path)
	}
	require.NoError(t, s.Err())
}

// Rank dropout in training: PEFT's drop = rand(out) > p, divided by its
// mean, multiplies the rows of ΔW; module dropout draws rand(1) first
// when set. Replayed with the same seed.
func TestDropoutSemantics(t *testing.T) {
	cfg := fixtureConfig()
	cfg.InitWeights = loha.Init{Value: "false"}
	cfg.TargetModules = loha.List("model.layers.0.self_attn.q_proj")
	cfg.RankDropout = 0.5
	m, err := loha.Wrap(lycoristest.Llama(t), cfg)
	require.NoError(t, err)
	l := peft.Tuners(m.Base())[0].Tuner.(*loha.Linear)
	s := tensor.NoGradScope()
	defer s.Close()
	x := s.Randn(tensor.Float32, 3, 64)
	base := l.Base.Forward(s, x)
	d := l.Delta(s, "default")

	nn.SetTraining(m, true)
	peft.SetSeed(11)
	got := l.Forward(s, x)
	peft.SetSeed(11)
	mask := s.To(s.GtScalar(s.Rand(tensor.Float32, 64), 0.5), tensor.Float32)
	mask = s.Div(mask, s.Mean(mask, false, 0))
	want := s.Add(base, s.Linear(x, s.Mul(d, s.Unsqueeze(mask, 1)), nil))
	require.NoError(t, s.Err())
	require.LessOrEqual(t, testutil.MaxDiff(s.Float32s(got), s.Float32s(want)), 1e-6)
	require.Greater(t, testutil.MaxDiff(s.Float32s(got), s.Float32s(s.Add(base, s.Linear(x, d, nil)))), 1e-4)

	// module dropout 1: the adapter never runs in training, always in eval
	a, _ := l.Adapter("default")
	a.ModuleDropout = 1
	require.True(t, testutil.EqualF32(s.Float32s(l.Forward(s, x)), s.Float32s(base)))
	nn.SetTraining(m, false)
	require.LessOrEqual(t, testutil.MaxDiff(s.Float32s(l.Forward(s, x)), s.Float32s(s.Add(base, s.Linear(x, d, nil)))), 1e-6)
	require.NoError(t, s.Err())
}

// A mixed-adapter batch is refused with an error naming the layer type.
func TestRowsRefused(t *testing.T) {
	m, err := loha.Wrap(lycoristest.Llama(t), fixtureConfig())
	require.NoError(t, err)
	s := tensor.NoGradScope()
	defer s.Close()
	defer peft.WithSelection(s, &peft.Selection{Rows: []string{"default", "default"}})()
	m.ForwardT(s, lycoristest.IDsBatch(s))
	require.ErrorContains(t, s.Err(), "(loha.Linear) cannot run different adapters per row")
}

// Bad configs fail with errors naming the field; unknown keys survive a
// re-save.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ json, want string }{
		{`{"peft_type": "LOHA", "r": 0}`, `"r"`},
		{`{"peft_type": "LOHA", "r": 4, "rank_dropout": 1.5}`, `"rank_dropout"`},
		{`{"peft_type": "LOHA", "r": 4, "module_dropout": -0.1}`, `"module_dropout"`},
		{`{"peft_type": "LOHA", "r": 4, "init_weights": "lycoris"}`, `"init_weights"`},
		{`{"peft_type": "LOHA", "r": 4, "rank_pattern": {"q_proj(": 2}}`, `"rank_pattern"`},
		{`{"peft_type": "LOHA", "r": 4, "rank_pattern": {"q_proj": 2.5}}`, `"rank_pattern"`},
		{`{"peft_type": "LOHA", "r": 4, "target_modules": "(", "layers_to_transform": 0}`, `"target_modules"`},
		{`{"peft_type": "LOHA", "r": 4, "layers_pattern": "layers"}`, `"layers_pattern"`},
	} {
		_, err := peft.ParseConfig("adapter_config.json", []byte(tc.json))
		require.ErrorContains(t, err, tc.want, tc.json)
	}
	cfg, err := peft.ParseConfig("x", []byte(`{"peft_type": "LOHA", "r": 4, "alpha": 0, "target_modules": ["q_proj"], "future_key": [1, 2]}`))
	require.NoError(t, err)
	m, err := peft.New(lycoristest.Llama(t), cfg)
	require.NoError(t, err)
	out, err := json.Marshal(cfg)
	require.NoError(t, err)
	var back map[string]any
	require.NoError(t, json.Unmarshal(out, &back))
	require.Equal(t, []any{1.0, 2.0}, back["future_key"])
	require.Equal(t, 0.0, back["alpha"]) // a file's 0 stays 0
	require.Equal(t, "LOHA", back["peft_type"])
	_ = m

	// GPT-2's Conv1D is not a LoHa target (as in PEFT)
	_, err = loha.Wrap(testutil.Load(t, gpt2.Load, "gpt2-tiny"), &loha.Config{TargetModules: loha.List("c_attn")})
	require.ErrorContains(t, err, "supports Linear layers")
}

func TestBadInputs(t *testing.T) { lycoristest.RequireBadInputsFail(t, "loha") }

func TestBF16Base(t *testing.T) { lycoristest.RequireBF16Base(t, "loha", "hada_") }

// Two adapters on one model: both active sum their updates, a call's
// Selection picks one without changing the model, merging one and
// unmerging restores the weights, deleting one leaves the other.
func TestTwoAdapters(t *testing.T) {
	m, err := peft.Load(lycoristest.Llama(t), lycoristest.AdapterDir(t, "loha"), peft.WithAdapterName("a"))
	require.NoError(t, err)
	cfg := fixtureConfig()
	cfg.InitWeights = loha.Init{Value: "false"}
	cfg.TargetModules = loha.List("q_proj")
	require.NoError(t, m.AddAdapter("b", cfg))
	var l *loha.Linear
	for _, at := range peft.Tuners(m.Base()) {
		if at.Path == "model.layers.0.self_attn.q_proj" {
			l = at.Tuner.(*loha.Linear)
		}
	}
	require.Equal(t, []string{"a", "b"}, l.Adapters())
	s := tensor.NoGradScope()
	defer s.Close()
	x := s.Randn(tensor.Float32, 2, 64)
	base := l.Base.Forward(s, x)
	da, db := l.Delta(s, "a"), l.Delta(s, "b")
	close := func(got, want *tensor.T) {
		require.NoError(t, s.Err())
		require.LessOrEqual(t, testutil.MaxDiff(s.Float32s(got), s.Float32s(want)), 1e-5)
	}
	close(l.Forward(s, x), s.Add(base, s.Linear(x, da, nil)))
	require.NoError(t, m.SetAdapter("a", "b"))
	close(l.Forward(s, x), s.Add(s.Add(base, s.Linear(x, da, nil)), s.Linear(x, db, nil)))
	restore := peft.WithSelection(s, &peft.Selection{Adapters: []string{"b"}})
	close(l.Forward(s, x), s.Add(base, s.Linear(x, db, nil)))
	restore()

	w := testutil.Snapshot(t, l.Base)
	require.NoError(t, m.Merge(false, "b"))
	require.Equal(t, []string{"b"}, l.Merged())
	close(l.Base.Forward(s, x), s.Add(base, s.Linear(x, db, nil)))
	require.NoError(t, m.Unmerge())
	for k, v := range testutil.Snapshot(t, l.Base) {
		require.LessOrEqual(t, testutil.MaxDiff(v, w[k]), 1e-6, k)
	}
	require.NoError(t, m.DeleteAdapter("b"))
	require.Equal(t, []string{"a"}, l.Adapters())
	_, ok := l.Param("hada_w1_a", "b")
	require.False(t, ok)
	close(l.Forward(s, x), s.Add(base, s.Linear(x, da, nil)))
}
