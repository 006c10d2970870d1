package tensor

// #include <stddef.h>
// #include <stdlib.h>
// #include <stdint.h>
// extern void *at_tensor_of_blob(void *data, int64_t *dims, size_t ndims, int64_t *strides, size_t nstrides, int type, int device);
import "C"

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	lib "github.com/sugarme/gotch/libtch"
)

// Device is where a tensor's memory lives: the CPU (the zero value) or a
// CUDA device by index.
type Device int32

// CPU is the host.
const CPU Device = 0

// CUDA is the n-th CUDA device.
func CUDA(n int) Device { return Device(n + 1) }

// IsCUDA reports whether d is a CUDA device.
func (d Device) IsCUDA() bool { return d > 0 }

// Index is a CUDA device's index (-1 for the CPU).
func (d Device) Index() int { return int(d) - 1 }

// code is libtch's device code: -1 for the CPU, n for cuda:n.
func (d Device) code() int32 { return int32(d) - 1 }

func (d Device) String() string {
	if d.IsCUDA() {
		return fmt.Sprintf("cuda:%d", d.Index())
	}
	return "cpu"
}

// ParseDevice reads "cpu", "cuda" (device 0) or "cuda:N".
func ParseDevice(name string) (Device, error) {
	switch n := strings.ToLower(strings.TrimSpace(name)); {
	case n == "" || n == "cpu":
		return CPU, nil
	case n == "cuda":
		return CUDA(0), nil
	case strings.HasPrefix(n, "cuda:"):
		i, err := strconv.Atoi(n[len("cuda:"):])
		if err != nil || i < 0 {
			return CPU, fmt.Errorf("device %q: want cpu, cuda or cuda:N", name)
		}
		return CUDA(i), nil
	}
	return CPU, fmt.Errorf("device %q: want cpu, cuda or cuda:N", name)
}

// CUDADeviceCount is the number of CUDA devices libtorch sees (0 with a
// CPU-only libtorch).
func CUDADeviceCount() int {
	if !lib.AtcCudaIsAvailable() {
		return 0
	}
	return int(lib.AtcCudaDeviceCount())
}

// CheckDevice reports whether this libtorch can put tensors on d.
func CheckDevice(d Device) error {
	if !d.IsCUDA() {
		return nil
	}
	n := CUDADeviceCount()
	if n == 0 {
		return fmt.Errorf("device %s: this libtorch has no CUDA support or sees no GPU (a CPU build, or no driver); "+
			"install a CUDA build of libtorch and run `LIBTORCH=/path/to/libtorch make setup`", d)
	}
	if d.Index() >= n {
		return fmt.Errorf("device %s: libtorch sees %d CUDA device(s) (cuda:0..cuda:%d)", d, n, n-1)
	}
	return nil
}

// Device is where t lives.
func (t *T) Device() Device {
	if !t.Defined() {
		return CPU
	}
	// gotch reads the C int result as an 8-byte Go int: keep the low 32 bits.
	return Device(int32(lib.AtDevice(t.c)) + 1)
}

// Device is the device the scope's creation ops (Zeros, Arange, …) put
// new tensors on: the CPU unless SetDevice changed it.
func (s *Scope) Device() Device { return s.dev }

// SetDevice makes the scope's creation ops put new tensors on d and returns
// the previous device. A model's forward sets it to the model's device.
func (s *Scope) SetDevice(d Device) Device {
	prev := s.dev
	s.dev = d
	return prev
}

// ToDevice moves t to d (a new handle to t when it is already there).
func (s *Scope) ToDevice(t *T, d Device) *T {
	if !s.ok(t) {
		return nil
	}
	if t.Device() == d {
		return s.Track(t.Clone())
	}
	lib.AtgToDevice(s.ptr(), t.c, d.code(), int32(t.DType()), 0, 0)
	return s.result("to_device")
}

// FromBlob makes a CPU tensor over memory the caller owns (no copy): the
// memory must stay valid, and be writable if anything writes the tensor,
// until every handle to the tensor (and to views of it) is freed. p must be
// aligned to dt's element size.
func (s *Scope) FromBlob(p unsafe.Pointer, dt DType, shape []int64) *T {
	if s.err != nil {
		return nil
	}
	if dt.Size() == 0 {
		return s.Failf("tensor: from_blob: dtype %s has no element size", dt)
	}
	if uintptr(p)%uintptr(dt.Size()) != 0 {
		return s.Failf("tensor: from_blob: address not aligned to %s", dt)
	}
	strides := make([]int64, len(shape))
	st := int64(1)
	for i := len(shape) - 1; i >= 0; i-- {
		strides[i] = st
		st *= shape[i]
	}
	var dims, sts *C.int64_t
	if len(shape) > 0 {
		// C copies of the sizes (cgo: no Go pointers into C that keeps them)
		buf := (*[2 << 20]C.int64_t)(C.malloc(C.size_t(16 * len(shape))))[: 2*len(shape) : 2*len(shape)]
		defer C.free(unsafe.Pointer(&buf[0]))
		for i := range shape {
			buf[i], buf[len(shape)+i] = C.int64_t(shape[i]), C.int64_t(strides[i])
		}
		dims, sts = &buf[0], &buf[len(shape)]
	}
	s.out[0] = lib.Ctensor(C.at_tensor_of_blob(p, dims, C.size_t(len(shape)), sts, C.size_t(len(shape)), C.int(dt), C.int(CPU.code())))
	return s.result("from_blob")
}

// computes caches CanCompute's answers per (dtype, device).
var computes sync.Map

// CanCompute reports whether libtorch can run a model's main kernels
// (matmul, softmax) in dt on d: Debian's libtorch 1.13 has no float16
// matmul on the CPU, for example. The answer is probed once and cached;
// the error quotes libtorch.
func CanCompute(dt DType, d Device) error {
	key := [2]int32{int32(dt), int32(d)}
	if v, ok := computes.Load(key); ok {
		if v == nil {
			return nil
		}
		return v.(error)
	}
	s := NoGradScope()
	defer s.Close()
	s.SetDevice(d)
	a := s.Ones(dt, 2, 3)
	w := s.Ones(dt, 4, 3)
	y := s.Linear(s.To(s.Ones(Float32, 5, 3), dt), w, nil) // more rows than the few-rows kernels take
	s.Matmul(a, s.Transpose(w, 0, 1))
	s.Softmax(y, -1, dt)
	err := s.Err()
	if err != nil {
		err = fmt.Errorf("libtorch cannot compute in %s on %s here (%v)", dt, d, err)
	}
	computes.Store(key, err)
	return err
}
