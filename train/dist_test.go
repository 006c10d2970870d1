package train

import (
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gopeft/peft/internal/disttest"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// dpConfig is the data-parallel test's run: 9 samples, per-rank batch
// perRank, 2 micro-batches per step, 4 steps (two epochs; the last global
// micro-batch of an epoch holds one sample, so one rank has none), an
// evaluation every 2 steps, clipping on.
func dpConfig(perRank int, out string) Config {
	return Config{LR: 5e-3, BatchSize: perRank, GradAccum: 2, MaxSteps: 4, Seed: 3, WarmupSteps: 1,
		MaxGradNorm: 0.5, EvalSteps: 2, EvalBatchSize: 2, SaveSteps: 2, OutputDir: out, Progress: io.Discard}
}

const dpTrain, dpEval = 9, 5

// dpResult is what a rank (or the single process) reports.
type dpResult struct {
	Losses, EvalLosses []float64
}

func results(h []Record) dpResult {
	var r dpResult
	for _, rec := range h {
		if rec.Loss != nil {
			r.Losses = append(r.Losses, *rec.Loss)
		}
		if rec.EvalLoss != nil {
			r.EvalLosses = append(r.EvalLosses, *rec.EvalLoss)
		}
	}
	return r
}

// saveTrainable writes m's trainable parameters to path.
func saveTrainable(t testing.TB, m *peft.Model, path string) {
	ts, err := nn.StateTensors(m.TrainableParams(), "")
	require.NoError(t, err)
	require.NoError(t, safetensors.Write(path, ts, nil))
}

// dataParallelChild is one rank of TestDataParallelMatchesOneProcess:
// GOPEFT_DP_RUN names the run ("run": from the start into dir/out;
// "resume": from dir/out/checkpoint-2 into dir/out2). Rank r's LoRA
// weights are drawn from seed 1+r: the broadcast from rank 0 makes them
// rank 0's.
func dataParallelChild(t *testing.T) {
	dir, run := disttest.Dir(), os.Getenv("GOPEFT_DP_RUN")
	rank, _ := strconv.Atoi(os.Getenv("RANK"))
	m := tinyLoRA(t, 0, int64(1+rank))
	cfg := dpConfig(2, filepath.Join(dir, "out"))
	if run == "resume" {
		cfg.ResumeFrom = filepath.Join(dir, "out", "checkpoint-2")
		cfg.OutputDir = filepath.Join(dir, "out2")
	}
	tr := New(m, cfg)
	require.NoError(t, tr.Fit(copyTask(t, dpTrain, 0), copyTask(t, dpEval, 100)))
	saveTrainable(t, m, filepath.Join(dir, run+"-rank"+strconv.Itoa(rank)+".safetensors"))
	js, _ := json.Marshal(results(tr.History))
	require.NoError(t, os.WriteFile(filepath.Join(dir, run+"-rank"+strconv.Itoa(rank)+".json"), js, 0o644))
}

func readResult(t *testing.T, path string) dpResult {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var r dpResult
	require.NoError(t, json.Unmarshal(b, &r))
	return r
}

// Issue #17: 2 processes on loopback with Gloo, 2 samples each per
// micro-batch, train the same adapter as one process with 4: weights
// within 1e-5, the same loss and eval-loss curves; only rank 0 writes
// metrics.jsonl and checkpoints; a run resumed from a checkpoint with the
// same world size ends where the uninterrupted one did, and a resume with
// another world size is refused.
func TestDataParallelMatchesOneProcess(t *testing.T) {
	if disttest.Child() {
		dataParallelChild(t)
		return
	}
	dir := t.TempDir()
	procs := disttest.Start(t, "TestDataParallelMatchesOneProcess", dir, 2, "GOPEFT_DIST_TIMEOUT=120s", "GOPEFT_DP_RUN=run")
	disttest.WaitAll(t, procs, 5*time.Minute)

	single := tinyLoRA(t, 0, 1)
	tr := New(single, dpConfig(4, filepath.Join(dir, "single")))
	require.NoError(t, tr.Fit(copyTask(t, dpTrain, 0), copyTask(t, dpEval, 100)))
	saveTrainable(t, single, filepath.Join(dir, "single.safetensors"))
	want := results(tr.History)
	require.Len(t, want.Losses, 4)
	require.Len(t, want.EvalLosses, 2)

	for r := 0; r < 2; r++ {
		got := readResult(t, filepath.Join(dir, "run-rank"+strconv.Itoa(r)+".json"))
		require.InDeltaSlice(t, want.Losses, got.Losses, 1e-5, "rank %d losses", r)
		require.InDeltaSlice(t, want.EvalLosses, got.EvalLosses, 1e-5, "rank %d eval losses", r)
		t.Logf("rank %d: max weight difference to one process %.3g", r,
			maxDiff(t, filepath.Join(dir, "single.safetensors"), filepath.Join(dir, "run-rank"+strconv.Itoa(r)+".safetensors")))
		requireSameTensors(t, filepath.Join(dir, "single.safetensors"), filepath.Join(dir, "run-rank"+strconv.Itoa(r)+".safetensors"), 1e-5)
	}
	// the ranks hold identical weights
	requireSameTensors(t, filepath.Join(dir, "run-rank0.safetensors"), filepath.Join(dir, "run-rank1.safetensors"), 0)
	// the adapter moved away from its initialisation
	require.Greater(t, maxDiff(t, filepath.Join(dir, "single.safetensors"), initial(t, dir)), 1e-3)

	// rank 0 alone wrote metrics.jsonl: one record per step and evaluation
	recs := readMetrics(t, filepath.Join(dir, "out", MetricsFile))
	require.Len(t, recs, 6)
	for i, rec := range recs[:2] {
		require.Equal(t, i+1, rec.Step)
		require.InDelta(t, want.Losses[i], *rec.Loss, 1e-5)
	}
	st, err := ReadState(filepath.Join(dir, "out", "checkpoint-4"))
	require.NoError(t, err)
	require.Equal(t, 2, st.WorldSize)
	require.Equal(t, 2, st.BatchSize)
	requireSameTensors(t, filepath.Join(dir, "out", "checkpoint-4", ParamsFile), filepath.Join(dir, "run-rank0.safetensors"), 0)

	// resume from step 2 with two processes: the same end
	procs = disttest.Start(t, "TestDataParallelMatchesOneProcess", dir, 2, "GOPEFT_DIST_TIMEOUT=120s", "GOPEFT_DP_RUN=resume")
	disttest.WaitAll(t, procs, 5*time.Minute)
	requireSameTensors(t, filepath.Join(dir, "run-rank0.safetensors"), filepath.Join(dir, "resume-rank0.safetensors"), 1e-7)
	requireSameTensors(t, filepath.Join(dir, "run-rank1.safetensors"), filepath.Join(dir, "resume-rank1.safetensors"), 1e-7)
	resumed := readResult(t, filepath.Join(dir, "resume-rank0.json"))
	require.InDeltaSlice(t, want.Losses[2:], resumed.Losses, 1e-5)

	// one process cannot resume a two-process checkpoint
	cfg := dpConfig(2, filepath.Join(dir, "out3"))
	cfg.ResumeFrom = filepath.Join(dir, "out", "checkpoint-2")
	err = New(tinyLoRA(t, 0, 1), cfg).Fit(copyTask(t, dpTrain, 0), nil)
	require.ErrorContains(t, err, "world size (processes) 2, this one 1")
}

// initial writes llama-tiny's LoRA weights as drawn from seed 1.
func initial(t *testing.T, dir string) string {
	path := filepath.Join(dir, "initial.safetensors")
	saveTrainable(t, tinyLoRA(t, 0, 1), path)
	return path
}

func maxDiff(t *testing.T, a, b string) float64 {
	fa, err := safetensors.OpenFiles(a)
	require.NoError(t, err)
	defer fa.Close()
	fb, err := safetensors.OpenFiles(b)
	require.NoError(t, err)
	defer fb.Close()
	d := 0.0
	for _, n := range fa.Names() {
		da, _ := fa.Data(n)
		db, _ := fb.Data(n)
		va, vb := safetensors.Float32s(da), safetensors.Float32s(db)
		for i := range va {
			d = math.Max(d, math.Abs(float64(va[i]-vb[i])))
		}
	}
	return d
}

// killer is a model whose forward pass kills its own process at the
// given call (a rank dying mid-run).
type killer struct {
	*peft.Model
	calls, at int
}

func (k *killer) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	k.calls++
	if k.calls == k.at {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	return k.Model.ForwardT(s, b)
}

// Issue #17: rank 1 dies at its third forward pass; rank 0's Fit returns
// a clear error within the timeout instead of hanging (its third step).
func TestDataParallelRankKilled(t *testing.T) {
	if disttest.Child() {
		rank, _ := strconv.Atoi(os.Getenv("RANK"))
		var m Model = tinyLoRA(t, 0, 1)
		if rank == 1 {
			m = &killer{Model: m.(*peft.Model), at: 3}
		}
		cfg := Config{LR: 1e-3, BatchSize: 1, MaxSteps: 100, Seed: 1, Progress: io.Discard}
		start := time.Now()
		err := New(m, cfg).Fit(copyTask(t, 8, 0), nil)
		require.Error(t, err)
		require.Less(t, time.Since(start), 40*time.Second)
		require.NoError(t, os.WriteFile(filepath.Join(disttest.Dir(), "error"), []byte(err.Error()), 0o644))
		return
	}
	dir := t.TempDir()
	procs := disttest.Start(t, "TestDataParallelRankKilled", dir, 2, "GOPEFT_DIST_TIMEOUT=30s")
	require.NoError(t, procs[0].Wait(2*time.Minute), procs[0].Output())
	require.Error(t, procs[1].Wait(time.Minute))
	msg, err := os.ReadFile(filepath.Join(dir, "error"))
	require.NoError(t, err)
	t.Logf("rank 0: %s", msg)
	require.Contains(t, string(msg), "train: step 3: dist: rank 0 of 2")
	require.Contains(t, string(msg), "another rank's process has died")
}

// Ranks given different data refuse to train (each would see another
// global batch) with an error naming what differs, on every rank.
func TestDataParallelRanksDisagree(t *testing.T) {
	if disttest.Child() {
		rank, _ := strconv.Atoi(os.Getenv("RANK"))
		err := New(tinyLoRA(t, 0, 1), Config{BatchSize: 1, MaxSteps: 2, Progress: io.Discard}).Fit(copyTask(t, 8+rank, 0), nil)
		require.Error(t, err)
		require.Contains(t, err.Error(), "the ranks disagree on training samples (this rank "+strconv.Itoa(8+rank)+", others between 8 and 9)")
		return
	}
	procs := disttest.Start(t, "TestDataParallelRanksDisagree", t.TempDir(), 2, "GOPEFT_DIST_TIMEOUT=60s")
	disttest.WaitAll(t, procs, 2*time.Minute)
}
