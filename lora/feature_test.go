package lora

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

func tinyBase(t *testing.T) *llama.Model {
	dir, err := filepath.Abs(filepath.Join("..", "testdata", "hf", "llama-tiny"))
	require.NoError(t, err)
	m, err := llama.Load(dir)
	require.NoError(t, err)
	return m
}

func loraPaths(m nn.Module) []string {
	var out []string
	_ = nn.Walk(m, func(path string, mod nn.Module) error {
		switch mod.(type) {
		case *Linear, *Embedding:
			out = append(out, path)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func TestTargetSelection(t *testing.T) {
	cases := []struct {
		name string
		cfg  *Config
		want []string
	}{
		{"list suffix", &Config{TargetModules: List("self_attn.q_proj")},
			[]string{"base_model.model.model.layers.0.self_attn.q_proj", "base_model.model.model.layers.1.self_attn.q_proj"}},
		{"exclude", &Config{TargetModules: List("q_proj", "v_proj"), ExcludeModules: List("layers.0.self_attn.v_proj")},
			[]string{"base_model.model.model.layers.0.self_attn.q_proj", "base_model.model.model.layers.1.self_attn.q_proj", "base_model.model.model.layers.1.self_attn.v_proj"}},
		{"layers_to_transform", &Config{TargetModules: List("q_proj"), LayersToTransform: IntList{1}},
			[]string{"base_model.model.model.layers.1.self_attn.q_proj"}},
		{"layers_pattern", &Config{TargetModules: List("down_proj"), LayersToTransform: IntList{0}, LayersPattern: StringList{"layers"}},
			[]string{"base_model.model.model.layers.0.mlp.down_proj"}},
		{"regex full match", &Config{TargetModules: Regex(`model\.layers\.1\.mlp\.(up|gate)_proj`)},
			[]string{"base_model.model.model.layers.1.mlp.gate_proj", "base_model.model.model.layers.1.mlp.up_proj"}},
		{"regex must match whole path", &Config{TargetModules: Regex(`q_proj`)}, nil},
		{"embedding", &Config{TargetModules: List("embed_tokens")}, []string{"base_model.model.model.embed_tokens"}},
		{"modules_to_save excluded", &Config{TargetModules: List("lm_head", "q_proj"), ModulesToSave_: []string{"lm_head"}},
			[]string{"base_model.model.model.layers.0.self_attn.q_proj", "base_model.model.model.layers.1.self_attn.q_proj"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Wrap(tinyBase(t), c.cfg)
			if c.want == nil {
				require.ErrorContains(t, err, "matched no module")
				return
			}
			require.NoError(t, err)
			defer nn.FreeParams(m)
			require.Equal(t, c.want, loraPaths(m))
		})
	}
}

func TestRankAndAlphaPatterns(t *testing.T) {
	cfg := &Config{R: 8, LoraAlpha: 16, TargetModules: List("q_proj", "v_proj")}
	require.NoError(t, json.Unmarshal([]byte(`{"^model.layers.0.self_attn.q_proj": 2, "q_proj": 4}`), &cfg.RankPattern))
	require.NoError(t, json.Unmarshal([]byte(`{"v_proj": 32}`), &cfg.AlphaPattern))
	m, err := Wrap(tinyBase(t), cfg)
	require.NoError(t, err)
	defer nn.FreeParams(m)
	get := func(p string) *Linear {
		mod, err := nn.Get(m, "base_model.model."+p)
		require.NoError(t, err)
		return mod.(*Linear)
	}
	// first matching key wins, in file order
	require.Equal(t, []int64{2, 64}, get("model.layers.0.self_attn.q_proj").lin(get("model.layers.0.self_attn.q_proj").A, "default").Weight.Shape())
	require.Equal(t, 16.0/2, get("model.layers.0.self_attn.q_proj").scaling["default"])
	require.Equal(t, 16.0/4, get("model.layers.1.self_attn.q_proj").scaling["default"])
	require.Equal(t, 32.0/8, get("model.layers.1.self_attn.v_proj").scaling["default"])
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	data, _ := os.ReadFile(filepath.Join(dir, peft.ConfigName))
	require.Contains(t, string(data), `"rank_pattern": {`)
	require.Contains(t, string(data), `"^model.layers.0.self_attn.q_proj": 2`)
}

func TestDefaultInitLeavesOutputUnchanged(t *testing.T) {
	base := tinyBase(t)
	m, err := Wrap(base, &Config{R: 8, LoraAlpha: 16})
	require.NoError(t, err) // default targets for llama: q_proj, v_proj
	defer nn.FreeParams(m)
	require.Len(t, loraPaths(m), 4)
	s := tensor.NoGradScope()
	defer s.Close()
	for _, p := range loraPaths(m) {
		mod, _ := nn.Get(m, p)
		l := mod.(*Linear)
		a := s.Float32s(l.lin(l.A, "default").Weight.T())
		bound := 1 / math.Sqrt(64)
		var mx float64
		for _, v := range a {
			mx = math.Max(mx, math.Abs(float64(v)))
		}
		require.LessOrEqual(t, mx, bound, "kaiming-uniform A within ±1/√in")
		require.Greater(t, mx, bound/2)
		for _, v := range s.Float32s(l.lin(l.B, "default").Weight.T()) {
			require.Zero(t, v)
		}
	}
}

func TestGaussianInit(t *testing.T) {
	tensor.ManualSeed(3)
	m, err := Wrap(tinyBase(t), &Config{R: 4, TargetModules: List("gate_proj"), InitLoraWeights: Init{Value: "gaussian"}})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	s := tensor.NoGradScope()
	defer s.Close()
	var vals []float32
	for _, p := range loraPaths(m) {
		mod, _ := nn.Get(m, p)
		l := mod.(*Linear)
		vals = append(vals, s.Float32s(l.lin(l.A, "default").Weight.T())...)
	}
	var sum, sq float64
	for _, v := range vals {
		sum += float64(v)
		sq += float64(v) * float64(v)
	}
	n := float64(len(vals)) // 2 layers × 4 × 64
	std := math.Sqrt(sq/n - (sum/n)*(sum/n))
	require.InDelta(t, 0.25, std, 0.03, "std = 1/r")
}

// lowRank builds a tiny module tree around one base layer.
type holder struct {
	L nn.Layer `nn:"proj"`
}

// Conv1D (GPT-2): weights [in, out]; LoRA runs B(A(x)), merge adds (BA)ᵀ·s.
func TestConv1DLoRA(t *testing.T) {
	s := tensor.NoGradScope()
	defer s.Close()
	in, out := int64(3), int64(2)
	w := []float32{1, 2, 3, 4, 5, 6} // [in=3, out=2]
	bias := []float32{0.5, -0.5}
	conv := &nn.Conv1D{Weight: nn.NewParam(s.Keep(s.FromFloat32(w, in, out))), Bias: nn.NewParam(s.Keep(s.FromFloat32(bias, out)))}
	h := &holder{L: conv}
	cfg := &Config{R: 1, LoraAlpha: 2, TargetModules: List("proj")}
	require.NoError(t, cfg.Inject(h, "default"))
	require.True(t, cfg.FanInFanOut, "PEFT forces fan_in_fan_out for Conv1D")
	l := h.L.(*Linear)
	a := []float32{1, 0, -1} // [r=1, in=3]
	b := []float32{2, 3}     // [out=2, r=1]
	l.lin(l.A, "default").Weight.Set(s.Keep(s.FromFloat32(a, 1, in)))
	l.lin(l.B, "default").Weight.Set(s.Keep(s.FromFloat32(b, out, 1)))
	l.SetActive([]string{"default"})
	x := []float32{1, 1, 2}
	got := s.Float32s(l.Forward(s, s.FromFloat32(x, 1, in)))
	// base: x·W + b = [1+3+10, 2+4+12] + b; lora: (a·x = 1-2 = -1) · b · s(2)
	want := []float32{14 + 0.5 + (-1)*2*2, 18 - 0.5 + (-1)*3*2}
	require.InDeltaSlice(t, want, got, 1e-6)
	require.NoError(t, l.Merge([]string{"default"}, true))
	merged := s.Float32s(conv.Weight.T())
	// W[i][o] += s · b[o]·a[i]
	for i := 0; i < 3; i++ {
		for o := 0; o < 2; o++ {
			require.InDelta(t, float64(w[i*2+o])+2*float64(b[o]*a[i]), float64(merged[i*2+o]), 1e-6)
		}
	}
	require.InDeltaSlice(t, want, s.Float32s(l.Forward(s, s.FromFloat32(x, 1, in))), 1e-5)
	require.NoError(t, l.Unmerge())
	require.InDeltaSlice(t, w, s.Float32s(conv.Weight.T()), 1e-6)
}

func TestEmbeddingLoRA(t *testing.T) {
	base := tinyBase(t)
	m, err := Wrap(base, &Config{R: 2, LoraAlpha: 4, TargetModules: List("embed_tokens")})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	mod, err := nn.Get(m, "base_model.model.model.embed_tokens")
	require.NoError(t, err)
	e := mod.(*Embedding)
	s := tensor.NoGradScope()
	defer s.Close()
	a, _ := e.A.Get("default")
	b, _ := e.B.Get("default")
	require.Equal(t, []int64{2, 512}, a.Shape())
	require.Equal(t, []int64{64, 2}, b.Shape())
	for _, v := range s.Float32s(a.T()) {
		require.Zero(t, v, "PEFT zeroes lora_embedding_A")
	}
	av := make([]float32, 2*512)
	for i := range av {
		av[i] = float32(i%7) * 0.01
	}
	a.Set(s.Keep(s.FromFloat32(av, 2, 512)))
	bv := s.Float32s(b.T())
	table := s.Float32s(e.Base.Weight.T())
	ids := []int64{5, 300}
	got := s.Float32s(e.Forward(s, s.FromInt64(ids, 1, 2)))
	for k, id := range ids {
		for d := 0; d < 64; d++ {
			want := float64(table[int(id)*64+d])
			for r := 0; r < 2; r++ {
				want += 2 * float64(av[r*512+int(id)]) * float64(bv[d*2+r]) // scaling 4/2
			}
			require.InDelta(t, want, float64(got[k*64+d]), 1e-5)
		}
	}
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	state, err := m.AdapterStateDict("default")
	require.NoError(t, err)
	require.Equal(t, "base_model.model.model.embed_tokens.lora_embedding_A", state[0].Name)
	require.Equal(t, "base_model.model.model.embed_tokens.lora_embedding_B", state[1].Name)
	require.NoError(t, m.Merge(false))
	require.InDeltaSlice(t, got, s.Float32s(e.Forward(s, s.FromInt64(ids, 1, 2))), 1e-5)
}

func TestDropoutOnlyInTraining(t *testing.T) {
	m, err := Wrap(tinyBase(t), &Config{R: 4, LoraAlpha: 8, LoraDropout: 0.5, TargetModules: List("q_proj"), InitLoraWeights: Init{Value: "false"}})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	mod, _ := nn.Get(m, "base_model.model.model.layers.0.self_attn.q_proj")
	l := mod.(*Linear)
	s := tensor.NoGradScope()
	defer s.Close()
	x := s.Ones(tensor.Float32, 1, 64)
	eval1 := s.Float32s(l.Forward(s, x))
	eval2 := s.Float32s(l.Forward(s, x))
	require.Equal(t, eval1, eval2)
	nn.SetTraining(m, true)
	tensor.ManualSeed(1)
	train := s.Float32s(l.Forward(s, x))
	require.NotEqual(t, eval1, train)
	nn.SetTraining(m, false)
	require.Equal(t, eval1, s.Float32s(l.Forward(s, x)))
}
