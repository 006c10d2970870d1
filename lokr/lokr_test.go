package lokr_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/gopeft/peft/internal/lycoris/lycoristest"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/lokr"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// The fixtures' configs made through the API (PEFT 0.10's LoKr: unscaled).
func fixtureConfig() *lokr.Config {
	return &lokr.Config{R: 4, Alpha: 8, TargetModules: lokr.List("q_proj", "v_proj", "down_proj"), UnscaledKron: true}
}

func bothConfig() *lokr.Config {
	return &lokr.Config{R: 2, Alpha: 4, DecomposeBoth: true, DecomposeFactor: 4,
		TargetModules: lokr.List("q_proj", "v_proj", "up_proj"), UnscaledKron: true}
}

// llama-tiny__lokr and llama-tiny__lokr-decompose-both (PEFT 0.10):
// adapted, disabled and merged logits, merged weights, unmerge.
func TestFixtures(t *testing.T) {
	for _, f := range []string{"lokr", "lokr-decompose-both"} {
		t.Run(f, func(t *testing.T) { lycoristest.RequireFixture(t, f, "lokr_") })
	}
}

func TestSaveRoundTrip(t *testing.T) {
	for _, f := range []string{"lokr", "lokr-decompose-both"} {
		t.Run(f, func(t *testing.T) { lycoristest.RequireRoundTrip(t, f) })
	}
}

// Fresh adapters with the fixtures' settings: PEFT's trainable counts,
// PEFT's keys and shapes (current PEFT's config adds rank_dropout_scale),
// identity at init for init_weights true and "lycoris", not for false.
func TestFreshAdapter(t *testing.T) {
	for _, tc := range []struct {
		fixture string
		cfg     func() *lokr.Config
	}{{"lokr", fixtureConfig}, {"lokr-decompose-both", bothConfig}} {
		m := lycoristest.RequireTrainableCount(t, tc.fixture, tc.cfg())
		lycoristest.RequireSavedLikePEFT(t, m, tc.fixture, nil, nil)
		cur := tc.cfg()
		cur.UnscaledKron = false
		m, err := peft.New(lycoristest.Llama(t), cur)
		require.NoError(t, err)
		lycoristest.RequireSavedLikePEFT(t, m, tc.fixture, []string{"rank_dropout_scale"}, nil)
		lycoristest.RequireIdentityAtInit(t, tc.fixture, tc.cfg())
		for _, init := range []string{"lycoris", "false"} {
			cfg := tc.cfg()
			cfg.InitWeights = lokr.Init{Value: init}
			if init == "lycoris" {
				lycoristest.RequireIdentityAtInit(t, tc.fixture, cfg)
				continue
			}
			e := testutil.OpenExpected(t, "llama-tiny__"+tc.fixture)
			r, err := peft.New(lycoristest.Llama(t), cfg)
			require.NoError(t, err)
			got, _ := testutil.LogitsOf(t, r, e)
			require.Greater(t, testutil.MaxDiff(got, e.F32(t, "logits_base")), 1e-3)
		}
	}
}

// PEFT's factorization() examples, and the fixtures' splits.
func TestFactorization(t *testing.T) {
	for _, tc := range []struct{ dim, f, m, n int }{
		{256, -1, 16, 16}, {128, -1, 8, 16}, {127, -1, 1, 127}, {128, 4, 4, 32},
		{64, -1, 8, 8}, {32, -1, 4, 8}, {64, 4, 4, 16}, {32, 4, 4, 8}, {64, 16, 16, 4},
		{128, 3, 2, 64}, {100, 0, 1, 100}, {12, -1, 3, 4},
	} {
		m, n := lokr.Factorization(tc.dim, tc.f)
		require.Equal(t, [2]int{tc.m, tc.n}, [2]int{m, n}, "factorization(%d, %d)", tc.dim, tc.f)
	}
}

// Kron against the definition, element by element.
func TestKron(t *testing.T) {
	s := tensor.NoGradScope()
	defer s.Close()
	a := s.Randn(tensor.Float32, 2, 3)
	b := s.Randn(tensor.Float32, 4, 5)
	k := lokr.Kron(s, a, b)
	require.Equal(t, []int64{8, 15}, k.Shape())
	av, bv, kv := s.Float32s(a), s.Float32s(b), s.Float32s(k)
	for i := 0; i < 2; i++ {
		for j := 0; j < 3; j++ {
			for p := 0; p < 4; p++ {
				for q := 0; q < 5; q++ {
					require.Equal(t, av[i*3+j]*bv[p*5+q], kv[(i*4+p)*15+j*5+q])
				}
			}
		}
	}
	require.NoError(t, s.Err())
}

// A file without rank_dropout_scale (PEFT < 0.14) runs unscaled and
// saves without the key; with the key, ΔW carries alpha/r.
func TestScalingByVersion(t *testing.T) {
	old, err := peft.ReadConfig(lycoristest.AdapterDir(t, "lokr"))
	require.NoError(t, err)
	require.True(t, old.(*lokr.Config).UnscaledKron)
	js, err := json.Marshal(old)
	require.NoError(t, err)
	require.NotContains(t, string(js), "rank_dropout_scale")

	var raw map[string]any
	require.NoError(t, json.Unmarshal(js, &raw))
	raw["rank_dropout_scale"] = false
	js, _ = json.Marshal(raw)
	cur, err := peft.ParseConfig("x", js)
	require.NoError(t, err)
	require.False(t, cur.(*lokr.Config).UnscaledKron)
	js, err = cur.MarshalJSON()
	require.NoError(t, err)
	require.Contains(t, string(js), `"rank_dropout_scale": false`)

	mOld, err := peft.Load(lycoristest.Llama(t), lycoristest.AdapterDir(t, "lokr"))
	require.NoError(t, err)
	mCur, err := peft.New(lycoristest.Llama(t), cur)
	require.NoError(t, err)
	s := tensor.NoGradScope()
	defer s.Close()
	olds, curs := peft.Tuners(mOld.Base()), peft.Tuners(mCur.Base())
	require.Len(t, curs, len(olds))
	for i := range olds {
		lo, lc := olds[i].Tuner.(*lokr.Linear), curs[i].Tuner.(*lokr.Linear)
		for _, np := range lo.AdapterState("default") { // same weights in both
			p, ok := lc.Param(np.Name, "default")
			require.True(t, ok)
			s.CopyInto(p.T(), np.Param.T())
		}
		a, _ := lc.Adapter("default")
		require.Equal(t, 2.0, a.Scaling)
		want := s.Float32s(s.MulScalar(lo.Delta(s, "default"), 2))
		require.LessOrEqual(t, testutil.MaxDiff(s.Float32s(lc.Delta(s, "default")), want), 1e-6)
	}
	require.NoError(t, s.Err())
}

// Training changes only the lokr_ parameters and lowers the loss (both
// layouts, and with dropout).
func TestTraining(t *testing.T) {
	for _, cfg := range []*lokr.Config{fixtureConfig(), bothConfig()} {
		m, err := lokr.Wrap(lycoristest.Llama(t), cfg)
		require.NoError(t, err)
		lycoristest.RequireTraining(t, m, "lokr_", 1e-2, 6)
	}
	cfg := bothConfig()
	cfg.UnscaledKron = false
	cfg.RankDropout, cfg.ModuleDropout, cfg.RankDropoutScale = 0.3, 0.2, true
	peft.SetSeed(5)
	m, err := lokr.Wrap(lycoristest.Llama(t), cfg)
	require.NoError(t, err)
	lycoristest.RequireTraining(t, m, "lokr_", 1e-2, 8)
}

// Current PEFT's rank dropout without rank_dropout_scale: the kept rows
// are not rescaled.
func TestRankDropoutUnscaled(t *testing.T) {
	cfg := &lokr.Config{R: 2, Alpha: 4, InitWeights: lokr.Init{Value: "false"}, RankDropout: 0.5,
		TargetModules: lokr.List("model.layers.0.self_attn.q_proj")}
	m, err := lokr.Wrap(lycoristest.Llama(t), cfg)
	require.NoError(t, err)
	l := peft.Tuners(m.Base())[0].Tuner.(*lokr.Linear)
	s := tensor.NoGradScope()
	defer s.Close()
	x := s.Randn(tensor.Float32, 3, 64)
	base := l.Base.Forward(s, x)
	d := l.Delta(s, "default")
	nn.SetTraining(m, true)
	peft.SetSeed(9)
	got := l.Forward(s, x)
	peft.SetSeed(9)
	mask := s.To(s.GtScalar(s.Rand(tensor.Float32, 64), 0.5), tensor.Float32)
	want := s.Add(base, s.Linear(x, s.Mul(d, s.Unsqueeze(mask, 1)), nil))
	require.NoError(t, s.Err())
	require.LessOrEqual(t, testutil.MaxDiff(s.Float32s(got), s.Float32s(want)), 1e-6)
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ json, want string }{
		{`{"peft_type": "LOKR", "r": -1}`, `"r"`},
		{`{"peft_type": "LOKR", "r": 4, "decompose_factor": -3}`, `"decompose_factor"`},
		{`{"peft_type": "LOKR", "r": 4, "init_weights": "pissa"}`, `"init_weights"`},
		{`{"peft_type": "LOKR", "r": 4, "alpha_pattern": {"v_proj": "x"}}`, `alpha_pattern`},
		{`{"peft_type": "LOKR", "r": 4, "exclude_modules": "("}`, `"exclude_modules"`},
	} {
		_, err := peft.ParseConfig("adapter_config.json", []byte(tc.json))
		require.ErrorContains(t, err, tc.want, tc.json)
	}
	// use_effective_conv2d is Conv2d's: kept and written, no effect on Linear
	c, err := peft.ParseConfig("x", []byte(`{"peft_type": "LOKR", "r": 4, "use_effective_conv2d": true, "target_modules": ["q_proj"]}`))
	require.NoError(t, err)
	js, err := c.MarshalJSON()
	require.NoError(t, err)
	require.True(t, strings.Contains(string(js), `"use_effective_conv2d": true`), string(js))
	_, err = peft.New(lycoristest.Llama(t), c)
	require.NoError(t, err)
}

func TestBadInputs(t *testing.T) { lycoristest.RequireBadInputsFail(t, "lokr-decompose-both") }

func TestBF16Base(t *testing.T) { lycoristest.RequireBF16Base(t, "lokr", "lokr_") }
