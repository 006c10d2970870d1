package tensor

// #include <stdlib.h>
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"

	lib "github.com/sugarme/gotch/libtch"
)

// Scope runs tensor ops on one pinned OS thread, owns their results and
// keeps the first error. Use it as
//
//	s := tensor.NewScope()
//	defer s.Close()
//	y := s.Linear(x, w, nil)
//	if err := s.Err(); err != nil { ... }
//
// After an error every further op returns nil without calling libtorch, so
// a block of ops needs one error check at the end.
type Scope struct {
	out    *[8]lib.Ctensor // output slots libtch writes into, in C memory (cgo pointer rules)
	owned  []*T
	err    error
	closed bool
	grad   int    // -1: untouched; else the grad mode to restore on Close
	dev    Device // where creation ops put new tensors (SetDevice)
	vals   []scopeValue
}

type scopeValue struct{ key, val any }

// NewScope pins the calling goroutine to its OS thread until Close.
func NewScope() *Scope {
	runtime.LockOSThread()
	return &Scope{grad: -1, out: newSlots()}
}

// NoGradScope is NewScope with autograd off until Close.
func NoGradScope() *Scope {
	s := NewScope()
	if SetGradEnabled(false) {
		s.grad = 1
	} else {
		s.grad = 0
	}
	return s
}

// Close frees every tensor the scope still owns, restores the grad mode
// and unpins the goroutine. Safe to call twice.
func (s *Scope) Close() {
	if s.closed {
		return
	}
	s.closed = true
	s.FreeAll()
	freeSlots(s.out)
	if s.grad >= 0 {
		SetGradEnabled(s.grad == 1)
	}
	runtime.UnlockOSThread()
}

// SetValue attaches val to the scope under key (nil removes it) and returns
// the value it replaces. Values carry a call's choices to every layer its
// forward reaches (peft's adapter selection) without state shared between
// calls: a scope belongs to one goroutine, so they need no lock.
func (s *Scope) SetValue(key, val any) (prev any) {
	for i, kv := range s.vals {
		if kv.key == key {
			prev = kv.val
			if val == nil {
				s.vals = append(s.vals[:i], s.vals[i+1:]...)
			} else {
				s.vals[i].val = val
			}
			return prev
		}
	}
	if val != nil {
		s.vals = append(s.vals, scopeValue{key, val})
	}
	return nil
}

// Value returns the value attached under key, or nil.
func (s *Scope) Value(key any) any {
	for _, kv := range s.vals {
		if kv.key == key {
			return kv.val
		}
	}
	return nil
}

// FreeAll frees every tensor the scope owns but keeps the scope open (for a
// loop that reuses one scope per step).
func (s *Scope) FreeAll() {
	for _, t := range s.owned {
		t.Free()
	}
	s.owned = s.owned[:0]
}

// Err is the first error of any op in the scope.
func (s *Scope) Err() error { return s.err }

// Fail records err (when it is the first) and returns nil, for code that
// checks inputs inside a chain of ops.
func (s *Scope) Fail(err error) *T {
	if s.err == nil && err != nil {
		s.err = err
	}
	return nil
}

// Failf is Fail with a formatted error.
func (s *Scope) Failf(format string, args ...any) *T {
	return s.Fail(fmt.Errorf(format, args...))
}

// Track makes the scope own t (freed at Close); returns t.
func (s *Scope) Track(t *T) *T {
	if t != nil {
		s.owned = append(s.owned, t)
	}
	return t
}

// Keep removes t from the scope so it outlives Close; the caller owns it.
func (s *Scope) Keep(t *T) *T {
	if t == nil {
		return nil
	}
	for i := len(s.owned) - 1; i >= 0; i-- {
		if s.owned[i] == t {
			s.owned = append(s.owned[:i], s.owned[i+1:]...)
			break
		}
	}
	return t
}

// Owns reports whether the scope owns t (it frees t at Close).
func (s *Scope) Owns(t *T) bool {
	if t == nil {
		return false
	}
	for i := len(s.owned) - 1; i >= 0; i-- {
		if s.owned[i] == t {
			return true
		}
	}
	return false
}

// Drop frees t now if the scope owns it (to lower peak memory in long
// chains); freeing an untracked t is left to its owner.
func (s *Scope) Drop(ts ...*T) {
	for _, t := range ts {
		if t == nil {
			continue
		}
		for i := len(s.owned) - 1; i >= 0; i-- {
			if s.owned[i] == t {
				s.owned = append(s.owned[:i], s.owned[i+1:]...)
				t.Free()
				break
			}
		}
	}
}

// ok reports whether the scope can run an op on these inputs.
func (s *Scope) ok(in ...*T) bool {
	if s.err != nil {
		return false
	}
	for _, t := range in {
		if t == nil || t.c == nil {
			s.err = fmt.Errorf("tensor: op on an undefined tensor")
			return false
		}
	}
	return true
}

// result collects the op's single output from slot 0.
func (s *Scope) result(op string) *T {
	if err := lastErr(); err != nil {
		s.out[0] = nil
		if s.err == nil {
			s.err = fmt.Errorf("%s: %w", op, err)
		}
		return nil
	}
	c := s.out[0]
	s.out[0] = nil
	if c == nil {
		return s.Failf("%s: libtorch returned no tensor", op)
	}
	t := &T{c: c}
	s.owned = append(s.owned, t)
	return t
}

// check records a libtorch error from an op without tensor output.
func (s *Scope) check(op string) bool {
	if err := lastErr(); err != nil {
		if s.err == nil {
			s.err = fmt.Errorf("%s: %w", op, err)
		}
		return false
	}
	return true
}

// ptr is the output slot passed to libtch.
func (s *Scope) ptr() *lib.Ctensor { return &s.out[0] }

func newSlots() *[8]lib.Ctensor {
	return (*[8]lib.Ctensor)(C.calloc(8, C.size_t(unsafe.Sizeof(lib.Ctensor(nil)))))
}

func freeSlots(p *[8]lib.Ctensor) { C.free(unsafe.Pointer(p)) }

// cOf returns t's C pointer or nil for an optional argument.
func cOf(t *T) lib.Ctensor {
	if t == nil {
		return nil
	}
	return t.c
}

func b2i(b bool) int32 {
	if b {
		return 1
	}
	return 0
}
