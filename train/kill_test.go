package train

import (
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/stretchr/testify/require"
)

// TestCheckpointKillChild is the child of TestCheckpointsSurviveKill: it
// trains with a checkpoint every step into $GOPEFT_KILL_DIR, resuming from
// the latest checkpoint there, until killed.
func TestCheckpointKillChild(t *testing.T) {
	dir := os.Getenv("GOPEFT_KILL_DIR")
	if dir == "" {
		t.Skip("child of TestCheckpointsSurviveKill")
	}
	cfg := Config{LR: 1e-3, BatchSize: 2, MaxSteps: 100000, Seed: 1, SaveSteps: 1, OutputDir: dir, Progress: io.Discard}
	if _, err := LatestCheckpoint(dir); err == nil {
		cfg.ResumeFrom = "latest"
	}
	tr := New(tinyLoRA(t, 0, 1), cfg)
	os.WriteFile(filepath.Join(dir, "ready"), nil, 0o644)
	require.NoError(t, tr.Fit(copyTask(t, 8, 0), nil))
}

// requireCompleteCheckpoint asserts dir is a whole checkpoint: its state,
// parameters, optimizer state and adapter all read.
func requireCompleteCheckpoint(t *testing.T, dir string) {
	st, err := ReadState(dir)
	require.NoError(t, err, dir)
	require.Positive(t, st.Step)
	for _, f := range []string{ParamsFile, OptimizerFile} {
		set, err := safetensors.OpenFiles(filepath.Join(dir, f))
		require.NoError(t, err, dir)
		set.Close()
	}
	base, err := llama.Load(tinyDir)
	require.NoError(t, err)
	defer base.Free()
	_, err = peft.Load(base, dir)
	require.NoError(t, err, dir)
}

// Issue #19 item 3, checkpoints: a training process writing a checkpoint
// every step is killed at random points; after each kill every
// checkpoint-<step> folder is complete, no temporary folder survives the
// next resume, and the run resumes from the latest checkpoint.
func TestCheckpointsSurviveKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	if _, err := os.Stat(tinyDir); err != nil {
		t.Skip("fixtures not found")
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for k := 0; k < 5; k++ {
		os.Remove(filepath.Join(dir, "ready"))
		cmd := exec.Command(os.Args[0], "-test.run=^TestCheckpointKillChild$")
		cmd.Env = append(os.Environ(), "GOPEFT_KILL_DIR="+dir)
		require.NoError(t, cmd.Start())
		deadline := time.Now().Add(60 * time.Second)
		for {
			if _, err := os.Stat(filepath.Join(dir, "ready")); err == nil {
				break
			}
			require.True(t, time.Now().Before(deadline), "child never got ready")
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(50+rng.Intn(400)) * time.Millisecond)
		require.NoError(t, cmd.Process.Kill())
		cmd.Wait()
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), checkpointPfx) {
				requireCompleteCheckpoint(t, filepath.Join(dir, e.Name()))
			}
		}
	}
	latest, err := LatestCheckpoint(dir)
	require.NoError(t, err)
	requireCompleteCheckpoint(t, latest)
	t.Logf("latest after 5 kills: %s", filepath.Base(latest))
	cleanCheckpoints(dir)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		require.False(t, strings.HasPrefix(e.Name(), "."), "left behind: %s", e.Name())
	}
}

// The in-between state of a same-step save, made on purpose: the old
// checkpoint moved aside, the new one not yet renamed into place.
// LatestCheckpoint finds the aside copy; the next save or resume puts it
// back, or removes it when its replacement arrived.
func TestCheckpointAsideState(t *testing.T) {
	out := t.TempDir()
	fit(t, tinyLoRA(t, 0, 1), Config{LR: 1e-3, BatchSize: 2, MaxSteps: 2, Seed: 1, SaveSteps: 1, OutputDir: out}, 4, 0)
	c2 := filepath.Join(out, "checkpoint-2")
	require.NoError(t, os.Rename(c2, filepath.Join(out, ".old-checkpoint-2")))
	require.NoError(t, os.Mkdir(filepath.Join(out, ".tmp-checkpoint-123"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(out, ".metrics.jsonl.tmp456"), nil, 0o644))
	latest, err := LatestCheckpoint(out)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(out, ".old-checkpoint-2"), latest)
	requireCompleteCheckpoint(t, latest)
	cleanCheckpoints(out)
	latest, err = LatestCheckpoint(out)
	require.NoError(t, err)
	require.Equal(t, c2, latest)
	for _, f := range []string{".tmp-checkpoint-123", ".metrics.jsonl.tmp456"} {
		_, err = os.Stat(filepath.Join(out, f))
		require.ErrorIs(t, err, os.ErrNotExist, f)
	}
	// a second run into the same folder saves over checkpoint-1 and -2
	// (moved aside, replaced, removed): one folder of each step is left
	fit(t, tinyLoRA(t, 0, 1), Config{LR: 1e-3, BatchSize: 2, MaxSteps: 2, Seed: 1, SaveSteps: 1, OutputDir: out}, 4, 0)
	entries, err := os.ReadDir(out)
	require.NoError(t, err)
	for _, e := range entries {
		require.False(t, strings.HasPrefix(e.Name(), "."), "left behind: %s", e.Name())
	}
	requireCompleteCheckpoint(t, c2)
}
