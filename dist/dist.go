// Package dist runs data-parallel training across processes on libtorch's
// own distributed engine, c10d: the processes meet through c10d's TCPStore
// (MASTER_ADDR:MASTER_PORT, served by rank 0 or by the launcher), form a
// process group (Gloo for CPU tensors, NCCL for CUDA tensors when the
// library is built with -tags nccl against a CUDA libtorch), and run
// collectives on the library's tensors: all-reduce (sum, average, min,
// max), a bucketed all-reduce of many tensors or of their gradients,
// broadcast and barrier.
//
// The environment is torchrun's (RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT), so a Go program runs unchanged under
// `torchrun --no-python`, under `peft train --nproc N`, or started by hand
// on several machines. train.Trainer uses the process-wide group of
// Default when WORLD_SIZE > 1.
//
// Failures (a peer that dies, a timeout, a bad tensor) come back as Go
// errors; the C++ exceptions never reach Go, and a group that failed once
// refuses further collectives (ErrBroken) instead of hanging.
//
// Build: the shim (shim.cc) compiles against the libtorch headers in
// /usr/include (Debian's libtorch-dev) and Gloo's (libgloo-dev; make setup
// installs both) and links libtorch_cpu. With another libtorch
// (LIBTORCH=...), point the compiler at its headers:
// CGO_CXXFLAGS="-I$LIBTORCH/include" (Gloo's headers too, if it lacks them).
package dist

// #cgo CXXFLAGS: -std=c++17 -O2 -Wno-deprecated-declarations -Wno-unused-parameter
// #cgo LDFLAGS: -ltorch_cpu -lc10 -lstdc++
// #include <stdlib.h>
// #include "shim.h"
import "C"

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/gopeft/peft/tensor"
)

// Backend names a c10d process-group backend.
type Backend string

const (
	// Gloo is c10d's CPU backend (in every libtorch, Debian's included).
	Gloo Backend = "gloo"
	// NCCL is c10d's CUDA backend; it needs a CUDA libtorch and a build
	// with -tags nccl (not verified on this project's CPU-only machines).
	NCCL Backend = "nccl"
)

// ReduceOp is how an all-reduce combines the ranks' values.
type ReduceOp int

const (
	Sum ReduceOp = iota // element-wise sum
	Avg                 // element-wise mean over the ranks
	Min                 // element-wise minimum
	Max                 // element-wise maximum
)

func (op ReduceOp) String() string {
	switch op {
	case Sum:
		return "sum"
	case Avg:
		return "avg"
	case Min:
		return "min"
	case Max:
		return "max"
	}
	return fmt.Sprintf("ReduceOp(%d)", int(op))
}

// DefaultTimeout is c10d's default for the rendezvous and each collective
// (torch.distributed's 30 minutes); GOPEFT_DIST_TIMEOUT (a Go duration,
// e.g. "90s") or Options.Timeout changes it.
const DefaultTimeout = 30 * time.Minute

// DefaultBucketBytes is the size of the flat buffers of the bucketed
// all-reduce (PyTorch DDP's bucket_cap_mb = 25).
const DefaultBucketBytes = 25 << 20

// ErrBroken is returned by every collective of a group after one failed:
// the ranks no longer agree on what runs next.
var ErrBroken = errors.New("dist: the process group failed earlier")

// Options are a group's settings; zero values take the defaults. A plain
// value, safe to share.
type Options struct {
	// Backend [Gloo, or NCCL when Device is CUDA].
	Backend Backend
	// Device is where the tensors the group reduces live [CPU].
	Device tensor.Device
	// Timeout bounds the rendezvous and every collective
	// [GOPEFT_DIST_TIMEOUT, else DefaultTimeout].
	Timeout time.Duration
}

// Group is one process's membership of a c10d process group. It is safe
// for concurrent use (calls are serialized), but every rank must call the
// same collectives in the same order, so a group is normally used from one
// goroutine.
type Group struct {
	mu      sync.Mutex
	c       *C.gp_group
	env     Env
	backend Backend
	device  tensor.Device
	timeout time.Duration
	broken  error
}

// catchSIGPIPE keeps a dead peer from killing this process: Gloo's threads
// (not Go's) write to the peer's socket, and a SIGPIPE raised there would
// end the process with the signal's default action before the collective
// could report "another rank's process has died". With SIGPIPE caught
// (os/signal.Notify), such a write fails with EPIPE, which Gloo turns into
// the error Init's group returns. The catch is process-wide: once a group
// exists, a write to a closed stdout also fails with EPIPE instead of
// ending the process.
var catchSIGPIPE = sync.OnceFunc(func() {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
})

var generation struct {
	sync.Mutex
	n int
}

// Init joins the process group that env describes: it meets the other
// ranks through the TCPStore at env.MasterAddr:env.MasterPort (served by
// rank 0, or by the launcher when env.AgentStore) and connects the
// backend. It blocks until every rank has joined or the timeout passes.
// Every rank must call Init the same number of times in the same order.
func Init(env Env, opts Options) (*Group, error) {
	if err := env.Validate(); err != nil {
		return nil, err
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		var err error
		if timeout, err = timeoutFromEnv(); err != nil {
			return nil, err
		}
	}
	backend := opts.Backend
	if backend == "" {
		backend = Gloo
		if opts.Device.IsCUDA() {
			backend = NCCL
		}
	}
	var code C.int
	switch backend {
	case Gloo:
		code = C.GP_GLOO
	case NCCL:
		code = C.GP_NCCL
		if !ncclAvailable() {
			return nil, fmt.Errorf("dist: backend %q: this build has no NCCL (build with -tags nccl against a CUDA libtorch; Debian's libtorch is CPU-only)", backend)
		}
	default:
		return nil, fmt.Errorf("dist: unknown backend %q (gloo or nccl)", backend)
	}
	catchSIGPIPE()
	generation.Lock()
	gen := generation.n
	generation.n++
	generation.Unlock()
	prefix := fmt.Sprintf("gopeft_%d/", gen)
	if env.AgentStore {
		// torch.distributed's prefix for workers of a torchrun agent
		prefix = fmt.Sprintf("/worker/attempt_%d/%s", env.RestartCount, prefix)
	}
	cstr := func(s string) *C.char { return C.CString(s) }
	o := C.gp_init_opts{
		host:        cstr(env.MasterAddr),
		port:        C.int(env.MasterPort),
		rank:        C.int(env.Rank),
		world:       C.int(env.WorldSize),
		prefix:      cstr(prefix),
		backend:     code,
		timeout_ms:  C.int64_t(timeout.Milliseconds()),
		gloo_host:   cstr(env.glooHost()),
		gloo_iface:  cstr(env.GlooInterface),
		agent_store: 0,
	}
	if env.AgentStore {
		o.agent_store = 1
	}
	defer func() {
		C.free(unsafe.Pointer(o.host))
		C.free(unsafe.Pointer(o.prefix))
		C.free(unsafe.Pointer(o.gloo_host))
		C.free(unsafe.Pointer(o.gloo_iface))
	}()
	var cerr *C.char
	c := C.gp_init(&o, &cerr)
	if c == nil {
		return nil, fmt.Errorf("dist: rank %d of %d: joining the %s group at %s:%d: %s", env.Rank, env.WorldSize, backend, env.MasterAddr, env.MasterPort, takeErr(cerr))
	}
	g := &Group{c: c, env: env, backend: backend, device: opts.Device, timeout: timeout}
	runtime.SetFinalizer(g, func(g *Group) { g.Close() })
	return g, nil
}

// peerHint explains Gloo's transport errors.
func peerHint(msg string) string {
	for _, s := range []string{"Connection reset by peer", "Connection closed by peer", "Broken pipe"} {
		if strings.Contains(msg, s) {
			return "another rank's process has died or left the group"
		}
	}
	if strings.Contains(msg, "Timed out") || strings.Contains(msg, "timed out") || strings.Contains(msg, "Timeout") {
		return "another rank did not reach this collective within the timeout (Options.Timeout, GOPEFT_DIST_TIMEOUT; ddp_timeout in peft train)"
	}
	return ""
}

func takeErr(p *C.char) string {
	if p == nil {
		return "unknown error"
	}
	defer C.free(unsafe.Pointer(p))
	return C.GoString(p)
}

// Rank is this process's rank, 0 … WorldSize-1.
func (g *Group) Rank() int { return g.env.Rank }

// WorldSize is the number of processes in the group.
func (g *Group) WorldSize() int { return g.env.WorldSize }

// LocalRank is this process's rank on its machine (the CUDA device index
// it should use).
func (g *Group) LocalRank() int { return g.env.LocalRank }

// Backend is the group's backend.
func (g *Group) Backend() Backend { return g.backend }

// Timeout is the bound on every collective.
func (g *Group) Timeout() time.Duration { return g.timeout }

// call runs one collective under the lock, marking the group broken when it fails.
func (g *Group) call(what string, f func(errp **C.char) C.int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.c == nil {
		return fmt.Errorf("dist: %s on a closed group", what)
	}
	if g.broken != nil {
		return fmt.Errorf("%w (%v)", ErrBroken, g.broken)
	}
	var cerr *C.char
	if f(&cerr) != 0 {
		msg := takeErr(cerr)
		if hint := peerHint(msg); hint != "" {
			msg += " (" + hint + ")"
		}
		g.broken = fmt.Errorf("dist: rank %d of %d: %s: %s", g.env.Rank, g.env.WorldSize, what, msg)
		return g.broken
	}
	return nil
}

// cArray copies the tensors' C handles into C memory (freed by the caller).
func cArray(ts []*tensor.T) (unsafe.Pointer, error) {
	p := C.malloc(C.size_t(len(ts)+1) * C.size_t(unsafe.Sizeof(uintptr(0))))
	arr := unsafe.Slice((*unsafe.Pointer)(p), len(ts)+1)
	for i, t := range ts {
		if !t.Defined() {
			C.free(p)
			return nil, fmt.Errorf("dist: tensor %d is undefined", i)
		}
		arr[i] = unsafe.Pointer(t.C())
	}
	return p, nil
}

func (g *Group) withTensors(what string, ts []*tensor.T, f func(arr unsafe.Pointer, n C.int, errp **C.char) C.int) error {
	if len(ts) == 0 {
		return nil
	}
	arr, err := cArray(ts)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer C.free(arr)
	return g.call(what, func(errp **C.char) C.int { return f(arr, C.int(len(ts)), errp) })
}

// AllReduce combines each tensor across the ranks in place (one c10d
// all-reduce per tensor; every rank passes tensors of the same shapes and
// dtypes in the same order). Avg needs floating-point tensors.
func (g *Group) AllReduce(op ReduceOp, ts ...*tensor.T) error {
	if err := checkOp(op, ts, false); err != nil {
		return err
	}
	return g.withTensors("all_reduce("+op.String()+")", ts, func(arr unsafe.Pointer, n C.int, errp **C.char) C.int {
		return C.gp_allreduce(g.c, (*unsafe.Pointer)(arr), n, C.int(op), errp)
	})
}

// AllReduceCoalesced is AllReduce through flat buffers of at most
// bucketBytes (≤ 0: DefaultBucketBytes): the tensors are flattened into a
// few buckets per device (floating-point ones as float32, float64 as
// float64), each bucket is one all-reduce, and the results are copied
// back. Far fewer collectives than AllReduce for many small tensors.
func (g *Group) AllReduceCoalesced(op ReduceOp, bucketBytes int64, ts ...*tensor.T) error {
	return g.coalesced("all_reduce_coalesced", op, bucketBytes, false, ts)
}

// AllReduceGrads is AllReduceCoalesced over the gradients of params (leaf
// tensors that require grad); a parameter without a gradient on this rank
// takes part with zeros and has the reduced gradient after.
func (g *Group) AllReduceGrads(op ReduceOp, bucketBytes int64, params ...*tensor.T) error {
	return g.coalesced("all_reduce_grads", op, bucketBytes, true, params)
}

func (g *Group) coalesced(what string, op ReduceOp, bucketBytes int64, grads bool, ts []*tensor.T) error {
	if err := checkOp(op, ts, grads); err != nil {
		return err
	}
	if bucketBytes <= 0 {
		bucketBytes = DefaultBucketBytes
	}
	return g.withTensors(what+"("+op.String()+")", ts, func(arr unsafe.Pointer, n C.int, errp **C.char) C.int {
		return C.gp_allreduce_coalesced(g.c, (*unsafe.Pointer)(arr), n, C.int(op), C.int64_t(bucketBytes), C.int(b2i(grads)), errp)
	})
}

// Broadcast copies root's tensors into every other rank's, in place.
func (g *Group) Broadcast(root int, ts ...*tensor.T) error {
	if root < 0 || root >= g.env.WorldSize {
		return fmt.Errorf("dist: broadcast: root %d is not a rank of %d", root, g.env.WorldSize)
	}
	return g.withTensors(fmt.Sprintf("broadcast(root %d)", root), ts, func(arr unsafe.Pointer, n C.int, errp **C.char) C.int {
		return C.gp_broadcast(g.c, (*unsafe.Pointer)(arr), n, C.int(root), errp)
	})
}

// Barrier returns when every rank has reached it.
func (g *Group) Barrier() error {
	return g.call("barrier", func(errp **C.char) C.int { return C.gp_barrier(g.c, errp) })
}

// AllReduceFloat64s all-reduces a few numbers (metrics, counts) and
// returns the result, through a float64 tensor on the group's device
// (Options.Device).
func (g *Group) AllReduceFloat64s(op ReduceOp, vals ...float64) ([]float64, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	s := tensor.NoGradScope()
	defer s.Close()
	s.SetDevice(g.device)
	in := append([]float64(nil), vals...)
	t := s.FromBytes(tensor.Float64, []int64{int64(len(in))}, unsafe.Slice((*byte)(unsafe.Pointer(&in[0])), 8*len(in)))
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("dist: %w", err)
	}
	if err := g.AllReduce(op, t); err != nil {
		return nil, err
	}
	if g.device.IsCUDA() {
		t = s.ToDevice(t, tensor.CPU)
	}
	b := s.Bytes(t)
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("dist: %w", err)
	}
	out := make([]float64, len(vals))
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&out[0])), 8*len(out)), b)
	return out, nil
}

// Close leaves the group: it releases the backend and the store (rank 0's
// TCPStore server stops). Closing the Default group makes the next
// Default call join a new one. Safe to call twice.
func (g *Group) Close() error {
	g.mu.Lock()
	if g.c != nil {
		C.gp_free(g.c)
		g.c = nil
	}
	g.mu.Unlock()
	def.Lock()
	if def.g == g {
		def.g = nil
	}
	def.Unlock()
	return nil
}

func checkOp(op ReduceOp, ts []*tensor.T, grads bool) error {
	if op < Sum || op > Max {
		return fmt.Errorf("dist: unknown reduce op %d", int(op))
	}
	if op == Avg {
		for i, t := range ts {
			if t.Defined() && !t.DType().IsFloat() {
				return fmt.Errorf("dist: all_reduce(avg): tensor %d is %s, not floating-point", i, t.DType())
			}
		}
	}
	if grads {
		for i, t := range ts {
			if t.Defined() && !t.RequiresGrad() {
				return fmt.Errorf("dist: all_reduce_grads: tensor %d does not require grad", i)
			}
		}
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ncclAvailable reports whether this build has the NCCL backend.
func ncclAvailable() bool { return C.gp_nccl_available() != 0 }
