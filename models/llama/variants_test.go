package llama_test

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"

	"github.com/gopeft/peft/lora"
)

func hf(t testing.TB, parts ...string) string {
	p, err := filepath.Abs(filepath.Join(append([]string{"..", "..", "testdata", "hf"}, parts...)...))
	require.NoError(t, err)
	_, err = os.Stat(p)
	require.NoError(t, err)
	return p
}

func diff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

type ref struct{ set *safetensors.Set }

func (r ref) f32(t testing.TB, k string) []float32 {
	b, err := r.set.Data(k)
	require.NoError(t, err, k)
	return safetensors.Float32s(b)
}

func (r ref) i64(t testing.TB, k string) ([]int64, []int64) {
	info, _, ok := r.set.Info(k)
	require.True(t, ok, k)
	b, _ := r.set.Data(k)
	return safetensors.Int64s(b), info.Shape
}

type forwarder interface {
	ForwardT(*tensor.Scope, *models.Batch) *models.Output
}

// logits runs the reference inputs: the padded batch at default positions,
// and the far positions (all ones mask).
func logits(t testing.TB, m forwarder, r ref, far bool) []float32 {
	ids, shape := r.i64(t, "input_ids")
	s := tensor.NoGradScope()
	defer s.Close()
	b := &models.Batch{InputIDs: s.FromInt64(ids, shape...)}
	if far {
		pos, _ := r.i64(t, "position_ids_far")
		b.PositionIDs = s.FromInt64(pos, shape...)
	} else {
		mask, _ := r.i64(t, "attention_mask")
		b.AttentionMask = s.FromInt64(mask, shape...)
	}
	out := m.ForwardT(s, b)
	require.NoError(t, s.Err())
	return s.Float32s(out.Logits)
}

// Qwen3 (q_norm/k_norm, explicit head_dim, yarn) and Phi-3 (fused
// qkv_proj/gate_up_proj, longrope, partial rotary 0.75, tied head) against
// the independent plain-torch reference (testdata/reference/
// decoders_reference.py): base, LoRA-adapted and merged logits.
func TestVariantsMatchReference(t *testing.T) {
	for _, c := range []struct{ name, typ, class string }{
		{"qwen3-tiny", "qwen3", "Qwen3ForCausalLM"},
		{"phi3-tiny", "phi3", "Phi3ForCausalLM"},
	} {
		t.Run(c.name, func(t *testing.T) {
			set, err := safetensors.OpenFiles(hf(t, "expected", c.name+"__ref.safetensors"))
			require.NoError(t, err)
			defer set.Close()
			r := ref{set}
			base, err := llama.Load(hf(t, c.name))
			require.NoError(t, err)
			require.Equal(t, c.typ, base.ModelType())
			require.Equal(t, c.class, base.TypeName())
			for _, far := range []bool{false, true} {
				key := map[bool]string{false: "logits", true: "logits_far"}[far]
				d := diff(logits(t, base, r, far), r.f32(t, key))
				t.Logf("%s: max abs diff %.3g", key, d)
				require.LessOrEqual(t, d, 1e-4, key)
			}

			pm, err := peft.Load(base, hf(t, "adapters", c.name, "lora"))
			require.NoError(t, err)
			require.Greater(t, diff(r.f32(t, "logits_lora"), r.f32(t, "logits")), 1e-2) // the adapter matters
			for _, far := range []bool{false, true} {
				key := map[bool]string{false: "logits_lora", true: "logits_far_lora"}[far]
				d := diff(logits(t, pm, r, far), r.f32(t, key))
				t.Logf("%s: max abs diff %.3g", key, d)
				require.LessOrEqual(t, d, 1e-4, key)
			}
			merged, err := pm.MergeAndUnload()
			require.NoError(t, err)
			defer nn.FreeParams(merged)
			mf := merged.(forwarder)
			require.LessOrEqual(t, diff(logits(t, mf, r, false), r.f32(t, "logits_lora")), 1e-4, "merged")
			require.LessOrEqual(t, diff(logits(t, mf, r, true), r.f32(t, "logits_far_lora")), 1e-4, "merged, far")
		})
	}
}

// Decoding with the KV cache gives the full forward's logits, also where
// longrope switches to its long factors (positions from 100).
func TestVariantsKVCacheMatchesFullForward(t *testing.T) {
	for _, name := range []string{"qwen3-tiny", "phi3-tiny"} {
		t.Run(name, func(t *testing.T) {
			set, err := safetensors.OpenFiles(hf(t, "expected", name+"__ref.safetensors"))
			require.NoError(t, err)
			defer set.Close()
			r := ref{set}
			m, err := llama.Load(hf(t, name))
			require.NoError(t, err)
			defer m.Free()
			ids, shape := r.i64(t, "input_ids")
			pos, _ := r.i64(t, "position_ids_far")
			want := r.f32(t, "logits_far")
			B, L := shape[0], shape[1]
			V := int64(len(want)) / (B * L)
			s := tensor.NoGradScope()
			defer s.Close()
			cut := int64(6)
			slice := func(v []int64, from, n int64) []int64 {
				var out []int64
				for b := int64(0); b < B; b++ {
					out = append(out, v[b*L+from:b*L+from+n]...)
				}
				return out
			}
			out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(slice(ids, 0, cut), B, cut),
				PositionIDs: s.FromInt64(slice(pos, 0, cut), B, cut), UseCache: true})
			require.NoError(t, s.Err())
			cache := out.PastKeyValues
			defer cache.Free()
			for j := cut; j < L; j++ {
				out = m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(slice(ids, j, 1), B, 1),
					PositionIDs: s.FromInt64(slice(pos, j, 1), B, 1), PastKeyValues: cache, UseCache: true})
				require.NoError(t, s.Err())
				got := s.Float32s(out.Logits)
				for b := int64(0); b < B; b++ {
					w := want[(b*L+j)*V : (b*L+j+1)*V]
					require.LessOrEqual(t, diff(got[b*V:(b+1)*V], w), 1e-4, "row %d position %d", b, j)
				}
			}
		})
	}
}

// Save writes a folder transformers reads (the class, the rope block and
// the fused names survive), and it loads back in bfloat16 and float32.
func TestVariantsSaveLoad(t *testing.T) {
	for _, name := range []string{"qwen3-tiny", "phi3-tiny"} {
		t.Run(name, func(t *testing.T) {
			m, err := llama.Load(hf(t, name))
			require.NoError(t, err)
			defer m.Free()
			dir := t.TempDir()
			require.NoError(t, m.Save(dir))
			cfg, err := llama.LoadConfig(dir)
			require.NoError(t, err)
			require.Equal(t, m.Config.ModelType, cfg.ModelType)
			require.NotNil(t, cfg.Raw["rope_scaling"])
			a, err := safetensors.OpenDir(hf(t, name))
			require.NoError(t, err)
			defer a.Close()
			b, err := safetensors.OpenDir(dir)
			require.NoError(t, err)
			defer b.Close()
			require.Equal(t, a.Names(), b.Names())
			for _, dt := range []string{"bfloat16", "float32"} {
				m2, err := llama.Load(dir, models.WithDType(dt))
				require.NoError(t, err, dt)
				require.Equal(t, map[string]tensor.DType{"bfloat16": tensor.BFloat16, "float32": tensor.Float32}[dt], m2.DType())
				m2.Free()
			}
		})
	}
}

// A LoRA training step on the fused Phi-3 projections and on Qwen3: the
// adapters get gradients and an SGD step lowers the loss.
func TestVariantsLoRATrainStep(t *testing.T) {
	for _, c := range []struct {
		name    string
		targets []string
	}{{"qwen3-tiny", nil}, {"phi3-tiny", []string{"qkv_proj", "gate_up_proj"}}} {
		t.Run(c.name, func(t *testing.T) {
			base, err := llama.Load(hf(t, c.name))
			require.NoError(t, err)
			cfg := &lora.Config{R: 4, LoraAlpha: 8}
			if c.targets != nil {
				cfg.TargetModules = lora.List(c.targets...)
			}
			m, err := lora.Wrap(base, cfg)
			require.NoError(t, err)
			defer nn.FreeParams(m)
			params := m.TrainableParams()
			require.Len(t, params, 2*2*2) // 2 layers × 2 targets × (A, B)
			set, err := safetensors.OpenFiles(hf(t, "expected", c.name+"__ref.safetensors"))
			require.NoError(t, err)
			defer set.Close()
			ids, shape := ref{set}.i64(t, "input_ids")
			s := tensor.NewScope()
			defer s.Close()
			loss := func() *tensor.T {
				out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...), Labels: s.FromInt64(ids, shape...)})
				require.NoError(t, s.Err())
				return out.Loss
			}
			l0 := loss()
			before := s.Item(l0)
			s.Backward(l0)
			ng := tensor.NoGradScope()
			for _, np := range params {
				g := ng.Grad(np.Param.T())
				require.NotNil(t, g, np.Name)
				ng.CopyInto(np.Param.T(), ng.Sub(np.Param.T(), ng.MulScalar(g, 0.5)))
			}
			require.NoError(t, ng.Err())
			ng.Close()
			after := s.Item(loss())
			require.Less(t, after, before)
		})
	}
}

// Phi-3's sliding window (config.json's sliding_window, as Mistral's)
// masks the keys w or more positions back, in the full forward and when
// decoding with the cache.
func TestPhi3SlidingWindow(t *testing.T) {
	set, err := safetensors.OpenFiles(hf(t, "expected", "phi3-tiny__ref.safetensors"))
	require.NoError(t, err)
	defer set.Close()
	r := ref{set}
	m, err := llama.Load(hf(t, "phi3-tiny"))
	require.NoError(t, err)
	defer m.Free()
	m.Config.SlidingWindow = 4
	require.Greater(t, diff(r.f32(t, "logits_window4"), r.f32(t, "logits")), 1e-3) // the window matters
	require.LessOrEqual(t, diff(logits(t, m, r, false), r.f32(t, "logits_window4")), 1e-4)
	require.LessOrEqual(t, diff(logits(t, m, r, true), r.f32(t, "logits_far_window4")), 1e-4)

	ids, shape := r.i64(t, "input_ids")
	pos, _ := r.i64(t, "position_ids_far")
	want := r.f32(t, "logits_far_window4")
	B, L := shape[0], shape[1]
	V := int64(len(want)) / (B * L)
	s := tensor.NoGradScope()
	defer s.Close()
	var cache *models.Cache
	for j := int64(0); j < L; j++ { // one token at a time
		col := func(v []int64) []int64 { return []int64{v[j], v[L+j]} }
		out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(col(ids), B, 1), PositionIDs: s.FromInt64(col(pos), B, 1),
			PastKeyValues: cache, UseCache: true})
		require.NoError(t, s.Err())
		cache = out.PastKeyValues
		got := s.Float32s(out.Logits)
		for b := int64(0); b < B; b++ {
			require.LessOrEqual(t, diff(got[b*V:(b+1)*V], want[(b*L+j)*V:(b*L+j+1)*V]), 1e-4, "row %d position %d", b, j)
		}
	}
	cache.Free()
}
