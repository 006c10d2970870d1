// Package tensor is the library's op layer over libtorch (through gotch's
// libtch C API): the Scope that runs ops and owns their results, the *T
// tensor handle, dtypes and devices, conversions to and from Go slices and
// gotch tensors, and the ops the library's layers, model families and PEFT
// methods are written with. It is public so that code outside the module
// can write an nn.Layer, a model family or a method the same way.
//
// # Memory rules
//
// A tensor's data lives in C memory that Go's garbage collector does not
// see, so every *T has exactly one owner that frees it:
//
//   - A Scope owns every tensor its ops return (s.Add, s.Linear,
//     s.FromFloat32, …) and frees them all at Close. Compute inside
//     s := tensor.NewScope() (or tensor.NoGradScope() for inference)
//     followed by defer s.Close().
//   - s.Keep(t) takes t out of the scope: t outlives Close and the caller
//     owns it (t.Free() releases it). s.Track(t) does the reverse: the
//     scope takes a tensor the caller owned.
//   - s.Drop(t) frees a scope-owned t early; s.Mark() and
//     s.FreeSince(mark, keep...) free everything made since the mark but
//     keep (a loop over layers keeps only each layer's output). Freeing a
//     handle never breaks autograd: the graph keeps what backward needs.
//   - Arguments are borrowed: an op, a layer or a forward never frees or
//     takes the tensors it is given.
//   - A model's public Forward(s, in) follows the same rule: the tensors in
//     models.Inputs are borrowed, and the models.Outputs tensors (logits,
//     loss, hidden states) belong to s, the pass's intermediates already
//     freed. A key/value cache (models.Cache) owns its tensors: Free it.
//   - Parameters (nn.Param) are owned by their model; p.T() is borrowed;
//     the model's Free releases them.
//
// A *T is a handle: Clone gives a second handle to the same storage (no
// copy) that its caller owns; Free on nil or twice is a no-op.
//
// # Errors, threads and grad mode
//
// A Scope pins its goroutine to one OS thread until Close (libtorch's last
// error and grad mode are thread-local) and keeps the first error: after a
// failed op every later op returns nil without calling libtorch, so a block
// of ops needs one s.Err() check at the end. A failed scope stays failed;
// start a new one. NoGradScope turns autograd off until Close (PyTorch's
// torch.no_grad()). A Scope belongs to one goroutine; it is not safe for
// concurrent use, and neither is freeing a *T that another goroutine uses.
// Scopes nest on one goroutine (an inner scope for a step, an outer one for
// data that lives across steps).
//
// # Conversions
//
//   - Go slices in: s.FromFloat32(v, shape...), s.FromInt64(v, shape...),
//     s.FromBytes(dtype, shape, raw) (copies; on the scope's device).
//   - Go slices out: s.Float32s(t), s.Int64s(t), s.Bytes(t), s.Item(t)
//     (copies, row-major; Float32s and Int64s convert other dtypes).
//   - gotch: FromTS(x) makes a new handle to a *ts.Tensor's storage (no
//     copy; the caller owns it; s.Track it to let a scope free it);
//     t.ToTS() moves a handle into a *ts.Tensor (t is empty after; free the
//     result the gotch way, x.MustDrop()). Own(c) and t.C() wrap and expose
//     a raw libtch pointer.
//
// # The ops
//
// Everything a layer needs is a method of Scope, named after PyTorch:
//
//   - creation: Zeros, Ones, Full, Empty, Arange, Randn, Rand, Uniform,
//     Randint; in-place init Normal, Zero
//   - shape: View, Reshape, Transpose, Permute, Unsqueeze, Squeeze, Narrow,
//     Select, Expand, Contiguous, Cat, Stack, IndexSelect, Gather
//   - element-wise: Add, Sub, Mul, Div, Neg, Exp, Log, Sqrt, Rsqrt, Pow,
//     Abs, Maximum, Clamp, ClampMin, Reciprocal, AddScalar, MulScalar,
//     DivScalar, comparisons (Gt, Lt, EqScalar, …), Where, MaskedFill
//   - activations: Relu, Gelu, Silu, Tanh, Sigmoid, LeakyRelu, Softmax,
//     LogSoftmax, Dropout
//   - linear algebra: Matmul, Linear (x·wᵀ+b), Conv1D (GPT-2's x·w+b),
//     Addmm, Outer, SVD
//   - layers and losses: Embedding, LayerNorm, CrossEntropy (with an
//     ignore index), MSELoss, BCEWithLogits
//   - reductions: Sum, Mean, Amax, Argmax, Argmin, Cumsum, Topk, Sort
//   - dtype and device: To, ToDevice, SetDevice (where creation ops put new
//     tensors), Copy, CopyInto, CanCompute
//   - autograd: SetRequiresGrad, Backward, Grad, Detach, GradEnabled,
//     SetGradEnabled; in-place updates for optimizers (Add_, Addcmul_,
//     Addcdiv_, MulScalar_, …); ManualSeed
//
// A layer is then a struct with nn-tagged parameters and a method
// Forward(s *tensor.Scope, x *tensor.T) *tensor.T that returns a result
// owned by s (package nn; examples/custom-model builds a model family this
// way outside the module).
//
// # Cost
//
// gotch's ts.Tensor API costs 12–18 µs of bookkeeping per op (a 100 KB Go
// allocation, a global lock); an op here costs about 1 µs, 1.13–1.18× the
// raw libtch call (BENCHMARKS.md, "op layer"; go test -bench . ./tensor/).
// Linear and Conv1D on at most 4 rows without autograd use the few-rows
// kernels of rows.c on the CPU (each weight row read once for all rows).
package tensor
