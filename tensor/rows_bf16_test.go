package tensor

import (
	enc "encoding/binary"
	"fmt"
	"math"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

var le = enc.LittleEndian

// forEachBF16Impl runs f once per bfloat16 Linear kernel this CPU can
// run: "dot" (AVX-512 BF16, where the CPU has it) and "widen" (bfloat16
// shifted to float32, what other CPUs run; forced through the bf16Dot
// hook, so it is tested on every machine).
func forEachBF16Impl(t *testing.T, f func(t *testing.T)) {
	cpu := bf16Dot
	t.Cleanup(func() { bf16Dot = cpu })
	impls := []string{"widen"}
	if cpu {
		impls = append(impls, "dot")
	}
	for _, impl := range impls {
		t.Run(impl, func(t *testing.T) {
			bf16Dot = impl == "dot"
			defer func() { bf16Dot = cpu }()
			f(t)
		})
	}
}

// withThreads runs f on one OS thread whose libtorch intra-op thread
// count is n, so that the kernels' OpenMP split runs (libtorch defaults
// to 1 thread on a VM whose 2 vCPUs are one core's hyperthreads).
func withThreads(n int, f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	old := NumThreads()
	SetNumThreads(n)
	defer SetNumThreads(old)
	f()
}

// bf16Bits are a bfloat16 tensor's elements as bit patterns.
func (s *Scope) bf16Bits(t *T) []uint16 {
	b := s.Bytes(t)
	out := make([]uint16, len(b)/2)
	for i := range out {
		out[i] = le.Uint16(b[2*i:])
	}
	return out
}

// float64s are t's elements as float64.
func (s *Scope) float64s(t *T) []float64 {
	b := s.Bytes(s.To(t, Float64))
	out := make([]float64, len(b)/8)
	for i := range out {
		out[i] = math.Float64frombits(le.Uint64(b[8*i:]))
	}
	return out
}

// checkBF16 compares a bfloat16 product with the float64 one of the same
// values: rounding the float32 sum once to bfloat16 is off by at most half
// a bfloat16 ulp (≤ 2⁻⁸|y|), the float32 sum itself by far less than
// 2⁻¹⁶ Σ|x||w| (+ |b|). loose is for libtorch's own bfloat16 products
// (more than maxFewRows rows), which at some sizes round partial sums to
// bfloat16 (its mv with 5 inputs is off by up to a third): 2⁻⁸ Σ|x||w| per
// input.
func checkBF16(t *testing.T, s *Scope, got, x, w, b *T, loose bool, msg string) {
	t.Helper()
	xf, wf := s.To(x, Float64), s.Transpose(s.To(w, Float64), 0, 1)
	want := s.Matmul(xf, wf)
	bound := s.Matmul(s.Abs(xf), s.Abs(wf))
	if b != nil {
		want = s.Add(want, s.To(b, Float64))
		bound = s.Add(bound, s.Abs(s.To(b, Float64)))
	}
	require.NoError(t, s.Err(), msg)
	require.Equal(t, BFloat16, got.DType(), msg)
	require.Equal(t, want.Shape(), got.Shape(), msg)
	g, wv, bv := s.float64s(got), s.float64s(want), s.float64s(bound)
	for i := range wv {
		tol := math.Abs(wv[i])/256 + bv[i]/65536
		if loose {
			tol = bv[i] * float64(x.Size(-1)) / 256
		}
		if d := math.Abs(g[i] - wv[i]); !(d <= tol) {
			t.Fatalf("%s: element %d is %g, want %g (off by %g > %g)", msg, i, g[i], wv[i], d, tol)
		}
	}
}

// The bfloat16 kernels (Linear's [out, in] weights and Conv1D's [in, out])
// against libtorch's float64 product of the same bfloat16 values: every row
// count (5 is libtorch's own bfloat16 path, checked loosely), inner sizes
// below, at and off every step of both Linear kernels (the dot kernel's 32
// values a step and masked last < 32, the widening one's 16 a step and last
// < 16 one by one) and of Conv1D's 4 weight rows a step, output counts off
// the dot kernel's 4 outputs a step, Conv1D's 8-wide columns and its
// 256-column tile, bias or none, a strided input, and weights large enough
// to be split across two OpenMP threads.
func TestLinearBF16KernelMatchesFloat64(t *testing.T) {
	forEachBF16Impl(t, func(t *testing.T) {
		withThreads(2, func() {
			s := NoGradScope()
			defer s.Close()
			for _, dims := range [][2]int64{{3, 5}, {7, 8}, {5, 16}, {33, 32}, {17, 47}, {9, 61}, {40, 99},
				{1000, 131}, {600, 512}, {70, 1376}} {
				out, in := dims[0], dims[1]
				w := s.To(s.Randn(Float32, out, in), BFloat16)
				b := s.To(s.Randn(Float32, out), BFloat16)
				for rows := int64(1); rows <= maxFewRows+1; rows++ {
					mark := s.Mark()
					for _, bias := range []*T{nil, b} {
						for _, strided := range []bool{false, true} {
							var x *T
							if strided { // [in, rows] transposed: rows × in with stride in ≠ 1
								x = s.Transpose(s.To(s.Randn(Float32, in, rows), BFloat16), 0, 1)
							} else {
								x = s.To(s.Randn(Float32, rows, in), BFloat16)
							}
							for _, conv1D := range []bool{false, true} {
								var got *T
								if conv1D {
									got = s.Conv1D(x, s.Contiguous(s.Transpose(w, 0, 1)), bias)
								} else {
									got = s.Linear(x, w, bias)
								}
								checkBF16(t, s, got, x, w, bias, rows > maxFewRows, fmt.Sprintf("w %dx%d rows %d bias %v strided %v conv1D %v",
									out, in, rows, bias != nil, strided, conv1D))
							}
						}
					}
					s.FreeSince(mark)
				}
			}
		})
	})
}

// Rounding is once, to the nearest bfloat16, ties to even: sums that are
// exact in float32 and fall on or beside a tie, placed at the first and
// the last inner position (a main step and a tail), with the bias or in
// the products, through both layouts.
func TestLinearBF16RoundsOnceToNearestEven(t *testing.T) {
	const e8, e16 = 1.0 / 256, 1.0 / 65536
	cases := []struct {
		terms []float32 // w's nonzero values, x = 1 where they are
		bias  float32
		want  uint16
	}{
		{[]float32{1, e8}, 0, 0x3f80},                // 1 + 2⁻⁸: a tie, down to even 1
		{[]float32{1, 3 * e8}, 0, 0x3f82},            // 1 + 3·2⁻⁸: a tie, up to even 1 + 2⁻⁶ (truncating gives 0x3f81)
		{[]float32{1, e8, e16}, 0, 0x3f81},           // just above the tie: up
		{[]float32{-1, -3 * e8}, 0, 0xbf82},          // negative ties away from zero when that is even
		{[]float32{1}, e8, 0x3f80},                   // the bias joins the float32 sum before the one rounding
		{[]float32{1}, 3 * e8, 0x3f82},               //
		{[]float32{1, e8}, e16, 0x3f81},              // a bias that breaks the tie
		{[]float32{1, e8}, -e16, 0x3f80},             //
		{[]float32{float32(math.Inf(1))}, 1, 0x7f80}, // infinity stays infinite
	}
	forEachBF16Impl(t, func(t *testing.T) {
		s := NoGradScope()
		defer s.Close()
		for _, in := range []int64{3, 37, 67, 131} {
			for ci, c := range cases {
				if int64(len(c.terms)) > in {
					continue
				}
				// Row 0 holds the terms at the start, row 1 at the end
				// (both in the single output's dot product with x = 1 there).
				wv := make([]float32, 2*in)
				xv := make([]float32, in)
				for i, v := range c.terms {
					wv[i], wv[2*in-1-int64(i)] = v, v
					xv[i], xv[in-1-int64(i)] = 1, 1
				}
				w := s.To(s.FromFloat32(wv, 2, in), BFloat16)
				x := s.To(s.FromFloat32(xv, 1, in), BFloat16)
				b := s.To(s.FromFloat32([]float32{c.bias, c.bias}, 2), BFloat16)
				for _, conv1D := range []bool{false, true} {
					var y *T
					if conv1D {
						y = s.Conv1D(x, s.Contiguous(s.Transpose(w, 0, 1)), b)
					} else {
						y = s.Linear(x, w, b)
					}
					require.NoError(t, s.Err())
					require.Equal(t, []uint16{c.want, c.want}, s.bf16Bits(y), "in %d case %d conv1D %v", in, ci, conv1D)
				}
			}
		}
		// NaN comes out as c10's quiet NaN 0x7fc0, whatever its sign and
		// payload: a NaN weight, and 0·∞ (x86's default NaN is negative).
		inf, nan := float32(math.Inf(1)), float32(math.NaN())
		for _, c := range [][2][]float32{{{nan, 1}, {1, 1}}, {{inf, 1}, {0, 1}}, {{1, -inf}, {1, 0}}} {
			w := s.To(s.FromFloat32(c[0], 1, 2), BFloat16)
			x := s.To(s.FromFloat32(c[1], 1, 2), BFloat16)
			require.Equal(t, []uint16{0x7fc0}, s.bf16Bits(s.Linear(x, w, nil)), "w %v x %v", c[0], c[1])
			require.Equal(t, []uint16{0x7fc0}, s.bf16Bits(s.Conv1D(x, s.Contiguous(s.Transpose(w, 0, 1)), nil)), "w %v x %v", c[0], c[1])
		}
	})
}

// Both kernels run on a CPU with AVX-512 BF16 (the hook picks the widening
// one), Conv1D's layout always widens, and the two Linear kernels agree to
// within one bfloat16 ulp (they sum in different orders).
func TestLinearBF16Implementations(t *testing.T) {
	s := NoGradScope()
	defer s.Close()
	cpu := bf16Dot
	defer func() { bf16Dot = cpu }()
	w := s.To(s.Randn(Float32, 300, 333), BFloat16)
	b := s.To(s.Randn(Float32, 300), BFloat16)
	x := s.To(s.Randn(Float32, 3, 333), BFloat16)
	run := func(dot, conv1D bool) (*T, int) {
		bf16Dot = dot
		y := s.Empty(BFloat16, 3, 300)
		ww := w
		if conv1D {
			ww = s.Contiguous(s.Transpose(w, 0, 1))
		}
		impl := s.rowsBF16(x, ww, b, y, 3, conv1D)
		require.NoError(t, s.Err())
		return y, impl
	}
	t.Logf("AVX-512 BF16: %v", cpu)
	yd, impl := run(cpu, false)
	if cpu {
		require.Equal(t, bf16ImplDot, impl)
	} else {
		require.Equal(t, bf16ImplWiden, impl)
	}
	yw, impl := run(false, false)
	require.Equal(t, bf16ImplWiden, impl)
	_, impl = run(cpu, true)
	require.Equal(t, bf16ImplWiden, impl)
	d, wv := s.float64s(yd), s.float64s(yw)
	for i := range d {
		require.InDelta(t, wv[i], d[i], math.Abs(wv[i])/128+1e-30, "element %d", i)
	}
}

// A bfloat16 weight with a float32 input or bias is not the kernel's: it
// falls back to libtorch, which rejects the mix as its linear does.
func TestLinearBF16MixedDTypesFallBack(t *testing.T) {
	s := NoGradScope()
	defer s.Close()
	w := s.To(s.Randn(Float32, 4, 6), BFloat16)
	xb := s.To(s.Randn(Float32, 2, 6), BFloat16)
	_, ok := s.rowsKernel(s.Randn(Float32, 2, 6), w, nil, 2, false)
	require.False(t, ok)
	_, ok = s.rowsKernel(xb, w, s.Randn(Float32, 4), 2, false)
	require.False(t, ok)
	_, ok = s.rowsKernel(s.Randn(Float32, 2, 4), s.Contiguous(s.Transpose(w, 0, 1)), nil, 2, true)
	require.False(t, ok)
	y, ok := s.rowsKernel(xb, w, nil, 2, false)
	require.True(t, ok)
	require.Equal(t, BFloat16, y.DType())
	require.NoError(t, s.Err())
	// Through Linear the mix reaches libtorch, which rejects it.
	s2 := NoGradScope()
	defer s2.Close()
	s2.Linear(s2.Randn(Float32, 2, 6), s2.To(s2.Randn(Float32, 4, 6), BFloat16), nil)
	require.Error(t, s2.Err())
}

// Concurrent scopes on shared bfloat16 weights, each on its own OS thread
// with a two-thread OpenMP team, through both kernels.
func TestLinearBF16ConcurrentScopes(t *testing.T) {
	forEachBF16Impl(t, func(t *testing.T) {
		setup := NoGradScope()
		w := setup.Keep(setup.To(setup.Randn(Float32, 700, 256), BFloat16))
		b := setup.Keep(setup.To(setup.Randn(Float32, 700), BFloat16))
		wt := setup.Keep(setup.Contiguous(setup.Transpose(w, 0, 1)))
		setup.Close()
		defer w.Free()
		defer b.Free()
		defer wt.Free()
		errs := make(chan error, 4)
		for g := range 4 {
			go withThreads(2, func() {
				s := NoGradScope()
				defer s.Close()
				for i := range 20 {
					rows := int64(1 + (g+i)%maxFewRows)
					x := s.To(s.Randn(Float32, rows, 256), BFloat16)
					var got *T
					if i%2 == 0 {
						got = s.Linear(x, w, b)
					} else {
						got = s.Conv1D(x, wt, b)
					}
					want := s.Add(s.Matmul(s.To(x, Float64), s.Transpose(s.To(w, Float64), 0, 1)), s.To(b, Float64))
					bound := s.Add(s.Matmul(s.Abs(s.To(x, Float64)), s.Abs(s.Transpose(s.To(w, Float64), 0, 1))),
						s.Abs(s.To(b, Float64)))
					g64, w64, b64 := s.float64s(got), s.float64s(want), s.float64s(bound)
					if err := s.Err(); err != nil {
						errs <- err
						return
					}
					for j := range w64 {
						if d := math.Abs(g64[j] - w64[j]); !(d <= math.Abs(w64[j])/256+b64[j]/65536) {
							errs <- fmt.Errorf("goroutine %d step %d element %d: %g vs %g", g, i, j, g64[j], w64[j])
							return
						}
					}
					s.FreeAll()
				}
				errs <- nil
			})
		}
		for range 4 {
			require.NoError(t, <-errs)
		}
	})
}
