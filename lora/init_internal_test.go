package lora

import (
	"encoding/json"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/gopeft/peft/nn/quant"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// PEFT's NFQuantizer builds its 4-bit table the way bitsandbytes built its
// NF4 table: the values are the same float32 numbers.
func TestNFTableIsNF4(t *testing.T) {
	require.Equal(t, quant.Codebook(quant.NF4), nfTable(4))
	for _, bits := range []int{2, 8} {
		tb := nfTable(bits)
		require.Len(t, tb, 1<<bits)
		require.Equal(t, float32(-1), tb[0])
		require.Equal(t, float32(1), tb[len(tb)-1])
		require.Equal(t, float32(0), tb[(1<<bits)/2-1], "exact zero; one more positive value than negative")
		for i := 1; i < len(tb); i++ {
			require.Less(t, tb[i-1], tb[i])
		}
	}
}

// nfQuantDequant against a plain-Go NFQuantizer: per block of 64 the
// absmax, x/absmax in float32, the first nearest table value, value·absmax.
func TestNFQuantDequantIndependent(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	// the second size takes several chunks of the nearest-value search
	for _, shape := range [][2]int{{24, 40}, {512, 520}} {
		rows, cols := shape[0], shape[1]
		w := make([]float32, rows*cols)
		for i := range w {
			w[i] = float32(rng.NormFloat64() * 0.02)
		}
		for i := 0; i < 64; i++ {
			w[128+i] = 0 // a block of zeros: NaN codes in PEFT, then code 0
		}
		w[300] = 1e-30 // a tiny outlier
		for _, bits := range []int{2, 4, 8} {
			tb := nfTable(bits)
			want := make([]float32, len(w))
			for b := 0; b < len(w); b += 64 {
				var mx float32
				for _, v := range w[b : b+64] {
					mx = max(mx, float32(math.Abs(float64(v))))
				}
				for i, v := range w[b : b+64] {
					x := v / mx
					best, bi := float32(math.Inf(1)), 0
					if x != x { // NaN: torch.argmin returns the first NaN's index
						best = 0
					}
					for j, c := range tb {
						if d := float32(math.Abs(float64(x - c))); d < best {
							best, bi = d, j
						}
					}
					want[b+i] = tb[bi] * mx
				}
			}
			s := tensor.NoGradScope()
			q, err := nfQuantDequant(s, s.FromFloat32(w, int64(rows), int64(cols)), bits)
			require.NoError(t, err)
			got := s.Float32s(q)
			s.Close()
			for i := range want {
				if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
					t.Fatalf("%dx%d bits %d element %d: %v vs %v", rows, cols, bits, i, want[i], got[i])
				}
			}
		}
	}
	s := tensor.NoGradScope()
	defer s.Close()
	_, err := nfQuantDequant(s, s.Zeros(tensor.Float32, 3, 7), 4)
	require.ErrorContains(t, err, "not a multiple of the block size 64")
}

// svdLowRank finds the leading singular triplets of a matrix with a clear
// spectral gap (both orientations), as torch.svd_lowrank does.
func TestSVDLowRank(t *testing.T) {
	for _, shape := range [][2]int64{{48, 30}, {20, 56}} {
		s := tensor.NoGradScope()
		m, n := shape[0], shape[1]
		k := min(m, n)
		u, _ := s.QR(s.Randn(tensor.Float32, m, k))
		v, _ := s.QR(s.Randn(tensor.Float32, n, k))
		sv := make([]float32, k)
		for i := range sv {
			sv[i] = float32(10 * math.Pow(0.5, float64(i)))
		}
		a := s.Matmul(s.Mul(u, s.Unsqueeze(s.FromFloat32(sv, k), 0)), s.Transpose(v, 0, 1))
		lu, ls, lv := svdLowRank(s, a, 4, 6)
		require.Equal(t, []int64{m, 4}, lu.Shape())
		require.Equal(t, []int64{n, 4}, lv.Shape())
		got := s.Float32s(ls)
		for i := 0; i < 4; i++ {
			require.InDelta(t, sv[i], got[i], 1e-3*float64(sv[i]))
		}
		// the rank-4 approximation is the best one
		approx := s.Matmul(s.Mul(lu, s.Unsqueeze(ls, 0)), s.Transpose(lv, 0, 1))
		best := s.Matmul(s.Mul(s.Narrow(u, 1, 0, 4), s.Unsqueeze(s.FromFloat32(sv[:4], 4), 0)), s.Transpose(s.Narrow(v, 1, 0, 4), 0, 1))
		d := s.Float32s(s.Amax(s.Abs(s.Sub(approx, best)), false, 0, 1))
		require.NoError(t, s.Err())
		require.Less(t, d[0], float32(1e-3))
		s.Close()
	}
}

func TestParseInit(t *testing.T) {
	for v, want := range map[string]string{"true": initKaiming, "": initKaiming, "false": initFalse, "gaussian": initGaussian,
		"pissa": initPiSSA, "pissa_niter_4": initPiSSA, "olora": initOLoRA, "OLoRA": initOLoRA, "loftq": initLoftQ} {
		k, _, err := parseInit(v)
		require.NoError(t, err, v)
		require.Equal(t, want, k, v)
	}
	_, n, _ := parseInit("pissa_niter_16")
	require.Equal(t, 16, n)
	for _, v := range []string{"pissa_niter_", "pissa_niter_-1", "pissa_niter_x", "Pissa", "eva", "corda"} {
		_, _, err := parseInit(v)
		require.ErrorContains(t, err, "init_lora_weights", v)
	}
}

// svdLowRank is torch 1.13's svd_lowrank: after the same seed it draws the
// same Gaussian start and returns torch's U, S, V (testdata/reference/
// svd_lowrank_reference.py made the goldens with Debian's python3-torch).
func TestSVDLowRankMatchesTorch(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "reference", "svd_lowrank_golden.json"))
	require.NoError(t, err)
	var g struct {
		Cases []struct {
			M, N, Q, Niter int64
			Seed           int64
			W, U, S, V     []float32
		}
	}
	require.NoError(t, json.Unmarshal(raw, &g))
	require.Len(t, g.Cases, 5)
	for _, c := range g.Cases {
		s := tensor.NoGradScope()
		peft.SetSeed(c.Seed)
		u, sv, v := svdLowRank(s, s.FromFloat32(c.W, c.M, c.N), c.Q, int(c.Niter))
		// singular vectors' signs are LAPACK's: compare S and U·diag(S)·Vᵀ
		rec := func(u, sv, v *tensor.T) []float32 {
			return s.Float32s(s.Matmul(s.Mul(u, s.Unsqueeze(sv, 0)), s.Transpose(v, 0, 1)))
		}
		got := [][]float32{s.Float32s(sv), rec(u, sv, v)}
		want := [][]float32{c.S, rec(s.FromFloat32(c.U, c.M, c.Q), s.FromFloat32(c.S, c.Q), s.FromFloat32(c.V, c.N, c.Q))}
		require.NoError(t, s.Err())
		s.Close()
		for i := range want {
			var d float64
			require.Len(t, got[i], len(want[i]))
			for j := range want[i] {
				d = math.Max(d, math.Abs(float64(want[i][j]-got[i][j])))
			}
			require.LessOrEqual(t, d, 1e-5, "case %dx%d q %d niter %d, output %d", c.M, c.N, c.Q, c.Niter, i)
		}
	}
}

// linspace32 and the NF tables are torch's and PEFT's to the bit
// (testdata/reference/nf_table_reference.py: torch 1.13's linspace, scipy's
// normal quantiles).
func TestNFTablesMatchTorch(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "reference", "nf_table_golden.json"))
	require.NoError(t, err)
	var g struct {
		Linspace map[string][]uint32
		Tables   map[string][]uint32
	}
	require.NoError(t, json.Unmarshal(raw, &g))
	require.Len(t, g.Linspace, 14)
	bitsOf := func(v []float32) []uint32 {
		out := make([]uint32, len(v))
		for i, x := range v {
			out[i] = math.Float32bits(x)
		}
		return out
	}
	for n, want := range g.Linspace {
		steps, err := strconv.Atoi(n)
		require.NoError(t, err)
		require.Equal(t, want, bitsOf(linspace32(nfOffset, 0.5, steps)), "linspace of %d", steps)
	}
	require.Len(t, g.Tables, 3)
	for b, want := range g.Tables {
		bits, err := strconv.Atoi(b)
		require.NoError(t, err)
		require.Equal(t, want, bitsOf(nfTable(bits)), "%d-bit table", bits)
	}
}
