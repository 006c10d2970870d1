package boft

import (
	"math"
	"testing"

	"github.com/gopeft/peft/internal/orth/orthtest"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// PEFT's block_butterfly_perm(8, 2, 1, 1): runs of 1 in groups of 4, even
// runs first.
func TestButterflyPermSmall(t *testing.T) {
	p, err := butterflyPerm(8, 2, 1, 1)
	require.NoError(t, err)
	require.Equal(t, []int64{0, 2, 1, 3, 4, 6, 5, 7}, p)
	p, err = butterflyPerm(16, 2, 2, 2)
	require.NoError(t, err)
	require.Equal(t, []int64{0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15}, p)
	p, err = butterflyPerm(16, 4, 2, 2) // the first factor: the identity
	require.NoError(t, err)
	require.Nil(t, p)
}

// The butterfly product for 2, 3 and 4 factors against a plain float64
// computation written from PEFT's code with explicit matrices (Gauss-Jordan
// inverse for the Cayley transform, permutation matrices P with
// P[i, perm[i]] = 1, M = P B Pᵀ, R = M_last ⋯ M₀): the merged weight
// W Rᵀ ⊙ s, and the structure: each row of R mixes block_size·2^(factors-1)
// inputs. The forward (input rotated) agrees with the merged weight.
func TestButterflyProductFloat64(t *testing.T) {
	e := testutil.OpenExpected(t, "llama-tiny__boft")
	for _, tc := range []struct{ size, factors int }{{4, 2}, {4, 3}, {2, 4}, {8, 2}} {
		cfg := NewConfig()
		cfg.BoftBlockSize, cfg.BoftNButterflyFactor = tc.size, tc.factors
		cfg.TargetModules = List("q_proj")
		cfg.InitWeights = new(bool)
		m, err := Wrap(orthtest.LoadLlama(t), cfg)
		require.NoError(t, err)
		var layer *Linear
		for _, at := range peft.Tuners(m.Base()) {
			if at.Path == "model.layers.0.self_attn.q_proj" {
				layer = at.Tuner.(*Linear)
			}
		}
		require.NotNil(t, layer)
		rp, _ := layer.R.Get(peft.DefaultAdapter)
		sp, _ := layer.S.Get(peft.DefaultAdapter)
		s := tensor.NoGradScope()
		blocks := s.Float32s(rp.T())
		scale := s.Float32s(sp.T())
		w0 := s.Float32s(layer.linear().Weight.T())
		require.NoError(t, s.Err())
		s.Close()
		in, out := layer.inFeatures(), layer.outFeatures()
		bs := int64(tc.size)
		bn := in / bs

		r := referenceButterfly(blocks, int(in), int(bn), int(bs), tc.factors)
		// structure: nonzeros per row
		for i := 0; i < int(in); i++ {
			nz := 0
			for j := 0; j < int(in); j++ {
				if math.Abs(r[i][j]) > 1e-12 {
					nz++
				}
			}
			require.Equal(t, tc.size<<(tc.factors-1), nz, "row %d", i)
		}
		// want = (W Rᵀ) ⊙ s
		want := make([]float32, out*in)
		for o := 0; o < int(out); o++ {
			for i := 0; i < int(in); i++ {
				var acc float64
				for k := 0; k < int(in); k++ {
					acc += float64(w0[o*int(in)+k]) * r[i][k]
				}
				want[o*int(in)+i] = float32(acc * float64(scale[o]))
			}
		}
		adapted, _ := testutil.LogitsOf(t, m, e)
		require.NoError(t, m.Merge(false))
		s = tensor.NoGradScope()
		got := s.Float32s(layer.linear().Weight.T())
		s.Close()
		d := testutil.MaxDiff(want, got)
		t.Logf("block size %d, %d factors: merged weight vs float64 %.3g", tc.size, tc.factors, d)
		require.LessOrEqual(t, d, 1e-5)
		merged, _ := testutil.LogitsOf(t, m, e)
		require.LessOrEqual(t, testutil.MaxDiff(adapted, merged), 1e-4)
		nn.FreeParams(m)
	}
}

// referenceButterfly is R [in][in] from boft_R [factors, bn, bs, bs]
// (row-major float32), in float64, transcribing PEFT's update_layer,
// block_butterfly_perm, perm2mat, cayley_batch and get_delta_weight.
func referenceButterfly(blocks []float32, in, bn, bs, factors int) [][]float64 {
	n := factors - 1
	var rot [][]float64
	for f := 0; f < factors; f++ {
		b := zeros(in)
		for j := 0; j < bn; j++ {
			a := make([][]float64, bs)
			for x := range a {
				a[x] = make([]float64, bs)
				for y := range a[x] {
					a[x][y] = float64(blocks[((f*bn+j)*bs+x)*bs+y])
				}
			}
			q := cayley64(a)
			for x := 0; x < bs; x++ {
				for y := 0; y < bs; y++ {
					b[j*bs+x][j*bs+y] = q[x][y]
				}
			}
		}
		perm := pefsPerm(in, bn/(1<<f), bs/2, n)
		p := zeros(in)
		for i, idx := range perm {
			p[i][idx] = 1
		}
		m := mul(mul(p, b), transpose(p))
		if rot == nil {
			rot = m
		} else {
			rot = mul(m, rot)
		}
	}
	return rot
}

// pefsPerm is block_butterfly_perm(n, b, r, n_butterfly_factor) as PEFT
// writes it (sort_block with a float step).
func pefsPerm(n, b, r, factor int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	if factor == 0 {
		return idx
	}
	blockSize := n / b
	step := float64(blockSize) / float64(r)
	var seq []float64
	for v := 0.0; v < step; v += 2 {
		seq = append(seq, v)
	}
	for v := 1.0; v < step; v += 2 {
		seq = append(seq, v)
	}
	sorted := make([]int, blockSize)
	for i, pos := range seq {
		for k := 0; k < r; k++ {
			sorted[i*r+k] = int(pos*float64(r)) + k
		}
	}
	out := make([]int, n)
	for i := 0; i < n; i += blockSize {
		for k := 0; k < blockSize; k++ {
			out[i+k] = idx[i+sorted[k]]
		}
	}
	return out
}

func zeros(n int) [][]float64 {
	m := make([][]float64, n)
	for i := range m {
		m[i] = make([]float64, n)
	}
	return m
}

func mul(a, b [][]float64) [][]float64 {
	n := len(a)
	c := zeros(n)
	for i := 0; i < n; i++ {
		for k := 0; k < n; k++ {
			if a[i][k] == 0 {
				continue
			}
			for j := 0; j < n; j++ {
				c[i][j] += a[i][k] * b[k][j]
			}
		}
	}
	return c
}

func transpose(a [][]float64) [][]float64 {
	c := zeros(len(a))
	for i := range a {
		for j := range a {
			c[j][i] = a[i][j]
		}
	}
	return c
}

// cayley64 is (I - S)(I + S)⁻¹, S = (A - Aᵀ)/2, with a Gauss-Jordan inverse.
func cayley64(a [][]float64) [][]float64 {
	n := len(a)
	minus, plus := zeros(n), zeros(n)
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			sk := 0.5 * (a[i][j] - a[j][i])
			id := 0.0
			if i == j {
				id = 1
			}
			minus[i][j], plus[i][j] = id-sk, id+sk
		}
	}
	return mul(minus, invert(plus))
}

func invert(a [][]float64) [][]float64 {
	n := len(a)
	m := zeros(n)
	inv := zeros(n)
	for i := range a {
		copy(m[i], a[i])
		inv[i][i] = 1
	}
	for c := 0; c < n; c++ {
		p := c
		for r := c + 1; r < n; r++ {
			if math.Abs(m[r][c]) > math.Abs(m[p][c]) {
				p = r
			}
		}
		m[c], m[p] = m[p], m[c]
		inv[c], inv[p] = inv[p], inv[c]
		d := m[c][c]
		for j := 0; j < n; j++ {
			m[c][j] /= d
			inv[c][j] /= d
		}
		for r := 0; r < n; r++ {
			if r == c || m[r][c] == 0 {
				continue
			}
			f := m[r][c]
			for j := 0; j < n; j++ {
				m[r][j] -= f * m[c][j]
				inv[r][j] -= f * inv[c][j]
			}
		}
	}
	return inv
}
