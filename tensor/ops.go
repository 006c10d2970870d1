package tensor

import (
	"fmt"
	"unsafe"

	lib "github.com/sugarme/gotch/libtch"
)

// ---- creation ---------------------------------------------------------------

// FromBytes copies raw little-endian data of the given dtype and shape into a
// new tensor on the scope's device.
func (s *Scope) FromBytes(dt DType, shape []int64, data []byte) *T {
	if s.err != nil {
		return nil
	}
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	if int64(len(data)) != n*int64(dt.Size()) || dt.Size() == 0 {
		return s.Failf("tensor: %d bytes for %s%v (want %d)", len(data), dt, shape, n*int64(dt.Size()))
	}
	var p unsafe.Pointer
	var zero [8]byte
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	} else {
		p = unsafe.Pointer(&zero[0])
	}
	dims := shape
	if len(dims) == 0 {
		dims = []int64{1} // at_tensor_of_data needs a dims pointer; ndims=0 makes a scalar
	}
	s.out[0] = lib.AtTensorOfData(p, dims, uint(len(shape)), uint(dt.Size()), int(dt))
	t := s.result("from_data")
	if s.dev.IsCUDA() && t != nil {
		host := t
		t = s.ToDevice(host, s.dev)
		s.Drop(host)
	}
	return t
}

// FromFloat32 makes a float32 tensor from v.
func (s *Scope) FromFloat32(v []float32, shape ...int64) *T {
	var b []byte
	if len(v) > 0 {
		b = unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), len(v)*4)
	}
	return s.FromBytes(Float32, shape, b)
}

// FromInt64 makes an int64 tensor from v.
func (s *Scope) FromInt64(v []int64, shape ...int64) *T {
	var b []byte
	if len(v) > 0 {
		b = unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), len(v)*8)
	}
	return s.FromBytes(Int64, shape, b)
}

// Zeros makes a zero tensor.
func (s *Scope) Zeros(dt DType, shape ...int64) *T {
	if !s.ok() {
		return nil
	}
	lib.AtgZeros(s.ptr(), shape, len(shape), int32(dt), s.dev.code())
	return s.result("zeros")
}

// Ones makes a tensor of ones.
func (s *Scope) Ones(dt DType, shape ...int64) *T {
	if !s.ok() {
		return nil
	}
	lib.AtgOnes(s.ptr(), shape, len(shape), int32(dt), s.dev.code())
	return s.result("ones")
}

// Full makes a tensor filled with v.
func (s *Scope) Full(dt DType, v float64, shape ...int64) *T {
	if !s.ok() {
		return nil
	}
	sc := lib.AtsFloat(v)
	lib.AtgFull(s.ptr(), shape, len(shape), sc, int32(dt), s.dev.code())
	lib.AtsFree(sc)
	return s.result("full")
}

// Arange makes [start, end) with step 1.
func (s *Scope) Arange(dt DType, start, end int64) *T {
	if !s.ok() {
		return nil
	}
	a, b := lib.AtsInt(start), lib.AtsInt(end)
	lib.AtgArangeStart(s.ptr(), a, b, int32(dt), s.dev.code())
	lib.AtsFree(a)
	lib.AtsFree(b)
	return s.result("arange")
}

// Randn draws from N(0, 1) with libtorch's generator.
func (s *Scope) Randn(dt DType, shape ...int64) *T {
	if !s.ok() {
		return nil
	}
	lib.AtgRandn(s.ptr(), shape, len(shape), int32(dt), s.dev.code())
	return s.result("randn")
}

// ---- reading data -------------------------------------------------------------

// Bytes copies t's elements (row-major) into Go memory.
func (s *Scope) Bytes(t *T) []byte {
	if !s.ok(t) {
		return nil
	}
	c := s.Contiguous(t)
	if c == nil {
		return nil
	}
	n := c.Numel()
	size := c.DType().Size()
	buf := make([]byte, n*int64(size))
	if n > 0 {
		lib.AtCopyData(c.c, unsafe.Pointer(&buf[0]), uint(n), uint(size))
	}
	s.Drop(c)
	if !s.check("copy_data") {
		return nil
	}
	return buf
}

// Float32s copies a float32 tensor's elements into Go memory (other dtypes
// are converted first).
func (s *Scope) Float32s(t *T) []float32 {
	if !s.ok(t) {
		return nil
	}
	if t.DType() != Float32 {
		t = s.To(t, Float32)
	}
	b := s.Bytes(t)
	if b == nil {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
}

// Int64s copies an int64 tensor's elements into Go memory.
func (s *Scope) Int64s(t *T) []int64 {
	if !s.ok(t) {
		return nil
	}
	if t.DType() != Int64 {
		t = s.To(t, Int64)
	}
	b := s.Bytes(t)
	if b == nil {
		return nil
	}
	return unsafe.Slice((*int64)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/8)
}

// Item returns the single value of a one-element tensor as float64.
func (s *Scope) Item(t *T) float64 {
	if !s.ok(t) {
		return 0
	}
	if t.Numel() != 1 {
		s.Failf("tensor: item of a tensor with %d elements", t.Numel())
		return 0
	}
	d := s.To(t, Float64)
	b := s.Bytes(d)
	s.Drop(d)
	if b == nil {
		return 0
	}
	return *(*float64)(unsafe.Pointer(&b[0]))
}

// ---- shape ---------------------------------------------------------------------

// View reshapes without copying (t must be viewable).
func (s *Scope) View(t *T, shape ...int64) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgView(s.ptr(), t.c, shape, len(shape))
	return s.result("view")
}

// Reshape reshapes, copying when needed.
func (s *Scope) Reshape(t *T, shape ...int64) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgReshape(s.ptr(), t.c, shape, len(shape))
	return s.result("reshape")
}

// Transpose swaps two dimensions.
func (s *Scope) Transpose(t *T, d0, d1 int64) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgTranspose(s.ptr(), t.c, d0, d1)
	return s.result("transpose")
}

// Unsqueeze inserts a dimension of size 1.
func (s *Scope) Unsqueeze(t *T, d int64) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgUnsqueeze(s.ptr(), t.c, d)
	return s.result("unsqueeze")
}

// Squeeze removes dimension d of size 1.
func (s *Scope) Squeeze(t *T, d int64) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgSqueezeDim(s.ptr(), t.c, d)
	return s.result("squeeze")
}

// Narrow takes length elements of dimension d starting at start (a view).
func (s *Scope) Narrow(t *T, d, start, length int64) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgNarrow(s.ptr(), t.c, d, start, length)
	return s.result("narrow")
}

// Select picks index i of dimension d, removing the dimension.
func (s *Scope) Select(t *T, d, i int64) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgSelect(s.ptr(), t.c, d, i)
	return s.result("select")
}

// Contiguous returns t laid out row-major (t itself when it already is, as a new handle).
func (s *Scope) Contiguous(t *T) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgContiguous(s.ptr(), t.c)
	return s.result("contiguous")
}

// Expand broadcasts t to shape (-1 keeps a dimension).
func (s *Scope) Expand(t *T, shape ...int64) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgExpand(s.ptr(), t.c, shape, len(shape), 0)
	return s.result("expand")
}

// Cat concatenates along d.
func (s *Scope) Cat(d int64, ts ...*T) *T {
	if !s.ok(ts...) {
		return nil
	}
	if len(ts) == 0 {
		return s.Failf("cat: no tensors")
	}
	cs := make([]lib.Ctensor, len(ts))
	for i, t := range ts {
		cs[i] = t.c
	}
	lib.AtgCat(s.ptr(), cs, len(cs), d)
	return s.result("cat")
}

// To converts t to dtype dt (a new handle to t when it already has it).
func (s *Scope) To(t *T, dt DType) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgToDtype(s.ptr(), t.c, int32(dt), 0, 0)
	return s.result("to")
}

// Copy makes an independent copy of t's data.
func (s *Scope) Copy(t *T) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgToDtype(s.ptr(), t.c, int32(t.DType()), 0, 1) // gotch's atg_clone is clone_out
	return s.result("clone")
}

// CopyInto copies src's values into dst in place (no autograd tracking
// concerns: call it under no-grad for parameters).
func (s *Scope) CopyInto(dst, src *T) {
	if !s.ok(dst, src) {
		return
	}
	lib.AtCopy_(dst.c, src.c)
	s.check("copy_")
}

// ---- elementwise -------------------------------------------------------------

type binary func(*lib.Ctensor, lib.Ctensor, lib.Ctensor)

func (s *Scope) bin(op string, f binary, a, b *T) *T {
	if !s.ok(a, b) {
		return nil
	}
	f(s.ptr(), a.c, b.c)
	return s.result(op)
}

type unary func(*lib.Ctensor, lib.Ctensor)

func (s *Scope) un(op string, f unary, a *T) *T {
	if !s.ok(a) {
		return nil
	}
	f(s.ptr(), a.c)
	return s.result(op)
}

type withScalar func(*lib.Ctensor, lib.Ctensor, lib.Cscalar)

func (s *Scope) scalar(op string, f withScalar, a *T, v float64) *T {
	if !s.ok(a) {
		return nil
	}
	sc := lib.AtsFloat(v)
	f(s.ptr(), a.c, sc)
	lib.AtsFree(sc)
	return s.result(op)
}

func (s *Scope) Add(a, b *T) *T     { return s.bin("add", lib.AtgAdd, a, b) }
func (s *Scope) Sub(a, b *T) *T     { return s.bin("sub", lib.AtgSub, a, b) }
func (s *Scope) Mul(a, b *T) *T     { return s.bin("mul", lib.AtgMul, a, b) }
func (s *Scope) Div(a, b *T) *T     { return s.bin("div", lib.AtgDiv, a, b) }
func (s *Scope) Matmul(a, b *T) *T  { return s.bin("matmul", lib.AtgMatmul, a, b) }
func (s *Scope) Outer(a, b *T) *T   { return s.bin("outer", lib.AtgOuter, a, b) }
func (s *Scope) Maximum(a, b *T) *T { return s.bin("maximum", lib.AtgMaxOther, a, b) }

func (s *Scope) Neg(a *T) *T     { return s.un("neg", lib.AtgNeg, a) }
func (s *Scope) Rsqrt(a *T) *T   { return s.un("rsqrt", lib.AtgRsqrt, a) }
func (s *Scope) Sqrt(a *T) *T    { return s.un("sqrt", lib.AtgSqrt, a) }
func (s *Scope) Exp(a *T) *T     { return s.un("exp", lib.AtgExp, a) }
func (s *Scope) Log(a *T) *T     { return s.un("log", lib.AtgLog, a) }
func (s *Scope) Abs(a *T) *T     { return s.un("abs", lib.AtgAbs, a) }
func (s *Scope) Silu(a *T) *T    { return s.un("silu", lib.AtgSilu, a) }
func (s *Scope) Tanh(a *T) *T    { return s.un("tanh", lib.AtgTanh, a) }
func (s *Scope) Sigmoid(a *T) *T { return s.un("sigmoid", lib.AtgSigmoid, a) }
func (s *Scope) Cos(a *T) *T     { return s.un("cos", lib.AtgCos, a) }
func (s *Scope) Sin(a *T) *T     { return s.un("sin", lib.AtgSin, a) }
func (s *Scope) Detach(a *T) *T  { return s.un("detach", lib.AtgDetach, a) }

// AddScalar is a + v.
func (s *Scope) AddScalar(a *T, v float64) *T { return s.scalar("add_scalar", lib.AtgAddScalar, a, v) }

// MulScalar is a * v.
func (s *Scope) MulScalar(a *T, v float64) *T { return s.scalar("mul_scalar", lib.AtgMulScalar, a, v) }

// Pow is a ** v.
func (s *Scope) Pow(a *T, v float64) *T { return s.scalar("pow", lib.AtgPowTensorScalar, a, v) }

// EqScalar is the boolean a == v.
func (s *Scope) EqScalar(a *T, v float64) *T { return s.scalar("eq", lib.AtgEq, a, v) }

// GtScalar is the boolean a > v.
func (s *Scope) GtScalar(a *T, v float64) *T { return s.scalar("gt", lib.AtgGt, a, v) }

// Gt is the boolean a > b.
func (s *Scope) Gt(a, b *T) *T { return s.bin("gt", lib.AtgGtTensor, a, b) }

// MaskedFill sets a's elements to v where mask is true.
func (s *Scope) MaskedFill(a, mask *T, v float64) *T {
	if !s.ok(a, mask) {
		return nil
	}
	sc := lib.AtsFloat(v)
	lib.AtgMaskedFill(s.ptr(), a.c, mask.c, sc)
	lib.AtsFree(sc)
	return s.result("masked_fill")
}

// Where picks a where cond is true, else b.
func (s *Scope) Where(cond, a, b *T) *T {
	if !s.ok(cond, a, b) {
		return nil
	}
	lib.AtgWhereSelf(s.ptr(), cond.c, a.c, b.c)
	return s.result("where")
}

// Gelu is GELU; approximate is "none" or "tanh" (GPT-2's gelu_new).
func (s *Scope) Gelu(a *T, approximate string) *T {
	if !s.ok(a) {
		return nil
	}
	lib.AtgGelu(s.ptr(), a.c, approximate)
	return s.result("gelu")
}

// Dropout zeroes elements with probability p when train is set.
func (s *Scope) Dropout(a *T, p float64, train bool) *T {
	if !s.ok(a) {
		return nil
	}
	lib.AtgDropout(s.ptr(), a.c, p, b2i(train))
	return s.result("dropout")
}

// ---- reductions --------------------------------------------------------------

// Mean over dims (keepdim as given), in t's dtype.
func (s *Scope) Mean(t *T, keep bool, dims ...int64) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgMeanDim(s.ptr(), t.c, dims, len(dims), b2i(keep), int32(t.DType()))
	return s.result("mean")
}

// Sum over dims (all when none given).
func (s *Scope) Sum(t *T, keep bool, dims ...int64) *T {
	if !s.ok(t) {
		return nil
	}
	if len(dims) == 0 {
		lib.AtgSum(s.ptr(), t.c, int32(t.DType()))
	} else {
		lib.AtgSumDimIntlist(s.ptr(), t.c, dims, len(dims), b2i(keep), int32(t.DType()))
	}
	return s.result("sum")
}

// Cumsum along d.
func (s *Scope) Cumsum(t *T, d int64) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgCumsum(s.ptr(), t.c, d, int32(t.DType()))
	return s.result("cumsum")
}

// Softmax along d computed in dtype dt.
func (s *Scope) Softmax(t *T, d int64, dt DType) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgSoftmax(s.ptr(), t.c, d, int32(dt))
	return s.result("softmax")
}

// LogSoftmax along d computed in dtype dt.
func (s *Scope) LogSoftmax(t *T, d int64, dt DType) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgLogSoftmax(s.ptr(), t.c, d, int32(dt))
	return s.result("log_softmax")
}

// ---- layers --------------------------------------------------------------------

// Linear is x @ w^T + b (b optional).
func (s *Scope) Linear(x, w, b *T) *T {
	if !s.ok(x, w) {
		return nil
	}
	if n := s.fewRows(x, w, b, w.Size(1)); n > 0 && !w.Device().IsCUDA() {
		if y, ok := s.rowsKernel(x, w, b, n, false); ok {
			return y
		}
		return s.linearMV(x, w, b, n)
	}
	lib.AtgLinear(s.ptr(), x.c, w.c, cOf(b))
	return s.result("linear")
}

func (s *Scope) mv(m, v *T) *T {
	if !s.ok(m, v) {
		return nil
	}
	lib.AtgMv(s.ptr(), m.c, v.c)
	return s.result("mv")
}

// Addmm is b + x @ w.
func (s *Scope) Addmm(b, x, w *T) *T {
	if !s.ok(b, x, w) {
		return nil
	}
	lib.AtgAddmm(s.ptr(), b.c, x.c, w.c)
	return s.result("addmm")
}

// Embedding looks up rows of w.
func (s *Scope) Embedding(w, ids *T) *T {
	if !s.ok(w, ids) {
		return nil
	}
	lib.AtgEmbedding(s.ptr(), w.c, ids.c, -1, 0, 0)
	return s.result("embedding")
}

// LayerNorm over the last len(shape) dims.
func (s *Scope) LayerNorm(x *T, shape []int64, w, b *T, eps float64) *T {
	if !s.ok(x) {
		return nil
	}
	lib.AtgLayerNorm(s.ptr(), x.c, shape, len(shape), cOf(w), cOf(b), eps, 0)
	return s.result("layer_norm")
}

// CrossEntropy is the mean cross-entropy of logits [N, C] against targets
// [N], skipping targets equal to ignoreIndex.
func (s *Scope) CrossEntropy(logits, targets *T, ignoreIndex int64) *T {
	if !s.ok(logits, targets) {
		return nil
	}
	lib.AtgCrossEntropyLoss(s.ptr(), logits.c, targets.c, nil, 1, ignoreIndex, 0)
	return s.result("cross_entropy")
}

// ---- autograd ------------------------------------------------------------------

// SetRequiresGrad turns autograd tracking of a leaf tensor on or off, in place.
func (s *Scope) SetRequiresGrad(t *T, on bool) {
	if !s.ok(t) {
		return
	}
	lib.AtgRequiresGrad_(s.ptr(), t.c, b2i(on))
	if s.out[0] != nil { // the op returns a second handle to t
		lib.AtFree(s.out[0])
		s.out[0] = nil
	}
	s.check("requires_grad_")
}

// Backward runs autograd from a scalar loss.
func (s *Scope) Backward(loss *T) {
	if !s.ok(loss) {
		return
	}
	lib.AtBackward(loss.c, 0, 0)
	s.check("backward")
}

// Grad returns t's accumulated gradient, or nil when it has none.
func (s *Scope) Grad(t *T) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgGrad(s.ptr(), t.c)
	g := s.result("grad")
	if g != nil && !lib.AtDefined(g.c) {
		s.Drop(g)
		return nil
	}
	return g
}

// ---- in place ------------------------------------------------------------------

// Normal fills t in place from N(mean, std).
func (s *Scope) Normal(t *T, mean, std float64) {
	if !s.ok(t) {
		return
	}
	lib.AtgNormal_(s.ptr(), t.c, mean, std)
	s.freeSlot()
	s.check("normal_")
}

// Zero fills t with zeros in place.
func (s *Scope) Zero(t *T) {
	if !s.ok(t) {
		return
	}
	lib.AtgZero_(s.ptr(), t.c)
	s.freeSlot()
	s.check("zero_")
}

// freeSlot frees the extra handle that in-place ops return.
func (s *Scope) freeSlot() {
	if s.out[0] != nil {
		lib.AtFree(s.out[0])
		s.out[0] = nil
	}
}

// String summarises t for error messages and debugging.
func (t *T) String() string {
	if !t.Defined() {
		return "tensor(undefined)"
	}
	return fmt.Sprintf("tensor(%s%v)", t.DType(), t.Shape())
}

// DivScalar is a / v.
func (s *Scope) DivScalar(a *T, v float64) *T { return s.scalar("div_scalar", lib.AtgDivScalar, a, v) }

// LogicalOr is the elementwise a || b of boolean tensors.
func (s *Scope) LogicalOr(a, b *T) *T { return s.bin("logical_or", lib.AtgLogicalOr, a, b) }

// Empty makes an uninitialised tensor (its pages are not touched until written).
func (s *Scope) Empty(dt DType, shape ...int64) *T {
	if !s.ok() {
		return nil
	}
	lib.AtgEmpty(s.ptr(), shape, len(shape), int32(dt), s.dev.code())
	return s.result("empty")
}

// Rand draws from U[0, 1) with libtorch's generator.
func (s *Scope) Rand(dt DType, shape ...int64) *T {
	if !s.ok() {
		return nil
	}
	lib.AtgRand(s.ptr(), shape, len(shape), int32(dt), s.dev.code())
	return s.result("rand")
}

// Uniform draws from U[lo, hi).
func (s *Scope) Uniform(dt DType, lo, hi float64, shape ...int64) *T {
	return s.AddScalar(s.MulScalar(s.Rand(dt, shape...), hi-lo), lo)
}

// RowNorm is the L2 norm of each row of a 2-D tensor ([out, in] → [out]).
func (s *Scope) RowNorm(w *T) *T {
	return s.Sqrt(s.Sum(s.Mul(w, w), false, 1))
}

// ---- indexing and decompositions (mixed-batch LoRA, weighted adapters) -------

// results collects an op's n outputs from slots 0..n-1 (ops with several
// outputs, such as SVD). On error every element is nil.
func (s *Scope) results(op string, n int) []*T {
	out := make([]*T, n)
	if err := lastErr(); err != nil {
		for i := 0; i < n; i++ {
			s.out[i] = nil
		}
		if s.err == nil {
			s.err = fmt.Errorf("%s: %w", op, err)
		}
		return out
	}
	for i := 0; i < n; i++ {
		c := s.out[i]
		s.out[i] = nil
		if c == nil {
			s.Failf("%s: libtorch returned no tensor for output %d", op, i)
			continue
		}
		out[i] = &T{c: c}
		s.owned = append(s.owned, out[i])
	}
	if s.err != nil {
		return make([]*T, n)
	}
	return out
}

// IndexSelect picks the entries of dimension d at the int64 positions idx.
func (s *Scope) IndexSelect(t *T, d int64, idx *T) *T {
	if !s.ok(t, idx) {
		return nil
	}
	lib.AtgIndexSelect(s.ptr(), t.c, d, idx.c)
	return s.result("index_select")
}

// IndexAdd returns a copy of t with src added at positions idx of dimension
// d (out-of-place index_add; autograd flows to both t and src).
func (s *Scope) IndexAdd(t *T, d int64, idx, src *T) *T {
	if !s.ok(t, idx, src) {
		return nil
	}
	lib.AtgIndexAdd(s.ptr(), t.c, d, idx.c, src.c)
	return s.result("index_add")
}

// SVD is the reduced singular value decomposition of a 2-D tensor
// a [m, n] = u·diag(sv)·vh with u [m, k], sv [k] (descending), vh [k, n],
// k = min(m, n).
func (s *Scope) SVD(a *T) (u, sv, vh *T) {
	if !s.ok(a) {
		return nil, nil, nil
	}
	// torch::svd (some=true) returns V, not Vᴴ; linalg_svd's driver argument
	// cannot be left unset through libtch, and a set driver is CUDA-only.
	lib.AtgSvd(s.ptr(), a.c, 1, 1)
	r := s.results("svd", 3)
	return r[0], r[1], s.Transpose(r[2], 0, 1)
}
