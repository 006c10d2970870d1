package adapter_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/adapter"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

func fixtures(t testing.TB) string {
	f, err := filepath.Abs(filepath.Join("..", "testdata", "hf"))
	require.NoError(t, err)
	_, err = os.Stat(f)
	require.NoError(t, err, "golden fixtures expected at testdata/hf")
	return f
}

func loadLlama(t testing.TB) *llama.Model {
	m, err := llama.Load(filepath.Join(fixtures(t), "llama-tiny"))
	require.NoError(t, err)
	return m
}

func loadBloom(t testing.TB) *bloom.Model {
	m, err := bloom.Load(filepath.Join(fixtures(t), "bloom-tiny"))
	require.NoError(t, err)
	return m
}

type forwarder interface {
	ForwardT(*tensor.Scope, *models.Batch) *models.Output
}

var ids = []int64{4, 8, 15, 16, 23, 42, 7, 99, 5, 17, 33, 2, 61, 8, 15, 16}

func logits(t testing.TB, m forwarder) []float32 {
	s := tensor.NoGradScope()
	defer s.Close()
	out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, 2, 8)})
	require.NoError(t, s.Err())
	return s.Float32s(out.Logits)
}

func snapshot(t *testing.T, m nn.Module) map[string][]float32 {
	s := tensor.NoGradScope()
	defer s.Close()
	out := map[string][]float32{}
	for _, np := range nn.NamedParams(m) {
		out[np.Name] = append([]float32(nil), s.Float32s(np.Param.T())...)
	}
	return out
}

func trainSteps(t *testing.T, m *peft.Model, steps int, lr float64) (float64, float64) {
	nn.SetTraining(m, true)
	defer nn.SetTraining(m, false)
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: lr})
	defer opt.Free()
	var first, last float64
	for i := 0; i < steps; i++ {
		s := tensor.NewScope()
		x := s.FromInt64(ids, 2, 8)
		out := m.ForwardT(s, &models.Batch{InputIDs: x, Labels: x})
		s.Backward(out.Loss)
		require.NoError(t, s.Err())
		if i == 0 {
			first = s.Item(out.Loss)
		}
		last = s.Item(out.Loss)
		s.Close()
		require.NoError(t, opt.Step())
		require.NoError(t, nn.ZeroGrad(m))
	}
	return first, last
}

// Closed forms: one bottleneck of width k = h/16 has 2·h·k + h + k
// parameters; Houlsby puts two per layer and trains the layer norms
// (RMSNorm: h each; LayerNorm: 2h each), Pfeiffer one per layer.
func TestTrainableCountsFromConfig(t *testing.T) {
	l := loadLlama(t)
	h, L := l.Config.HiddenSize, l.Config.NumHiddenLayers
	k := h / 16
	one := 2*h*k + h + k
	m, err := adapter.Wrap(l, adapter.Houlsby())
	require.NoError(t, err)
	tr, _ := nn.CountParams(m)
	require.Equal(t, L*(2*one+2*h), tr)
	require.EqualValues(t, 2576, tr)

	m, err = adapter.Wrap(loadLlama(t), adapter.Pfeiffer())
	require.NoError(t, err)
	tr, _ = nn.CountParams(m)
	require.Equal(t, L*one, tr)

	b := loadBloom(t)
	hb, Lb := b.Config.HiddenSize, b.Config.NLayer
	oneB := 2*hb*(hb/16) + hb + hb/16
	m, err = adapter.Wrap(b, adapter.Houlsby())
	require.NoError(t, err)
	tr, _ = nn.CountParams(m)
	require.Equal(t, Lb*(2*oneB+2*2*hb), tr)
	require.Contains(t, nn.Format(m), "(adapter_down): Sequential(")

	cfg := adapter.Pfeiffer()
	cfg.ReductionFactor = 8
	cfg.LeaveOut = []int{0}
	m, err = adapter.Wrap(loadBloom(t), cfg)
	require.NoError(t, err)
	tr, _ = nn.CountParams(m)
	require.Equal(t, 2*hb*8+hb+8, tr, "one layer left out, k = 64/8")
}

// Houlsby on both families: the untrained model is exactly the base; a few
// AdamW steps lower the loss and change only adapter weights and the norm
// copies; disabling gives the base back bit for bit; merging is refused
// with peft.ErrNotMergeable; save → load gives the same logits.
func TestHoulsbyTrainSaveLoad(t *testing.T) {
	for _, family := range []string{"llama", "bloom"} {
		t.Run(family, func(t *testing.T) {
			var base models.CausalLM
			if family == "llama" {
				base = loadLlama(t)
			} else {
				base = loadBloom(t)
			}
			want0 := logits(t, base)
			m, err := adapter.Wrap(base, adapter.Houlsby())
			require.NoError(t, err)
			require.Equal(t, want0, logits(t, m), "a new adapter is exactly the identity")
			before := snapshot(t, m)
			first, last := trainSteps(t, m, 10, 0.01)
			t.Logf("%s Houlsby loss %.4f -> %.4f", family, first, last)
			require.Less(t, last, first-0.05)
			after := snapshot(t, m)
			changed := 0
			for name, v := range before {
				trains := strings.Contains(name, ".adapters.default.") || strings.Contains(name, ".modules_to_save.default.")
				if trains {
					require.NotEqual(t, v, after[name], name)
					changed++
				} else {
					require.Equal(t, v, after[name], name)
				}
			}
			require.Greater(t, changed, 0)

			trained := logits(t, m)
			restore := m.DisableAdapters()
			require.Equal(t, want0, logits(t, m))
			restore()
			require.Equal(t, trained, logits(t, m))

			_, err = m.MergeAndUnload()
			require.True(t, errors.Is(err, peft.ErrNotMergeable), "%v", err)
			require.ErrorContains(t, err, "cannot be folded")
			require.Equal(t, trained, logits(t, m), "a refused merge changes nothing")

			dir := t.TempDir()
			require.NoError(t, m.Save(dir))
			var fresh models.CausalLM
			if family == "llama" {
				fresh = loadLlama(t)
			} else {
				fresh = loadBloom(t)
			}
			loaded, err := peft.Load(fresh, dir)
			require.NoError(t, err)
			require.Equal(t, trained, logits(t, loaded))
			dir2 := t.TempDir()
			require.NoError(t, loaded.Save(dir2))
			for _, f := range []string{peft.WeightsName, peft.ConfigName} {
				a, _ := os.ReadFile(filepath.Join(dir, f))
				b, _ := os.ReadFile(filepath.Join(dir2, f))
				require.Equal(t, a, b, f)
			}
			// Unload keeps the trained norm copies, as PEFT's unload keeps
			// modules_to_save; the bottlenecks go
			unloaded, err := loaded.Unload()
			require.NoError(t, err)
			for _, np := range nn.NamedParams(unloaded) {
				require.NotContains(t, np.Name, "adapter_")
			}
		})
	}
}

// Pfeiffer's adapter unloads to the base model exactly.
func TestPfeifferUnload(t *testing.T) {
	base := loadBloom(t)
	want := logits(t, base)
	m, err := adapter.Wrap(base, adapter.Pfeiffer())
	require.NoError(t, err)
	first, last := trainSteps(t, m, 5, 0.01)
	require.Less(t, last, first)
	require.NotEqual(t, want, logits(t, m))
	unloaded, err := m.Unload()
	require.NoError(t, err)
	require.Equal(t, want, logits(t, unloaded))
}

// The saved keys: AdapterHub's tensor names under each wrapped projection,
// and the norm copies under the norms' own names.
func TestSavedKeys(t *testing.T) {
	m, err := adapter.Wrap(loadLlama(t), adapter.Houlsby())
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	set, err := safetensors.OpenFiles(filepath.Join(dir, peft.WeightsName))
	require.NoError(t, err)
	defer set.Close()
	names := set.Names()
	require.Len(t, names, 2*(2*4+2))
	for _, k := range []string{
		"base_model.model.model.layers.0.self_attn.o_proj.adapter_down.0.weight",
		"base_model.model.model.layers.0.self_attn.o_proj.adapter_down.0.bias",
		"base_model.model.model.layers.0.self_attn.o_proj.adapter_up.weight",
		"base_model.model.model.layers.1.mlp.down_proj.adapter_up.bias",
		"base_model.model.model.layers.1.input_layernorm.weight",
		"base_model.model.model.layers.0.post_attention_layernorm.weight",
	} {
		require.Contains(t, names, k)
	}
	info, _, _ := set.Info("base_model.model.model.layers.0.self_attn.o_proj.adapter_down.0.weight")
	require.Equal(t, []int64{4, 64}, info.Shape)
	cfg := readJSON(t, filepath.Join(dir, peft.ConfigName))
	require.Equal(t, "BOTTLENECK", cfg["peft_type"])
	require.Equal(t, []any{"self_attn.o_proj"}, cfg["mh_adapter_modules"])
	require.Equal(t, "swish", cfg["non_linearity"])
}

// y = h + up(act(down(h))) on a wrapped projection, checked by hand.
func TestBottleneckMath(t *testing.T) {
	cfg := adapter.Pfeiffer()
	cfg.ReductionFactor = 32 // k = 2
	m, err := adapter.Wrap(loadLlama(t), cfg)
	require.NoError(t, err)
	s := tensor.NoGradScope()
	defer s.Close()
	mod, err := nn.Get(m.Base(), "model.layers.0.mlp.down_proj")
	require.NoError(t, err)
	layer := mod.(*adapter.Layer)
	b, _ := layer.Bottlenecks.Get("default")
	bn := b.(*adapter.Bottleneck)
	// down: rows e0 and -e1 (bias 0, +1); up: column 0 → e2·2, column 1 → e3
	down := make([]float32, 2*64)
	down[0], down[64+1] = 1, -1
	up := make([]float32, 64*2)
	up[2*2+0], up[3*2+1] = 2, 1
	s.CopyInto(bn.AdapterDown.Linear.Weight.T(), s.FromFloat32(down, 2, 64))
	s.CopyInto(bn.AdapterDown.Linear.Bias.T(), s.FromFloat32([]float32{0, 1}, 2))
	s.CopyInto(bn.AdapterUp.Weight.T(), s.FromFloat32(up, 64, 2))
	x := s.Randn(tensor.Float32, 1, 3, 128)
	h := s.Float32s(layer.Base.Forward(s, x))
	y := s.Float32s(layer.Forward(s, x))
	require.NoError(t, s.Err())
	relu := func(v float32) float32 {
		if v > 0 {
			return v
		}
		return 0
	}
	for r := 0; r < 3; r++ {
		hr := h[r*64 : (r+1)*64]
		want := append([]float32(nil), hr...)
		z0, z1 := relu(hr[0]), relu(-hr[1]+1)
		want[2] += 2 * z0
		want[3] += z1
		require.InDeltaSlice(t, f64(want), f64(y[r*64:(r+1)*64]), 1e-5)
	}
}

func TestErrors(t *testing.T) {
	_, err := adapter.Wrap(loadLlama(t), &adapter.Config{})
	require.ErrorContains(t, err, "neither \"mh_adapter\" nor \"output_adapter\"")
	c := adapter.Pfeiffer()
	c.NonLinearity = "softplus"
	_, err = adapter.Wrap(loadLlama(t), c)
	require.ErrorContains(t, err, `"softplus" is not supported`)
	c = adapter.Pfeiffer()
	c.ReductionFactor = -1
	_, err = adapter.Wrap(loadLlama(t), c)
	require.ErrorContains(t, err, "reduction_factor")
	c = adapter.Pfeiffer()
	c.OutputAdapterModules = []string{"fc2"}
	_, err = adapter.Wrap(loadLlama(t), c)
	require.ErrorContains(t, err, "matched no module")
	c = adapter.Pfeiffer()
	c.OutputAdapterModules = []string{"post_attention_layernorm"}
	_, err = adapter.Wrap(loadLlama(t), c)
	require.ErrorContains(t, err, "adapters wrap Linear and Conv1D")
	_, err = adapter.Decode([]byte(`{"peft_type":"BOTTLENECK","output_adapter":true,"is_parallel":true}`))
	require.ErrorContains(t, err, `"is_parallel"`)
	_, err = adapter.Decode([]byte(`{"peft_type":"BOTTLENECK","output_adapter":true,"scaling":"learned"}`))
	require.ErrorContains(t, err, `"scaling"`)
	// a second adapter with another name works; the same name twice does not
	m, err := adapter.Wrap(loadLlama(t), adapter.Houlsby())
	require.NoError(t, err)
	require.NoError(t, m.AddAdapter("other", adapter.Pfeiffer()))
	require.NoError(t, m.SetAdapter("other"))
	tr, _ := nn.CountParams(m)
	require.EqualValues(t, 2*(2*64*4+64+4), tr)
	require.NoError(t, m.DeleteAdapter("default"))
	require.Equal(t, []string{"other"}, m.Adapters())
}

// "bert" initialisation (AdapterHub's default) is near, not exactly, the
// identity; "houlsby" stays within its truncation bound.
func TestInitModes(t *testing.T) {
	base := loadBloom(t)
	want := logits(t, base)
	c := adapter.Houlsby()
	c.InitWeights = "bert"
	m, err := adapter.Wrap(base, c)
	require.NoError(t, err)
	got := logits(t, m)
	require.NotEqual(t, want, got)
	require.InDeltaSlice(t, f64(want), f64(got), 0.05)

	c = adapter.Pfeiffer()
	c.InitWeights = "houlsby"
	m, err = adapter.Wrap(loadBloom(t), c)
	require.NoError(t, err)
	s := tensor.NoGradScope()
	defer s.Close()
	for _, np := range m.TrainableParams() {
		for _, v := range s.Float32s(np.Param.T()) {
			require.LessOrEqual(t, v, float32(0.02))
			require.GreaterOrEqual(t, v, float32(-0.02))
		}
	}
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
