// Package killtest runs a test's child process and kills it (SIGKILL) at a
// random point, for the tests that prove saves survive a kill.
package killtest

import (
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Env names the folder the child works in; a test that finds it set is
// the child.
const Env = "GOPEFT_KILL_DIR"

// Run starts this test binary running test (the same test, which acts as
// the child when Env is set) with Env=dir, waits until the child has
// written dir/ready, lets it run between minMS and minMS+spanMS
// milliseconds more, and kills it.
func Run(t *testing.T, test, dir string, rng *rand.Rand, minMS, spanMS int) {
	t.Helper()
	os.Remove(filepath.Join(dir, "ready"))
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$")
	cmd.Env = append(os.Environ(), Env+"="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "ready")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("child never got ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(time.Duration(minMS+rng.Intn(spanMS)) * time.Millisecond)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
}

// Ready marks the child ready to be killed.
func Ready(dir string) { os.WriteFile(filepath.Join(dir, "ready"), nil, 0o644) }
