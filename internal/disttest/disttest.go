// Package disttest runs a test's ranks as child processes: it re-executes
// the test binary once per rank with the launcher's environment (RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1, a free MASTER_PORT), for
// the tests of distributed training on loopback.
package disttest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Env is set in the children: a test that finds it set runs its rank's
// part and returns.
const Env = "GOPEFT_DISTTEST_CHILD"

// Child reports whether this process is one of a test's ranks.
func Child() bool { return os.Getenv(Env) != "" }

// Dir is the folder the parent gave the children (for results).
func Dir() string { return os.Getenv(Env) }

// FreePort is a TCP port nothing listens on now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Proc is one rank's process.
type Proc struct {
	Rank int
	Cmd  *exec.Cmd
	out  lockedBuffer
	done chan struct{}
	err  error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Output is what the process printed so far (stdout and stderr).
func (p *Proc) Output() string { return p.out.String() }

// Start runs test (a test of this binary, which acts as the child when
// Env is set) once per rank of a world of n, with dir as the children's
// folder and extra environment entries ("K=V") for every child. The
// children use one libtorch thread each.
func Start(t testing.TB, test, dir string, n int, extra ...string) []*Proc {
	t.Helper()
	return StartArgs(t, []string{"-test.run=^" + test + "$", "-test.v"}, dir, n, extra...)
}

// StartArgs is Start with the test binary's arguments given (a benchmark:
// -test.run=^$ -test.bench=^Name$).
func StartArgs(t testing.TB, args []string, dir string, n int, extra ...string) []*Proc {
	t.Helper()
	port := FreePort(t)
	procs := make([]*Proc, n)
	for r := 0; r < n; r++ {
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), Env+"="+dir, "RANK="+strconv.Itoa(r), "LOCAL_RANK="+strconv.Itoa(r),
			"WORLD_SIZE="+strconv.Itoa(n), "MASTER_ADDR=127.0.0.1", "MASTER_PORT="+strconv.Itoa(port),
			"OMP_NUM_THREADS=1")
		cmd.Env = append(cmd.Env, extra...)
		p := &Proc{Rank: r, Cmd: cmd, done: make(chan struct{})}
		cmd.Stdout, cmd.Stderr = &p.out, &p.out
		if err := cmd.Start(); err != nil {
			for _, q := range procs[:r] {
				q.Cmd.Process.Kill()
			}
			t.Fatal(err)
		}
		go func() { p.err = cmd.Wait(); close(p.done) }()
		procs[r] = p
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.Kill()
		}
	})
	return procs
}

// Wait waits up to timeout for the process; a process still running then
// is killed and reported.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("rank %d still running after %v (killed)", p.Rank, timeout)
	}
}

// Kill sends SIGKILL (no-op once it exited) and waits for the exit.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// WaitAll waits for every rank and fails the test, with each failed
// rank's output, unless all exited 0 within timeout.
func WaitAll(t testing.TB, procs []*Proc, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var failed []string
	for _, p := range procs {
		if err := p.Wait(time.Until(deadline)); err != nil {
			failed = append(failed, fmt.Sprintf("rank %d: %v\n%s", p.Rank, err, tail(p.Output(), 3000)))
		}
	}
	if len(failed) > 0 {
		t.Fatal(strings.Join(failed, "\n"))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
