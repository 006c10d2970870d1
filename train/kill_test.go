package train

import (
	"github.com/gopeft/peft/internal/killtest"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/stretchr/testify/require"
)

// checkpointKillChild is TestCheckpointsSurviveKill in its child process:
// it trains with a checkpoint every step into dir, resuming from the latest
// checkpoint there, until killed.
func checkpointKillChild(t *testing.T, dir string) {
	cfg := Config{LR: 1e-3, BatchSize: 2, MaxSteps: 100000, Seed: 1, SaveSteps: 1, OutputDir: dir, Progress: io.Discard}
	if _, err := LatestCheckpoint(dir); err == nil {
		cfg.ResumeFrom = "latest"
	}
	tr := New(tinyLoRA(t, 0, 1), cfg)
	killtest.Ready(dir)
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
	if dir := os.Getenv(killtest.Env); dir != "" {
		checkpointKillChild(t, dir)
		return
	}
	_, err := os.Stat(tinyDir)
	require.NoError(t, err, "golden fixtures expected at testdata/hf")
	dir := t.TempDir()
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for k := 0; k < 5; k++ {
		killtest.Run(t, "TestCheckpointsSurviveKill", dir, rng, 50, 400)
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
