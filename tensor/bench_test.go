package tensor

// Per-op overhead of one small op, a [1,64] + [1,64] add, three ways:
//
//   - BenchmarkAddOpLayer: this package (a Scope, FreeAll every 1000 ops),
//   - BenchmarkAddLibtch*: gotch's libtch C functions with a caller-owned
//     output slot, freeing each result with AtFree (the floor for any Go
//     binding over libtch),
//   - BenchmarkAddTS*: gotch's ts.Tensor API with del=false.
//
// Run with: go test -run '^$' -bench Add -benchtime 200000x ./tensor/
// The op itself (a 64-float add) takes well under a microsecond: these
// numbers are the cost of a binding's bookkeeping per op.

import (
	"runtime"
	"testing"

	"github.com/sugarme/gotch"
	lib "github.com/sugarme/gotch/libtch"
	"github.com/sugarme/gotch/ts"
)

// BenchmarkAddOpLayer is the op layer as the models use it: every result
// is tracked by the scope, which frees them in batches.
func BenchmarkAddOpLayer(b *testing.B) {
	s := NewScope()
	defer s.Close()
	a := s.Keep(s.Ones(Float32, 1, 64))
	c := s.Keep(s.Ones(Float32, 1, 64))
	defer a.Free()
	defer c.Free()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Add(a, c)
		if i%1000 == 999 {
			s.FreeAll()
		}
	}
	s.FreeAll()
	b.StopTimer()
	if err := s.Err(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAddOpLayerDrop frees each result at once with Drop (the
// pattern for long loops that must not hold intermediates).
func BenchmarkAddOpLayerDrop(b *testing.B) {
	s := NewScope()
	defer s.Close()
	a := s.Keep(s.Ones(Float32, 1, 64))
	c := s.Keep(s.Ones(Float32, 1, 64))
	defer a.Free()
	defer c.Free()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Drop(s.Add(a, c))
	}
	b.StopTimer()
	if err := s.Err(); err != nil {
		b.Fatal(err)
	}
}

// rawInputs makes two [1,64] float32 tensors with libtch directly.
func rawInputs(b *testing.B) (lib.Ctensor, lib.Ctensor) {
	slot := newSlots()
	defer freeSlots(slot)
	lib.AtgOnes(&slot[0], []int64{1, 64}, 2, int32(Float32), cpu)
	a := slot[0]
	lib.AtgOnes(&slot[0], []int64{1, 64}, 2, int32(Float32), cpu)
	c := slot[0]
	if err := lastErr(); err != nil || a == nil || c == nil {
		b.Fatalf("ones: %v", err)
	}
	return a, c
}

// BenchmarkAddLibtchCSlot: libtch with the output slot in C memory, each
// result freed at once, no error check.
func BenchmarkAddLibtchCSlot(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	a, c := rawInputs(b)
	defer lib.AtFree(a)
	defer lib.AtFree(c)
	slot := newSlots()
	defer freeSlots(slot)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lib.AtgAdd(&slot[0], a, c)
		lib.AtFree(slot[0])
	}
	b.StopTimer()
	if err := lastErr(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAddLibtchGoSlot: the same with the slot in a Go array (legal
// under cgo's rules: the array holds only C pointers).
func BenchmarkAddLibtchGoSlot(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	a, c := rawInputs(b)
	defer lib.AtFree(a)
	defer lib.AtFree(c)
	var slot [1]lib.Ctensor
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lib.AtgAdd(&slot[0], a, c)
		lib.AtFree(slot[0])
	}
	b.StopTimer()
	if err := lastErr(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAddLibtchChecked: libtch plus the error read the op layer does
// after every op (libtorch's thread-local last error, a second cgo call).
func BenchmarkAddLibtchChecked(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	a, c := rawInputs(b)
	defer lib.AtFree(a)
	defer lib.AtFree(c)
	slot := newSlots()
	defer freeSlots(slot)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lib.AtgAdd(&slot[0], a, c)
		if err := lastErr(); err != nil {
			b.Fatal(err)
		}
		lib.AtFree(slot[0])
	}
}

func tsInputs(b *testing.B) (*ts.Tensor, *ts.Tensor) {
	a, err := ts.Ones([]int64{1, 64}, gotch.Float, gotch.CPU)
	if err != nil {
		b.Fatal(err)
	}
	c, err := ts.Ones([]int64{1, 64}, gotch.Float, gotch.CPU)
	if err != nil {
		b.Fatal(err)
	}
	return a, c
}

// BenchmarkAddTSDrop: gotch's ts API, each result freed with MustDrop.
func BenchmarkAddTSDrop(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	a, c := tsInputs(b)
	defer a.MustDrop()
	defer c.MustDrop()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		y, err := a.Add(c, false)
		if err != nil {
			b.Fatal(err)
		}
		y.MustDrop()
	}
}

// BenchmarkAddTSNoDrop: gotch's ts API with results left to the finalizer
// (each handle's 100 KB Go struct makes the GC run often).
func BenchmarkAddTSNoDrop(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	a, c := tsInputs(b)
	defer a.MustDrop()
	defer c.MustDrop()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := a.Add(c, false); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.GC()
}
