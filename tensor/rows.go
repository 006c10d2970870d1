package tensor

// #cgo CFLAGS: -O3 -fopenmp -Wno-psabi
// #cgo LDFLAGS: -fopenmp
// #include "rows.h"
import "C"

import (
	lib "github.com/sugarme/gotch/libtch"
)

// maxFewRows is how many rows Linear and Conv1D compute with their own
// kernels instead of libtorch's. A decoding step multiplies one row per
// sequence by every weight: OpenBLAS's GEMM packs the whole weight for each
// call (as costly as the product itself at this size) and its GEMV reads
// the weight once per row. The kernels in rows.c read each weight once and
// multiply it into all rows. BenchmarkDecodeStepWeights (the benchmark
// model's 57 decode-step weights, 2 threads): 1 row 6.9 ms (GEMV 8.8, GEMM
// 10.7), 4 rows 8.3 ms (GEMV per row 21.4, GEMM 13.9). At 8 rows the
// kernel no longer wins (9.7 ms vs GEMM's 9.6 in a standalone C timing).
// BenchmarkDecodeStepConv1D (GPT-2 small's 48 Conv1D weights): 1 row 15.9
// ms (addmm 26.7), 4 rows 20.4 ms (33.9).
//
// In bfloat16 (BenchmarkDecodeStepWeightsBF16: the same 57 weights, 58.8
// MB; a 2-vCPU Xeon with AVX-512 BF16 that other jobs kept at load 4-5,
// best of 5): 1 row 6.5 ms (libtorch's linear 12.6; one mv per row, which
// Linear ran before, 15.3), 4 rows 6.7 ms (11.7, 50.6); the widening
// kernel other CPUs run 7.0 and 8.8 ms. Timed in C alone on a quieter
// moment, 1.5 and 2.4 ms (float32 5.6 and 7.4). GPT-2 small's Conv1D
// weights in bfloat16: 1 row 19.2 ms (addmm 29.9), 4 rows 27.2 (29.8).
const maxFewRows = C.GOPEFT_MAX_ROWS

// fewRows is the number of rows of x (whose last dimension must be in)
// when Linear or Conv1D should use the few-rows path (0 when not): few
// rows, a 2-D weight, and no autograd graph to record (no-grad mode, as in
// generation, or no input requiring grad); training keeps libtorch's ops
// and their backward.
func (s *Scope) fewRows(x, w, b *T, in int64) int64 {
	if w.Dim() != 2 || x.Dim() < 1 || x.Size(-1) != in || in == 0 {
		return 0
	}
	n := x.Numel() / in
	if n < 1 || n > maxFewRows {
		return 0
	}
	if GradEnabled() && (x.RequiresGrad() || w.RequiresGrad() || (b != nil && b.RequiresGrad())) {
		return 0
	}
	return n
}

// bf16Dot is whether the bfloat16 Linear kernel takes the CPU's AVX-512
// BF16 dot products (vdpbf16ps), asked of the CPU once; tests and
// benchmarks clear it to run the widening kernel (bfloat16 shifted to
// float32, float32 FMA) that other CPUs take. Not safe to change while
// another goroutine runs Linear.
var bf16Dot = C.gopeft_bf16_dot() != 0

// rowsKernel computes x's n rows times w with the C kernels — w [out, in]
// (Linear) or, when conv1D, w [in, out] — plus b, and reports false without
// doing anything when they do not apply: other dtypes, or a bias that is
// not one value per output. x, w and b must be all float32 or all bfloat16
// (b may be absent); a bfloat16 weight with a float32 x (or bias) falls
// back to libtorch as before, which rejects the mix as its linear does.
// The bfloat16 kernels sum in float32 and round each output once to the
// nearest bfloat16 (ties to even): never less accurate than libtorch's
// bfloat16 mv, which Linear used for these rows before and which rounds
// partial sums at small inner sizes (see rows.c).
func (s *Scope) rowsKernel(x, w, b *T, n int64, conv1D bool) (*T, bool) {
	out, in := w.Size(0), w.Size(1)
	if conv1D {
		out, in = in, out
	}
	dt := w.DType()
	if (dt != Float32 && dt != BFloat16) || x.DType() != dt ||
		(b != nil && (b.DType() != dt || b.Dim() != 1 || b.Size(0) != out)) {
		return nil, false
	}
	x, w, b = s.contiguous(x), s.contiguous(w), s.contiguous(b)
	shape := x.Shape()
	shape[len(shape)-1] = out
	y := s.Empty(dt, shape...)
	if s.Err() != nil {
		return nil, true
	}
	if dt == BFloat16 {
		if s.rowsBF16(x, w, b, y, n, conv1D) < 0 {
			s.Failf("linear: no memory for a bfloat16 input's float32 copy (%d×%d)", n, in)
			return nil, true
		}
		return y, true
	}
	var bp *C.float
	if b != nil {
		bp = (*C.float)(lib.AtDataPtr(b.c))
	}
	xp, wp, yp := (*C.float)(lib.AtDataPtr(x.c)), (*C.float)(lib.AtDataPtr(w.c)), (*C.float)(lib.AtDataPtr(y.c))
	if conv1D {
		C.gopeft_linear_rows_t(xp, wp, bp, yp, C.int(n), C.int64_t(out), C.int64_t(in))
	} else {
		C.gopeft_linear_rows(xp, wp, bp, yp, C.int(n), C.int64_t(out), C.int64_t(in))
	}
	return y, true
}

// rowsBF16 runs the bfloat16 kernel on contiguous x, w, b (or nil) into y
// and returns the implementation that ran (C.GOPEFT_BF16_DOT or
// C.GOPEFT_BF16_WIDEN), or -1 when C could not allocate x's float32 copy.
func (s *Scope) rowsBF16(x, w, b, y *T, n int64, conv1D bool) int {
	out, in := w.Size(0), w.Size(1)
	if conv1D {
		out, in = in, out
	}
	var bp *C.uint16_t
	if b != nil {
		bp = (*C.uint16_t)(lib.AtDataPtr(b.c))
	}
	xp, wp, yp := (*C.uint16_t)(lib.AtDataPtr(x.c)), (*C.uint16_t)(lib.AtDataPtr(w.c)), (*C.uint16_t)(lib.AtDataPtr(y.c))
	if conv1D {
		return int(C.gopeft_linear_rows_bf16_t(xp, wp, bp, yp, C.int(n), C.int64_t(out), C.int64_t(in)))
	}
	dot := C.int(0)
	if bf16Dot {
		dot = 1
	}
	return int(C.gopeft_linear_rows_bf16(xp, wp, bp, yp, C.int(n), C.int64_t(out), C.int64_t(in), dot))
}

// The implementations rowsBF16 reports.
const (
	bf16ImplDot   = C.GOPEFT_BF16_DOT
	bf16ImplWiden = C.GOPEFT_BF16_WIDEN
)

// Conv1D is GPT-2's Conv1D: x @ w + b for x [..., in] and w [in, out] (b
// optional), with the few-rows kernel for a decoding step's rows.
func (s *Scope) Conv1D(x, w, b *T) *T {
	if !s.ok(x, w) {
		return nil
	}
	in := w.Size(0)
	if n := s.fewRows(x, w, b, in); n > 0 && !w.Device().IsCUDA() {
		if y, ok := s.rowsKernel(x, w, b, n, true); ok {
			return y
		}
	}
	shape := x.Shape()
	flat := s.Reshape(x, -1, in)
	var y *T
	if b != nil {
		y = s.Addmm(b, flat, w)
	} else {
		y = s.Matmul(flat, w)
	}
	shape[len(shape)-1] = w.Size(1)
	return s.View(y, shape...)
}

// contiguous is t itself when its memory is already dense and in order
// (nil stays nil), else a contiguous copy.
func (s *Scope) contiguous(t *T) *T {
	if t == nil || lib.AtIsContiguous(t.c) {
		return t
	}
	return s.Contiguous(t)
}

// linearMV is Linear as one matrix-vector product per row of x.
func (s *Scope) linearMV(x, w, b *T, n int64) *T {
	rows := s.Reshape(x, n, w.Size(1))
	ys := make([]*T, n)
	for i := range n {
		ys[i] = s.mv(w, s.Select(rows, 0, i))
	}
	y := s.Stack(0, ys...)
	if b != nil {
		y = s.Add(y, b)
	}
	shape := x.Shape()
	shape[len(shape)-1] = w.Size(0)
	return s.Reshape(y, shape...)
}
