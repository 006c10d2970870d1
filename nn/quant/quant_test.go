package quant_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/nn/quant"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// ---- the independent computation ---------------------------------------------

// refBlockwise is blockwise quantization written out element by element in
// float32: absmax per block, scaled = clamp(x·(1/absmax)), the nearest code
// (first on ties). Explicit float32 conversions keep Go from fusing ops.
func refBlockwise(x, code []float32, bs int) (idx []int, absmax []float32) {
	n := len(x)
	blocks := (n + bs - 1) / bs
	absmax = make([]float32, blocks)
	idx = make([]int, n)
	for b := 0; b < blocks; b++ {
		lo, hi := b*bs, min((b+1)*bs, n)
		var am float32
		for _, v := range x[lo:hi] {
			am = max(am, float32(math.Abs(float64(v))))
		}
		absmax[b] = am
		var inv float32
		if am != 0 {
			inv = 1 / am
		}
		for i := lo; i < hi; i++ {
			sc := min(max(float32(x[i]*inv), -1), 1)
			best, bd := 0, float32(math.Inf(1))
			for k, c := range code {
				if d := float32(math.Abs(float64(float32(sc - c)))); d < bd {
					best, bd = k, d
				}
			}
			idx[i] = best
		}
	}
	return idx, absmax
}

// refDequant is code[idx] · absmax of the block, in float32.
func refDequant(idx []int, code, absmax []float32, bs int) []float32 {
	out := make([]float32, len(idx))
	for i, k := range idx {
		out[i] = float32(code[k] * absmax[i/bs])
	}
	return out
}

func randn(rng *rand.Rand, n int, std float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * std)
	}
	return v
}

func newLayer(t *testing.T, w []float32, out, in int64, cfg quant.Config) *quant.Linear {
	t.Helper()
	s := tensor.NoGradScope()
	defer s.Close()
	q, err := quant.NewLinear(s.FromFloat32(w, out, in), nil, cfg)
	require.NoError(t, err)
	require.NoError(t, s.Err())
	return q
}

func dequant(t *testing.T, q *quant.Linear) []float32 {
	t.Helper()
	s := tensor.NoGradScope()
	defer s.Close()
	w := q.Dequantize(s)
	v := s.Float32s(w)
	require.NoError(t, s.Err())
	return v
}

func free(q *quant.Linear) {
	q.Weight.Free()
	q.FreeBuffers()
}

// ---- tests -------------------------------------------------------------------

func TestCodebooks(t *testing.T) {
	nf4 := quant.Codebook(quant.NF4)
	require.Len(t, nf4, 16)
	require.Equal(t, float32(-1), nf4[0])
	require.Equal(t, float32(0), nf4[7])
	require.Equal(t, float32(1), nf4[15])
	require.Equal(t, float32(0.07958029955625534), nf4[8])
	for i := 1; i < 16; i++ {
		require.Less(t, nf4[i-1], nf4[i])
	}
	// FP4: sign bit 3, then exponent/mantissa: 0, 1/192, 2/3, 1, 1/3, 1/2, 1/6, 1/4
	fp4 := quant.Codebook(quant.FP4)
	want := []float64{0, 0.0625 / 12, 8.0 / 12, 1, 4.0 / 12, 0.5, 2.0 / 12, 0.25}
	for i, v := range want {
		require.InDelta(t, v, fp4[i], 1e-7)
		require.InDelta(t, -v, fp4[i+8], 1e-7)
	}

	dyn := quant.DynamicMap()
	require.Len(t, dyn, 256)
	for i := 1; i < 256; i++ {
		require.Less(t, dyn[i-1], dyn[i], "sorted and distinct at %d", i)
	}
	require.Equal(t, float32(1), dyn[255])
	require.Equal(t, float32(0), dyn[127])
	require.InDelta(t, 0.99296875, dyn[254], 1e-7) // last midpoint of linspace(0.1, 1, 65)
	require.InDelta(t, -0.99296875, dyn[0], 1e-7)
	require.InDelta(t, 0.55e-6, dyn[128], 1e-12) // 10⁻⁶ · (0.1+1)/2
}

// The acceptance test: quantize → dequantize of random normal
// weights equals an independent computation of the nearest codebook value
// per element times the block's absmax, for both codebooks, with and
// without double quantization, for whole and partial blocks.
func TestRoundTripMatchesIndependentComputation(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, shape := range [][2]int64{{96, 160}, {7, 37}} {
		n := int(shape[0] * shape[1])
		w := randn(rng, n, 0.02)
		if n > 128 {
			for i := 64; i < 128; i++ { // an all-zero block dequantizes to zeros
				w[i] = 0
			}
		}
		for _, qt := range []quant.Type{quant.NF4, quant.FP4} {
			for _, dq := range []bool{false, true} {
				code := quant.Codebook(qt)
				idx, absmax := refBlockwise(w, code, 64)
				q := newLayer(t, w, shape[0], shape[1], quant.Config{QuantType: qt, UseDoubleQuant: dq})
				if dq {
					// absmax − mean, quantized with the dynamic map in blocks of 256
					off := quant.Offset(q)
					var mean float64
					for _, a := range absmax {
						mean += float64(a)
					}
					mean /= float64(len(absmax))
					require.InEpsilon(t, mean, off, 1e-6)
					centered := make([]float32, len(absmax))
					for i, a := range absmax {
						centered[i] = float32(a - off)
					}
					dyn := quant.DynamicMap()
					qi, nested := refBlockwise(centered, dyn, 256)
					for i, k := range qi {
						absmax[i] = float32(float32(dyn[k]*nested[i/256]) + off)
					}
				}
				got := dequant(t, q)
				want := refDequant(idx, code, absmax, 64)
				require.Equal(t, len(want), len(got))
				for i := range want {
					if want[i] != got[i] {
						t.Fatalf("%v %s dq=%v: element %d: got %g, want %g (code %d)", shape, qt, dq, i, got[i], want[i], idx[i])
					}
				}
				if n > 128 {
					for i := 64; i < 128; i++ {
						require.Zero(t, got[i])
					}
				}
				// PEFT counts a Params4bit as numel · 2 · element size: the packed
				// uint8 [⌈n/2⌉, 1] of 7·37 = 259 weights counts 260
				require.Equal(t, []int64{int64(n+1) / 2, 1}, q.Weight.Shape())
				require.Equal(t, 2*int64((n+1)/2), q.Weight.LogicalNumel())
				free(q)
			}
		}
	}
}

// Element 2j goes to the high nibble, as bitsandbytes packs.
func TestPackedLayout(t *testing.T) {
	w := make([]float32, 64)
	copy(w, []float32{-1, 1, 0, 0.07958029955625534, 0.5626170039176941, -0.09105003625154495})
	q := newLayer(t, w, 1, 64, quant.Config{})
	defer free(q)
	s := tensor.NewScope()
	defer s.Close()
	require.Equal(t, []int64{32, 1}, q.Weight.Shape())
	require.Equal(t, tensor.Uint8, q.Weight.DType())
	b := s.Bytes(q.Weight.T())
	require.Equal(t, []byte{0x0f, 0x78, 0xd6, 0x77}, b[:4]) // (0,15) (7,8) (13,6) (7,7)
	require.Equal(t, int64(64), q.Weight.LogicalNumel())
}

// Packed storage with double quantization stays under 0.57 bytes per
// weight (the benchmark config's MLP shape), 0.5625 without.
func TestStorageBytesPerWeight(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	w := randn(rng, 1376*512, 0.02)
	for _, c := range []struct {
		dq   bool
		want float64
	}{{true, 0.5159}, {false, 0.5625}} {
		q := newLayer(t, w, 1376, 512, quant.Config{UseDoubleQuant: c.dq})
		perWeight := float64(q.StorageBytes()) / float64(len(w))
		t.Logf("double quant %v: %d bytes, %.4f bytes/weight", c.dq, q.StorageBytes(), perWeight)
		require.LessOrEqual(t, perWeight, 0.57)
		require.InDelta(t, c.want, perWeight, 1e-4)
		free(q)
	}
}

func TestForwardIsLinearOfDequantizedWeight(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	s := tensor.NoGradScope()
	defer s.Close()
	w := s.FromFloat32(randn(rng, 48*64, 0.05), 48, 64)
	bias := nn.NewParam(s.Keep(s.FromFloat32(randn(rng, 48, 1), 48)))
	q, err := quant.NewLinear(w, bias, quant.Config{UseDoubleQuant: true})
	require.NoError(t, err)
	defer nn.FreeParams(q)
	x := s.FromFloat32(randn(rng, 3*5*64, 1), 3, 5, 64)
	y := q.Forward(s, x)
	want := s.Linear(x, q.Dequantize(s), bias.T())
	require.NoError(t, s.Err())
	require.Equal(t, []int64{3, 5, 48}, y.Shape())
	require.Equal(t, s.Float32s(want), s.Float32s(y))

	// bfloat16 compute: same values within bf16 rounding, output float32
	qb, err := quant.NewLinear(w, nil, quant.Config{ComputeDType: "bfloat16"})
	require.NoError(t, err)
	defer nn.FreeParams(qb)
	yb := qb.Forward(s, x)
	require.NoError(t, s.Err())
	require.Equal(t, tensor.Float32, yb.DType())
	ref := s.Float32s(s.Linear(x, qb.Dequantize(s), nil))
	got := s.Float32s(yb)
	for i := range ref {
		require.InDelta(t, ref[i], got[i], 0.05+0.02*math.Abs(float64(ref[i])))
	}
}

func TestConfigSelectsAndValidates(t *testing.T) {
	c := quant.Config{}
	require.True(t, c.Selects("model.layers.0.self_attn.q_proj"))
	require.False(t, c.Selects("lm_head"))
	require.True(t, quant.Config{SkipModules: []string{}}.Selects("lm_head"))
	only := quant.Config{Modules: []string{"mlp"}}
	require.True(t, only.Selects("model.layers.1.mlp.up_proj"))
	require.False(t, only.Selects("model.layers.1.self_attn.q_proj"))
	require.True(t, quant.Config{Modules: []string{"layers.0"}}.Selects("model.layers.0.mlp.up_proj"))
	require.False(t, quant.Config{Modules: []string{"layers.0"}}.Selects("model.layers.10.mlp.up_proj"))

	require.ErrorContains(t, quant.Config{QuantType: "int4"}.Validate(), "int4")
	require.ErrorContains(t, quant.Config{BlockSize: 48}.Validate(), "block size 48")
	require.ErrorContains(t, quant.Config{ComputeDType: "float8"}.Validate(), "float8")
	require.NoError(t, quant.Config{QuantType: quant.FP4, BlockSize: 128, ComputeDType: "bf16"}.Validate())
	// float16: either this libtorch runs it, or the error names the dtype
	// up front (CPU builds lack a float16 matmul)
	if err := (quant.Config{ComputeDType: "float16"}).Validate(); err != nil {
		require.ErrorContains(t, err, "compute dtype float16")
		s := tensor.NoGradScope()
		_, err2 := quant.NewLinear(s.Ones(tensor.Float32, 4, 64), nil, quant.Config{ComputeDType: "fp16"})
		s.Close()
		require.ErrorContains(t, err2, "compute dtype float16")
	}

	s := tensor.NoGradScope()
	defer s.Close()
	_, err := quant.NewLinear(s.Zeros(tensor.Float32, 4), nil, quant.Config{})
	require.ErrorContains(t, err, "[out, in]")
	_, err = quant.NewLinear(s.Zeros(tensor.Int64, 4, 4), nil, quant.Config{})
	require.ErrorContains(t, err, "float")
}

// A model quantized in place counts its parameters as PEFT does (the 4-bit
// weights at their logical size), refuses to be saved, and dequantizes back
// to plain Linears.
func TestQuantizeModelAndDequantize(t *testing.T) {
	s := tensor.NoGradScope()
	m := &tiny{
		Embed: nn.NewEmbedding(s, 16, 64, 0.02),
		Proj:  nn.NewLinear(s, 64, 128, true, 0.02),
		Head:  nn.NewLinear(s, 128, 16, false, 0.02),
	}
	require.NoError(t, s.Err())
	s.Close()
	defer nn.FreeParams(m)
	_, total := nn.CountParams(m)
	before := quant.WeightBytes(m)
	require.Equal(t, 4*total, before)
	require.NoError(t, quant.Quantize(m, quant.Config{UseDoubleQuant: true, SkipModules: []string{"head"}, EmbeddingDType: "bfloat16"}))
	require.IsType(t, &quant.Linear{}, m.Proj)
	require.IsType(t, &nn.Linear{}, m.Head)
	_, total2 := nn.CountParams(m)
	require.Equal(t, total, total2)
	require.Len(t, quant.Layers(m), 1)
	require.Less(t, quant.WeightBytes(m), before/2)
	require.Equal(t, "Linear4bit(in_features=64, out_features=128, bias=True)", nn.Format(m.Proj))
	err := nn.SaveState(m, t.TempDir()+"/m.safetensors", nil)
	require.ErrorContains(t, err, "packed")

	require.NoError(t, quant.Dequantize(m))
	require.IsType(t, &nn.Linear{}, m.Proj)
	require.Equal(t, tensor.Float32, m.Embed.(*nn.Embedding).Weight.DType())
	require.Equal(t, before, quant.WeightBytes(m))
	require.NoError(t, nn.SaveState(m, t.TempDir()+"/m.safetensors", nil))
}

type tiny struct {
	Embed nn.Layer `nn:"embed"`
	Proj  nn.Layer `nn:"proj"`
	Head  nn.Layer `nn:"head"`
}
