package tensor

import (
	"fmt"
	"testing"

	lib "github.com/sugarme/gotch/libtch"
)

// BenchmarkDecodeStepWeights multiplies 1, 2, 4 and 8 rows by the 57
// weights of one decoding step of the benchmark model (8 layers of
// q/k/v/o 512×512, gate/up 1376×512, down 512×1376, and lm_head 8000×512),
// three ways: Linear (the few-rows kernel up to 4 rows), libtorch's linear
// (OpenBLAS GEMM), and one libtorch mv per row (OpenBLAS GEMV). One op is
// one whole step. Run with:
//
//	OMP_NUM_THREADS=2 go test -run '^$' -bench DecodeStep ./internal/tensor/
func BenchmarkDecodeStepWeights(b *testing.B) {
	s := NoGradScope()
	defer s.Close()
	var ws []*T
	for range 8 {
		for _, d := range [][2]int64{{512, 512}, {512, 512}, {512, 512}, {512, 512}, {1376, 512}, {1376, 512}, {512, 1376}} {
			ws = append(ws, s.Randn(Float32, d[0], d[1]))
		}
	}
	ws = append(ws, s.Randn(Float32, 8000, 512))
	ways := []struct {
		name string
		f    func(x, w *T, n int64) *T
	}{
		{"Linear", func(x, w *T, n int64) *T { return s.Linear(x, w, nil) }},
		{"libtorch-linear", func(x, w *T, n int64) *T {
			lib.AtgLinear(s.ptr(), x.c, w.c, nil)
			return s.result("linear")
		}},
		{"gemv-per-row", func(x, w *T, n int64) *T { return s.linearMV(x, w, nil, n) }},
	}
	for _, rows := range []int64{1, 2, 4, 8} {
		xs := map[int64]*T{512: s.Randn(Float32, rows, 512), 1376: s.Randn(Float32, rows, 1376)}
		for _, way := range ways {
			b.Run(fmt.Sprintf("rows=%d/%s", rows, way.name), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					mark := s.Mark()
					for _, w := range ws {
						way.f(xs[w.Size(1)], w, rows)
					}
					s.FreeSince(mark)
				}
				if err := s.Err(); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// BenchmarkDecodeStepConv1D is the same for GPT-2 small's Conv1D weights
// ([in, out]: 12 layers of c_attn 768×2304, attn.c_proj 768×768, c_fc
// 768×3072, mlp.c_proj 3072×768), with bias: Conv1D (the few-rows kernel
// up to 4 rows) against libtorch's addmm (OpenBLAS GEMM), as before.
//
//	OMP_NUM_THREADS=2 go test -run '^$' -bench DecodeStepConv1D ./internal/tensor/
func BenchmarkDecodeStepConv1D(b *testing.B) {
	s := NoGradScope()
	defer s.Close()
	type wb struct{ w, b *T }
	var ws []wb
	for range 12 {
		for _, d := range [][2]int64{{768, 2304}, {768, 768}, {768, 3072}, {3072, 768}} {
			ws = append(ws, wb{s.Randn(Float32, d[0], d[1]), s.Randn(Float32, d[1])})
		}
	}
	for _, rows := range []int64{1, 4} {
		xs := map[int64]*T{768: s.Randn(Float32, rows, 768), 3072: s.Randn(Float32, rows, 3072)}
		for _, way := range []string{"Conv1D", "libtorch-addmm"} {
			b.Run(fmt.Sprintf("rows=%d/%s", rows, way), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					mark := s.Mark()
					for _, p := range ws {
						x := xs[p.w.Size(0)]
						if way == "Conv1D" {
							s.Conv1D(x, p.w, p.b)
						} else {
							s.Addmm(p.b, x, p.w)
						}
					}
					s.FreeSince(mark)
				}
				if err := s.Err(); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}
