package dist

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gopeft/peft/internal/disttest"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// Every collective on 2 processes over loopback with Gloo; rank r
// contributes values built from r+1, so the expected results are sums
// worked out by hand.
func TestCollectives(t *testing.T) {
	if disttest.Child() {
		collectivesChild(t)
		return
	}
	procs := disttest.Start(t, "TestCollectives", t.TempDir(), 2, "GOPEFT_DIST_TIMEOUT=60s")
	disttest.WaitAll(t, procs, 3*time.Minute)
}

func collectivesChild(t *testing.T) {
	g, err := Default(Options{})
	require.NoError(t, err)
	require.NotNil(t, g)
	defer g.Close()
	r := g.Rank()
	require.Equal(t, os.Getenv("RANK"), strconv.Itoa(r))
	require.Equal(t, 2, g.WorldSize())
	require.Equal(t, Gloo, g.Backend())
	again, err := Default(Options{})
	require.NoError(t, err)
	require.Same(t, g, again)
	v := float32(r + 1) // 1 on rank 0, 2 on rank 1

	s := tensor.NoGradScope()
	defer s.Close()
	a := s.FromFloat32([]float32{v, 2 * v, -v}, 3)
	b := s.FromFloat32([]float32{v, 10 * v}, 2)
	require.NoError(t, g.AllReduce(Sum, a, b))
	require.Equal(t, []float32{3, 6, -3}, s.Float32s(a))
	require.Equal(t, []float32{3, 30}, s.Float32s(b))

	avg := s.FromFloat32([]float32{v, 4 * v}, 2)
	require.NoError(t, g.AllReduce(Avg, avg))
	require.Equal(t, []float32{1.5, 6}, s.Float32s(avg))
	mx := s.FromFloat32([]float32{v, -v}, 2)
	require.NoError(t, g.AllReduce(Max, mx))
	require.Equal(t, []float32{2, -1}, s.Float32s(mx))
	mn := s.FromFloat32([]float32{v, -v}, 2)
	require.NoError(t, g.AllReduce(Min, mn))
	require.Equal(t, []float32{1, -2}, s.Float32s(mn))

	// a non-contiguous view is reduced into place
	base := s.FromFloat32([]float32{v, 2 * v, 3 * v, 4 * v, 5 * v, 6 * v}, 2, 3)
	tr := s.Transpose(base, 0, 1)
	require.NoError(t, g.AllReduce(Sum, tr))
	require.Equal(t, []float32{3, 6, 9, 12, 15, 18}, s.Float32s(base))

	// broadcast from rank 1
	bc := s.FromFloat32([]float32{v, v * v}, 2)
	require.NoError(t, g.Broadcast(1, bc))
	require.Equal(t, []float32{2, 4}, s.Float32s(bc))

	// coalesced: mixed dtypes, 8-byte buckets (one tensor per bucket)
	f32 := s.FromFloat32([]float32{v, 2 * v, 3 * v}, 3)
	f64 := s.To(s.FromFloat32([]float32{v, 0.5 * v}, 2), tensor.Float64)
	bf := s.To(s.FromFloat32([]float32{v, 8 * v, 16 * v, -v}, 4), tensor.BFloat16)
	i64 := s.FromInt64([]int64{int64(r + 1), 100}, 2)
	require.NoError(t, s.Err())
	require.NoError(t, g.AllReduceCoalesced(Sum, 8, f32, f64, bf, i64))
	require.Equal(t, []float32{3, 6, 9}, s.Float32s(f32))
	require.Equal(t, []float32{3, 1.5}, s.Float32s(f64))
	require.Equal(t, tensor.BFloat16, bf.DType())
	require.Equal(t, []float32{3, 24, 48, -3}, s.Float32s(bf))
	require.Equal(t, []int64{3, 200}, s.Int64s(i64))
	// and one bucket for all (default size)
	c1 := s.FromFloat32([]float32{v}, 1)
	c2 := s.FromFloat32([]float32{v, v}, 2)
	require.NoError(t, g.AllReduceCoalesced(Avg, 0, c1, c2))
	require.Equal(t, []float32{1.5}, s.Float32s(c1))
	require.Equal(t, []float32{1.5, 1.5}, s.Float32s(c2))

	// gradients: rank 0 has one for p (c = 2, 6), rank 1 none: both end
	// with the average (1, 3); q has a gradient on both ranks
	p := s.FromFloat32([]float32{1, 1}, 2)
	q := s.FromFloat32([]float32{1}, 1)
	s.SetRequiresGrad(p, true)
	s.SetRequiresGrad(q, true)
	func() {
		gs := tensor.NewScope()
		defer gs.Close()
		tensor.SetGradEnabled(true)
		loss := gs.Sum(gs.MulScalar(q, float64(v)), false)
		if r == 0 {
			loss = gs.Add(loss, gs.Sum(gs.Mul(p, gs.FromFloat32([]float32{2, 6}, 2)), false))
		}
		gs.Backward(loss)
		require.NoError(t, gs.Err())
	}()
	if r == 1 {
		require.Nil(t, s.Grad(p))
	}
	require.NoError(t, g.AllReduceGrads(Avg, 0, p, q))
	require.Equal(t, []float32{1, 3}, s.Float32s(s.Grad(p)))
	require.Equal(t, []float32{1.5}, s.Float32s(s.Grad(q)))
	require.ErrorContains(t, g.AllReduceGrads(Sum, 0, a), "does not require grad")

	// float64 values keep float64 precision
	eps := math.Ldexp(1, -40)
	got, err := g.AllReduceFloat64s(Sum, 1+eps*float64(r+1), float64(r))
	require.NoError(t, err)
	require.Equal(t, []float64{2 + 3*eps, 1}, got)

	// errors found before any communication leave the group usable
	require.ErrorContains(t, g.AllReduce(Avg, s.FromInt64([]int64{1}, 1)), "not floating-point")
	require.ErrorContains(t, g.Broadcast(2, a), "root 2 is not a rank")
	require.ErrorContains(t, g.AllReduce(ReduceOp(9), a), "unknown reduce op")
	require.NoError(t, g.Barrier())
	require.NoError(t, s.Err())
}

// A rank killed in the middle of a run: the other's next collective
// returns an error (no hang, no abort) well within the timeout, and the
// group refuses every later collective.
func TestPeerKilledIsAnError(t *testing.T) {
	if disttest.Child() {
		peerKilledChild(t)
		return
	}
	dir := t.TempDir()
	procs := disttest.Start(t, "TestPeerKilledIsAnError", dir, 2, "GOPEFT_DIST_TIMEOUT=30s")
	require.NoError(t, procs[0].Wait(2*time.Minute), procs[0].Output())
	err := procs[1].Wait(time.Minute)
	require.Error(t, err, "rank 1 was to kill itself")
	msg, err := os.ReadFile(filepath.Join(dir, "rank0-error"))
	require.NoError(t, err, procs[0].Output())
	t.Logf("rank 0's error: %s", msg)
	require.Contains(t, string(msg), "rank 0 of 2: all_reduce(sum)")
	require.Contains(t, string(msg), "another rank's process has died")
}

func peerKilledChild(t *testing.T) {
	g, err := Default(Options{})
	require.NoError(t, err)
	require.NoError(t, g.Barrier())
	if g.Rank() == 1 {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	s := tensor.NoGradScope()
	defer s.Close()
	x := s.FromFloat32([]float32{1, 2}, 2)
	start := time.Now()
	err = nil
	for i := 0; i < 100 && err == nil; i++ { // until the peer is gone
		err = g.AllReduce(Sum, x)
	}
	require.Error(t, err)
	require.Less(t, time.Since(start), g.Timeout()+5*time.Second)
	require.NoError(t, os.WriteFile(filepath.Join(disttest.Dir(), "rank0-error"), []byte(err.Error()), 0o644))
	err = g.Barrier()
	require.ErrorIs(t, err, ErrBroken)
	require.NoError(t, g.Close()) // leaving a failed group returns
}

// Rank 0 alone in a world of 2: the rendezvous gives up after the timeout
// with an error naming the rank and the store.
func TestRendezvousTimeout(t *testing.T) {
	if disttest.Child() {
		start := time.Now()
		_, err := Default(Options{Timeout: 2 * time.Second})
		require.Error(t, err)
		require.Contains(t, err.Error(), "rank 0 of 2: joining the gloo group at 127.0.0.1:")
		require.Less(t, time.Since(start), 30*time.Second)
		return
	}
	procs := disttest.Start(t, "TestRendezvousTimeout", t.TempDir(), 1, "WORLD_SIZE=2")
	disttest.WaitAll(t, procs, 2*time.Minute)
}

func TestReadEnv(t *testing.T) {
	for _, k := range []string{"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
		"TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT", "GLOO_SOCKET_IFNAME"} {
		t.Setenv(k, "")
	}
	e, err := ReadEnv()
	require.NoError(t, err)
	require.False(t, e.Distributed())
	g, err := Default(Options{})
	require.NoError(t, err)
	require.Nil(t, g)

	t.Setenv("WORLD_SIZE", "4")
	t.Setenv("RANK", "3")
	t.Setenv("LOCAL_RANK", "1")
	t.Setenv("MASTER_ADDR", "10.0.0.7")
	t.Setenv("MASTER_PORT", "29400")
	t.Setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
	t.Setenv("TORCHELASTIC_RESTART_COUNT", "2")
	e, err = ReadEnv()
	require.NoError(t, err)
	require.Equal(t, Env{MasterAddr: "10.0.0.7", MasterPort: 29400, Rank: 3, WorldSize: 4, LocalRank: 1,
		AgentStore: true, RestartCount: 2}, e)
	require.Equal(t, "", e.glooHost())
	e.MasterAddr = "localhost"
	require.Equal(t, "127.0.0.1", e.glooHost())

	bad := map[string][2]string{
		"RANK=4":         {"RANK", "4"},
		"RANK=x":         {"RANK", "x"},
		"MASTER_PORT=0":  {"MASTER_PORT", "0"},
		"MASTER_PORT=ab": {"MASTER_PORT", "ab"},
		"MASTER_ADDR=":   {"MASTER_ADDR", ""},
		"WORLD_SIZE=-1":  {"WORLD_SIZE", "-1"},
	}
	for name, kv := range bad {
		t.Run(name, func(t *testing.T) {
			t.Setenv(kv[0], kv[1])
			_, err := ReadEnv()
			require.Error(t, err)
			require.Contains(t, err.Error(), kv[0])
		})
	}
	t.Setenv("GOPEFT_DIST_TIMEOUT", "soon")
	_, err = Init(e, Options{})
	require.ErrorContains(t, err, "GOPEFT_DIST_TIMEOUT")
	_, err = Init(e, Options{Backend: "mpi", Timeout: time.Second})
	require.ErrorContains(t, err, `unknown backend "mpi"`)
	if !ncclAvailable() {
		_, err = Init(e, Options{Device: tensor.CUDA(0), Timeout: time.Second})
		require.ErrorContains(t, err, "this build has no NCCL")
	}
}

// A rank that stalls (alive, but never reaching the collective): the
// other's all-reduce gives up after the timeout with an error saying so.
func TestCollectiveTimeout(t *testing.T) {
	if disttest.Child() {
		g, err := Default(Options{Timeout: 3 * time.Second})
		require.NoError(t, err)
		if g.Rank() == 1 {
			time.Sleep(8 * time.Second)
			return
		}
		s := tensor.NoGradScope()
		defer s.Close()
		start := time.Now()
		err = g.AllReduce(Sum, s.FromFloat32([]float32{1}, 1))
		require.Error(t, err)
		took := time.Since(start)
		require.GreaterOrEqual(t, took, 2*time.Second)
		require.Less(t, took, 7*time.Second) // before rank 1 wakes
		require.Contains(t, err.Error(), "within the timeout")
		require.NoError(t, os.WriteFile(filepath.Join(disttest.Dir(), "error"), []byte(err.Error()), 0o644))
		return
	}
	dir := t.TempDir()
	procs := disttest.Start(t, "TestCollectiveTimeout", dir, 2)
	disttest.WaitAll(t, procs, 2*time.Minute)
	msg, err := os.ReadFile(filepath.Join(dir, "error"))
	require.NoError(t, err)
	t.Logf("rank 0: %s", msg)
}
