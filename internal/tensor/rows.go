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
// multiplies it into all rows. Measured on the benchmark model's 57
// decode-step weights (2 threads, best of 30): 1 row 4.2 ms (OpenBLAS gemv
// 5.7), 2 rows 4.2 (7.6), 4 rows 5.2 (gemv per row 10.1, GEMM 10.5); at 8
// rows the kernel (9.7 ms) no longer beats GEMM (9.6).
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
