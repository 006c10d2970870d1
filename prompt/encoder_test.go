package prompt_test

import (
	"math"
	"strings"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prompt"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// mat is a row-major float64 matrix for the reference computations.
type mat struct {
	r, c int
	v    []float64
}

func (a mat) at(i, j int) float64 { return a.v[i*a.c+j] }

// linear is x Wᵀ + b.
func linear(x, w mat, b []float64) mat {
	out := mat{x.r, w.r, make([]float64, x.r*w.r)}
	for i := 0; i < x.r; i++ {
		for o := 0; o < w.r; o++ {
			sum := b[o]
			for k := 0; k < x.c; k++ {
				sum += x.at(i, k) * w.at(o, k)
			}
			out.v[i*out.c+o] = sum
		}
	}
	return out
}

func relu(a mat) mat {
	out := mat{a.r, a.c, make([]float64, len(a.v))}
	for i, x := range a.v {
		out.v[i] = math.Max(x, 0)
	}
	return out
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// lstmDir runs one direction of an LSTM layer over the rows of x
// (torch.nn.LSTM's equations, gates i, f, g, o).
func lstmDir(x, wih, whh mat, bih, bhh []float64, reverse bool) mat {
	h := whh.c
	out := mat{x.r, h, make([]float64, x.r*h)}
	hs, cs := make([]float64, h), make([]float64, h)
	for n := 0; n < x.r; n++ {
		t := n
		if reverse {
			t = x.r - 1 - n
		}
		g := make([]float64, 4*h)
		for o := range g {
			sum := bih[o] + bhh[o]
			for k := 0; k < x.c; k++ {
				sum += wih.at(o, k) * x.at(t, k)
			}
			for k := 0; k < h; k++ {
				sum += whh.at(o, k) * hs[k]
			}
			g[o] = sum
		}
		for j := 0; j < h; j++ {
			i, f, c, o := sigmoid(g[j]), sigmoid(g[h+j]), math.Tanh(g[2*h+j]), sigmoid(g[3*h+j])
			cs[j] = f*cs[j] + i*c
			hs[j] = o * math.Tanh(cs[j])
			out.v[t*h+j] = hs[j]
		}
	}
	return out
}

func concatCols(a, b mat) mat {
	out := mat{a.r, a.c + b.c, make([]float64, a.r*(a.c+b.c))}
	for i := 0; i < a.r; i++ {
		copy(out.v[i*out.c:], a.v[i*a.c:(i+1)*a.c])
		copy(out.v[i*out.c+a.c:], b.v[i*b.c:(i+1)*b.c])
	}
	return out
}

// The P-tuning encoders (MLP; 2-layer bidirectional LSTM + MLP) compute
// what PyTorch's modules compute, checked against a float64 reference
// written from torch.nn.LSTM's documented equations.
func TestEncoderMatchesReference(t *testing.T) {
	for _, kind := range []string{prompt.MLP, prompt.LSTM} {
		t.Run(kind, func(t *testing.T) {
			cfg := &prompt.EncoderConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 5},
				EncoderReparameterizationType: kind, EncoderHiddenSize: 12}
			tensor.ManualSeed(7)
			m, err := peft.New(loadBase(t), cfg)
			require.NoError(t, err)
			defer nn.FreeParams(m)

			s := tensor.NoGradScope()
			defer s.Close()
			p := map[string]mat{}
			vec := map[string][]float64{}
			for _, np := range nn.NamedParams(m.PromptEncoder) {
				name := strings.TrimPrefix(np.Name, "default.")
				sh := np.Param.Shape()
				f := s.Float32s(np.Param.T())
				v := make([]float64, len(f))
				for i, x := range f {
					v[i] = float64(x)
				}
				vec[name] = v
				if len(sh) == 2 {
					p[name] = mat{int(sh[0]), int(sh[1]), v}
				}
			}
			x := p["embedding.weight"]
			if kind == prompt.LSTM {
				for l := 0; l < 2; l++ {
					w := func(n string) (mat, mat, []float64, []float64) {
						return p["lstm_head.weight_ih_l"+n], p["lstm_head.weight_hh_l"+n], vec["lstm_head.bias_ih_l"+n], vec["lstm_head.bias_hh_l"+n]
					}
					n := string(rune('0' + l))
					wih, whh, bih, bhh := w(n)
					fw := lstmDir(x, wih, whh, bih, bhh, false)
					wih, whh, bih, bhh = w(n + "_reverse")
					bw := lstmDir(x, wih, whh, bih, bhh, true)
					x = concatCols(fw, bw)
				}
				x = relu(linear(x, p["mlp_head.0.weight"], vec["mlp_head.0.bias"]))
				x = linear(x, p["mlp_head.2.weight"], vec["mlp_head.2.bias"])
			} else {
				x = relu(linear(x, p["mlp_head.0.weight"], vec["mlp_head.0.bias"]))
				x = relu(linear(x, p["mlp_head.2.weight"], vec["mlp_head.2.bias"]))
				x = linear(x, p["mlp_head.4.weight"], vec["mlp_head.4.bias"])
			}
			state, err := m.AdapterStateDict(peft.DefaultAdapter)
			require.NoError(t, err)
			defer state[0].Param.Free() // computed: the caller owns it
			require.Equal(t, []int64{5, 64}, state[0].Param.Shape())
			got := s.Float32s(state[0].Param.T())
			var d float64
			for i := range got {
				d = math.Max(d, math.Abs(float64(got[i])-x.v[i]))
			}
			t.Logf("max abs diff against the float64 reference: %.3g", d)
			require.Less(t, d, 1e-5)
		})
	}
}

// PyTorch's default initialisation: Embedding N(0,1), Linear and LSTM
// uniform within ±1/√fan_in and ±1/√hidden.
func TestEncoderInitialisation(t *testing.T) {
	cfg := &prompt.EncoderConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 20},
		EncoderReparameterizationType: prompt.LSTM, EncoderHiddenSize: 16}
	m, err := peft.New(loadBase(t), cfg)
	require.NoError(t, err)
	defer nn.FreeParams(m)
	s := tensor.NoGradScope()
	defer s.Close()
	for _, np := range nn.NamedParams(m.PromptEncoder) {
		v := s.Float32s(np.Param.T())
		var mx float64
		for _, x := range v {
			mx = math.Max(mx, math.Abs(float64(x)))
		}
		switch {
		case strings.Contains(np.Name, "embedding"):
			require.Greater(t, mx, 2.0, "N(0,1) over 1,280 values reaches past 2")
		case strings.Contains(np.Name, "lstm_head"):
			require.LessOrEqual(t, mx, 1/math.Sqrt(16))
		case strings.Contains(np.Name, "mlp_head.0"):
			require.LessOrEqual(t, mx, 1/math.Sqrt(32))
			require.Greater(t, mx, 0.5/math.Sqrt(32))
		case strings.Contains(np.Name, "mlp_head.2"):
			require.LessOrEqual(t, mx, 1/math.Sqrt(32))
		}
	}
	require.Equal(t, 16, cfg.EncoderHiddenSize)
	require.Equal(t, 2, cfg.EncoderNumLayers, "PEFT's default")
}

// encoder_dropout acts between the LSTM layers in training mode only.
func TestLSTMDropout(t *testing.T) {
	cfg := &prompt.EncoderConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 6},
		EncoderReparameterizationType: prompt.LSTM, EncoderHiddenSize: 16, EncoderDropout: 0.5}
	m, err := peft.New(loadBase(t), cfg)
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.Contains(t, nn.Format(m), "dropout=0.5")
	out := func() []float32 {
		state, err := m.AdapterStateDict(peft.DefaultAdapter)
		require.NoError(t, err)
		defer state[0].Param.Free()
		s := tensor.NoGradScope()
		defer s.Close()
		return s.Float32s(state[0].Param.T())
	}
	require.Equal(t, out(), out(), "eval mode: deterministic")
	nn.SetTraining(m, true)
	require.NotEqual(t, out(), out(), "training: dropout between layers")
}
