package tensor

// #include <stdlib.h>
// #include <stdint.h>
// extern char *get_and_reset_last_err();
// extern void at_manual_seed(int64_t);
import "C"

import (
	"fmt"
	"math"
	"strings"
	"unsafe"

	lib "github.com/sugarme/gotch/libtch"
	"github.com/sugarme/gotch/ts"
)

// DType is libtorch's ScalarType code.
type DType int32

const (
	Uint8    DType = 0
	Int8     DType = 1
	Int16    DType = 2
	Int32    DType = 3
	Int64    DType = 4
	Float16  DType = 5
	Float32  DType = 6
	Float64  DType = 7
	Bool     DType = 11
	BFloat16 DType = 15
)

// Size is the element size in bytes.
func (d DType) Size() int {
	switch d {
	case Uint8, Int8, Bool:
		return 1
	case Int16, Float16, BFloat16:
		return 2
	case Int32, Float32:
		return 4
	case Int64, Float64:
		return 8
	}
	return 0
}

func (d DType) String() string {
	switch d {
	case Uint8:
		return "uint8"
	case Int8:
		return "int8"
	case Int16:
		return "int16"
	case Int32:
		return "int32"
	case Int64:
		return "int64"
	case Float16:
		return "float16"
	case Float32:
		return "float32"
	case Float64:
		return "float64"
	case Bool:
		return "bool"
	case BFloat16:
		return "bfloat16"
	}
	return fmt.Sprintf("dtype(%d)", int32(d))
}

// cpu is libtch's device code for the CPU.
const cpu = -1

// T is an owned handle to a libtorch tensor. The zero value and nil are
// "no tensor". Free releases this handle's reference; the storage lives on
// while other handles or the autograd graph still refer to it.
type T struct {
	c lib.Ctensor
}

// Own wraps a C tensor pointer; the returned handle owns it.
func Own(c lib.Ctensor) *T {
	if c == nil {
		return nil
	}
	return &T{c: c}
}

// C returns the underlying libtch pointer (still owned by t).
func (t *T) C() lib.Ctensor {
	if t == nil {
		return nil
	}
	return t.c
}

// Defined reports whether t refers to a tensor.
func (t *T) Defined() bool { return t != nil && t.c != nil }

// Free releases the handle. Safe to call twice and on nil.
func (t *T) Free() {
	if t == nil || t.c == nil {
		return
	}
	lib.AtFree(t.c)
	t.c = nil
}

// Accessors are nil-safe (zero values) so that a chain of ops can run on
// after a failed op and report the scope's first error.

// Dim is the number of dimensions.
func (t *T) Dim() int {
	if !t.Defined() {
		return 0
	}
	return int(lib.AtDim(t.c))
}

// Shape returns the sizes of every dimension.
func (t *T) Shape() []int64 {
	n := t.Dim()
	if n == 0 {
		if !t.Defined() {
			return nil
		}
		return []int64{}
	}
	dims := make([]int64, n)
	lib.AtShape(t.c, unsafe.Pointer(&dims[0]))
	return dims
}

// Size returns the size of dimension d (negative counts from the end).
func (t *T) Size(d int) int64 {
	s := t.Shape()
	if d < 0 {
		d += len(s)
	}
	if d < 0 || d >= len(s) {
		return 0
	}
	return s[d]
}

// Numel is the number of elements.
func (t *T) Numel() int64 {
	n := int64(1)
	for _, d := range t.Shape() {
		n *= d
	}
	return n
}

// DType is the element type.
func (t *T) DType() DType {
	if !t.Defined() {
		return 0
	}
	return DType(lib.AtScalarType(t.c))
}

// RequiresGrad reports whether autograd tracks t.
func (t *T) RequiresGrad() bool { return t.Defined() && lib.AtRequiresGrad(t.c) }

// Clone returns a second handle to the same tensor (no data copy); the
// caller owns it.
func (t *T) Clone() *T {
	if t == nil || t.c == nil {
		return nil
	}
	return &T{c: lib.AtShallowClone(t.c)}
}

// ToTS moves t into a gotch ts.Tensor for the public API; t is empty after.
func (t *T) ToTS() *ts.Tensor {
	if t == nil || t.c == nil {
		return nil
	}
	c := t.c
	t.c = nil
	return ts.FromCtensor(unsafe.Pointer(c))
}

// FromTS returns a new handle to x's tensor (no data copy); the caller owns it.
func FromTS(x *ts.Tensor) *T {
	if x == nil {
		return nil
	}
	return &T{c: lib.AtShallowClone(lib.Ctensor(x.Ctensor()))}
}

// lastErr returns and clears libtorch's thread-local error, if any.
func lastErr() error {
	p := C.get_and_reset_last_err()
	if p == nil {
		return nil
	}
	msg := C.GoString(p)
	C.free(unsafe.Pointer(p))
	// libtorch appends a C++ backtrace after the message; keep the message.
	if i := strings.Index(msg, "\nException raised from"); i >= 0 {
		msg = msg[:i]
	}
	return fmt.Errorf("%s", strings.TrimSpace(msg))
}

// ManualSeed seeds libtorch's default CPU generator.
func ManualSeed(seed int64) { C.at_manual_seed(C.int64_t(seed)) }

// GradEnabled reports whether autograd records operations on this thread
// (libtch has no getter: the mode is set and put back).
func GradEnabled() bool {
	prev := gradSetEnabled(0)
	gradSetEnabled(prev)
	return prev != 0
}

// gradSetEnabled wraps libtch's at_grad_set_enabled. gotch's wrapper reads
// the C int result as a Go int (8 bytes), so the upper half is whatever
// was beside it: only the low 32 bits are the previous mode (0, 1, or -1
// on error).
func gradSetEnabled(v int) int {
	return int(int32(lib.AtGradSetEnabled(v)))
}

// SetGradEnabled sets autograd's thread-local grad mode and returns the
// previous mode. Call it on a pinned goroutine (inside a Scope).
func SetGradEnabled(on bool) bool {
	v := 0
	if on {
		v = 1
	}
	return gradSetEnabled(v) == 1
}

// Lowest is the most negative finite value of a floating-point dtype
// (torch.finfo(dt).min): HF's additive attention masks use it.
func Lowest(dt DType) float64 {
	switch dt {
	case BFloat16:
		return -3.3895313892515355e+38
	case Float16:
		return -65504
	case Float64:
		return -math.MaxFloat64
	}
	return -math.MaxFloat32
}

// IsFloat reports whether d is a floating-point dtype.
func (d DType) IsFloat() bool {
	return d == Float32 || d == Float16 || d == BFloat16 || d == Float64
}
