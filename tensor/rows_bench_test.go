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
//	OMP_NUM_THREADS=2 go test -run '^$' -bench DecodeStep ./tensor/
func BenchmarkDecodeStepWeights(b *testing.B) {
	s := NoGradScope()
	defer s.Close()
	ws := decodeStepWeights(s, Float32)
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

// decodeStepWeights are the benchmark model's 57 decode-step weights in dt.
func decodeStepWeights(s *Scope, dt DType) []*T {
	var ws []*T
	for range 8 {
		for _, d := range [][2]int64{{512, 512}, {512, 512}, {512, 512}, {512, 512}, {1376, 512}, {1376, 512}, {512, 1376}} {
			ws = append(ws, s.To(s.Randn(Float32, d[0], d[1]), dt))
		}
	}
	return append(ws, s.To(s.Randn(Float32, 8000, 512), dt))
}

// BenchmarkDecodeStepWeightsBF16 is BenchmarkDecodeStepWeights in
// bfloat16 (the weights, the rows and the outputs): Linear (the AVX-512
// BF16 kernel where the CPU has it), Linear-widen (the kernel other CPUs
// run, forced by the test hook), libtorch's linear and one libtorch mv per
// row. GB/s is the weights' bytes (58.9 MB) per step over its time.
//
//	OMP_NUM_THREADS=2 go test -run '^$' -bench DecodeStepWeightsBF16 ./tensor/
func BenchmarkDecodeStepWeightsBF16(b *testing.B) {
	s := NoGradScope()
	defer s.Close()
	ws := decodeStepWeights(s, BFloat16)
	var bytes int64
	for _, w := range ws {
		bytes += w.Numel() * 2
	}
	cpu := bf16Dot
	defer func() { bf16Dot = cpu }()
	ways := []struct {
		name string
		f    func(x, w *T, n int64) *T
	}{
		{"Linear", func(x, w *T, n int64) *T { bf16Dot = cpu; return s.Linear(x, w, nil) }},
		{"Linear-widen", func(x, w *T, n int64) *T { bf16Dot = false; return s.Linear(x, w, nil) }},
		{"libtorch-linear", func(x, w *T, n int64) *T {
			lib.AtgLinear(s.ptr(), x.c, w.c, nil)
			return s.result("linear")
		}},
		{"mv-per-row", func(x, w *T, n int64) *T { return s.linearMV(x, w, nil, n) }},
	}
	for _, rows := range []int64{1, 2, 4} {
		xs := map[int64]*T{512: s.To(s.Randn(Float32, rows, 512), BFloat16), 1376: s.To(s.Randn(Float32, rows, 1376), BFloat16)}
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
				b.ReportMetric(float64(bytes)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
			})
		}
	}
}

// BenchmarkCopyBandwidth is the memory's ceiling for the kernels above:
// libtorch copying a 256 MiB float32 tensor into another (GB/s counts the
// bytes read and written) and summing one (a read only, as the kernels
// read their weights), on libtorch's threads.
//
//	OMP_NUM_THREADS=2 go test -run '^$' -bench CopyBandwidth ./tensor/
func BenchmarkCopyBandwidth(b *testing.B) {
	s := NoGradScope()
	defer s.Close()
	const n = 64 << 20 // float32s: 256 MiB
	src, dst := s.Ones(Float32, n), s.Zeros(Float32, n)
	b.Run("copy", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			s.Copy_(dst, src)
		}
		b.ReportMetric(2*4*n*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
	})
	b.Run("sum", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			mark := s.Mark()
			s.Sum(src, false)
			s.FreeSince(mark)
		}
		b.ReportMetric(4*n*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
	})
	if err := s.Err(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkDecodeStepConv1D is the same for GPT-2 small's Conv1D weights
// ([in, out]: 12 layers of c_attn 768×2304, attn.c_proj 768×768, c_fc
// 768×3072, mlp.c_proj 3072×768), with bias: Conv1D (the few-rows kernel
// up to 4 rows) against libtorch's addmm (OpenBLAS GEMM), as before.
//
//	OMP_NUM_THREADS=2 go test -run '^$' -bench DecodeStepConv1D ./tensor/
func BenchmarkDecodeStepConv1D(b *testing.B) { benchmarkDecodeStepConv1D(b, Float32) }

// BenchmarkDecodeStepConv1DBF16 is BenchmarkDecodeStepConv1D in bfloat16
// (Conv1D's kernel widens bfloat16 to float32 on every CPU). GB/s is the
// weights' bytes (170 MB) per step over its time.
//
//	OMP_NUM_THREADS=2 go test -run '^$' -bench DecodeStepConv1DBF16 ./tensor/
func BenchmarkDecodeStepConv1DBF16(b *testing.B) { benchmarkDecodeStepConv1D(b, BFloat16) }

func benchmarkDecodeStepConv1D(b *testing.B, dt DType) {
	s := NoGradScope()
	defer s.Close()
	type wb struct{ w, b *T }
	var ws []wb
	var bytes int64
	for range 12 {
		for _, d := range [][2]int64{{768, 2304}, {768, 768}, {768, 3072}, {3072, 768}} {
			ws = append(ws, wb{s.To(s.Randn(Float32, d[0], d[1]), dt), s.To(s.Randn(Float32, d[1]), dt)})
			bytes += d[0] * d[1] * int64(dt.Size())
		}
	}
	for _, rows := range []int64{1, 4} {
		xs := map[int64]*T{768: s.To(s.Randn(Float32, rows, 768), dt), 3072: s.To(s.Randn(Float32, rows, 3072), dt)}
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
				b.ReportMetric(float64(bytes)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
			})
		}
	}
}
