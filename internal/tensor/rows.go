package tensor

// #cgo CFLAGS: -O3 -fopenmp -Wno-psabi
// #cgo LDFLAGS: -fopenmp
// #include "rows.h"
import "C"

import (
	lib "github.com/sugarme/gotch/libtch"
)

// maxFewRows is how many rows Linear computes with its own kernel instead
// of libtorch's linear. A decoding step multiplies one row per sequence by
// every weight: OpenBLAS's GEMM packs the whole weight for each call (as
// costly as the product itself at this size) and its GEMV reads the weight
// once per row. gopeft_linear_rows (rows.c) reads each weight row once and
// multiplies it into all rows. BenchmarkDecodeStepWeights (the benchmark
// model's 57 decode-step weights, 2 threads): 1 row 6.9 ms (GEMV 8.8, GEMM
// 10.7), 4 rows 8.3 ms (GEMV per row 21.4, GEMM 13.9). At 8 rows the
// kernel no longer wins (9.7 ms vs GEMM's 9.6 in a standalone C timing).
const maxFewRows = C.GOPEFT_MAX_ROWS

// fewRows is the number of rows of x when Linear should use its few-rows
// path (0 when not): few rows, a 2-D weight, and no autograd graph to
// record (no-grad mode, as in generation, or no input requiring grad);
// training keeps libtorch's linear and its backward.
func (s *Scope) fewRows(x, w, b *T) int64 {
	if w.Dim() != 2 || x.Dim() < 1 {
		return 0
	}
	in := w.Size(1)
	if x.Size(-1) != in || in == 0 {
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

// linearFewRows is Linear for n ≤ maxFewRows rows: the kernel for float32,
// one matrix-vector product per row for other dtypes.
func (s *Scope) linearFewRows(x, w, b *T, n int64) *T {
	f32 := x.DType() == Float32 && w.DType() == Float32 && (b == nil || b.DType() == Float32)
	if !f32 || (b != nil && (b.Dim() != 1 || b.Size(0) != w.Size(0))) {
		return s.linearMV(x, w, b, n)
	}
	x, w, b = s.contiguous(x), s.contiguous(w), s.contiguous(b)
	shape := x.Shape()
	shape[len(shape)-1] = w.Size(0)
	y := s.Empty(Float32, shape...)
	if s.Err() != nil {
		return nil
	}
	var bp *C.float
	if b != nil {
		bp = (*C.float)(lib.AtDataPtr(b.c))
	}
	C.gopeft_linear_rows((*C.float)(lib.AtDataPtr(x.c)), (*C.float)(lib.AtDataPtr(w.c)), bp,
		(*C.float)(lib.AtDataPtr(y.c)), C.int(n), C.int64_t(w.Size(0)), C.int64_t(w.Size(1)))
	return y
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
