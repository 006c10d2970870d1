package train

import (
	"bufio"
	"encoding/json"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/gopeft/peft/internal/memstat"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// Warmup 2 of 10 steps, peak 1: values worked out by hand from the
// formulas in LRAt's doc.
func TestSchedules(t *testing.T) {
	want := map[string][]float64{
		Linear:   {0, 0.5, 1, 7.0 / 8, 6.0 / 8, 5.0 / 8, 4.0 / 8, 3.0 / 8, 2.0 / 8, 1.0 / 8},
		Cosine:   {0, 0.5, 1, 0, 0, 0, 0.5, 0, 0, 0},
		Constant: {0, 0.5, 1, 1, 1, 1, 1, 1, 1, 1},
	}
	// cosine at step 2+k: ½(1+cos(πk/8))
	for k := 0; k < 8; k++ {
		want[Cosine][2+k] = 0.5 * (1 + math.Cos(math.Pi*float64(k)/8))
	}
	for name, vals := range want {
		for step, v := range vals {
			got, err := LRAt(name, 1, step, 2, 10)
			require.NoError(t, err)
			require.InDelta(t, v, got, 1e-12, "%s step %d", name, step)
		}
	}
	got, _ := LRAt(Cosine, 2e-4, 6, 2, 10)
	require.InDelta(t, 1e-4, got, 1e-15) // half-way down the cosine
	got, _ = LRAt(Linear, 1, 3, 0, 4)
	require.InDelta(t, 0.25, got, 1e-15) // no warmup: the last step runs at 1/total
	_, err := LRAt("step", 1, 0, 0, 1)
	require.ErrorContains(t, err, `unknown schedule "step"`)
}

// Gradients c = (3, 4) and (12): the global norm is 13; clipping to 6.5
// halves every gradient (up to the 1e-6 of torch's formula).
func TestClipGradNorm(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	a := nn.NewParam(s.Keep(s.FromFloat32([]float32{1, 1}, 2)))
	b := nn.NewParam(s.Keep(s.FromFloat32([]float32{1}, 1)))
	defer a.Free()
	defer b.Free()
	params := []nn.NamedParam{{Name: "a", Param: a}, {Name: "b", Param: b}}
	setGrads := func() {
		for _, np := range params {
			s.SetRequiresGrad(np.Param.T(), true)
		}
		loss := s.Add(s.Sum(s.Mul(a.T(), s.FromFloat32([]float32{3, 4}, 2)), false),
			s.Sum(s.MulScalar(b.T(), 12), false))
		s.Backward(loss)
		require.NoError(t, s.Err())
	}
	setGrads()
	norm, err := ClipGradNorm(params, 6.5)
	require.NoError(t, err)
	require.InDelta(t, 13, norm, 1e-6)
	coef := 6.5 / (13 + 1e-6)
	ga, gb := s.Float32s(s.Grad(a.T())), s.Float32s(s.Grad(b.T()))
	require.InDeltaSlice(t, []float64{3 * coef, 4 * coef}, []float64{float64(ga[0]), float64(ga[1])}, 1e-6)
	require.InDelta(t, 12*coef, float64(gb[0]), 1e-6)

	// below the limit nothing changes
	norm, err = ClipGradNorm(params, 100)
	require.NoError(t, err)
	require.InDelta(t, 6.5, norm, 1e-5)
	require.InDelta(t, float64(ga[0]), float64(s.Float32s(s.Grad(a.T()))[0]), 0)
}

// Saving and loading AdamW's state continues the same updates.
func TestAdamWStateRoundTrip(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	mk := func() *nn.Param {
		p := nn.NewParam(s.Keep(s.FromFloat32([]float32{1, -2, 0.5}, 3)))
		s.SetRequiresGrad(p.T(), true)
		return p
	}
	c := s.FromFloat32([]float32{1, 3, -2}, 3)
	step := func(o *AdamW, p *nn.Param) {
		s.Backward(s.Sum(s.Mul(c, s.Mul(p.T(), p.T())), false))
		require.NoError(t, o.Step())
		require.NoError(t, o.ZeroGrad())
	}
	cfg := AdamWConfig{LR: 0.1, WeightDecay: 0.01}
	p1 := mk()
	o1 := NewAdamW([]nn.NamedParam{{Name: "w", Param: p1}}, cfg)
	defer o1.Free()
	step(o1, p1)
	step(o1, p1)
	path := filepath.Join(t.TempDir(), "opt.safetensors")
	require.NoError(t, o1.SaveState(path))

	p2 := mk()
	s.CopyInto(p2.T(), p1.T())
	o2 := NewAdamW([]nn.NamedParam{{Name: "w", Param: p2}}, cfg)
	defer o2.Free()
	require.NoError(t, o2.LoadState(path))
	require.Equal(t, 2, o2.Steps())
	step(o1, p1)
	step(o2, p2)
	require.Equal(t, s.Float32s(p1.T()), s.Float32s(p2.T()))

	o3 := NewAdamW([]nn.NamedParam{{Name: "other", Param: p2}}, cfg)
	require.ErrorContains(t, o3.LoadState(path), `"w.exp_avg" is not a moment`)
}

func fit(t *testing.T, m Model, cfg Config, train, eval int) *Trainer {
	t.Helper()
	cfg.Progress = io.Discard
	tr := New(m, cfg)
	var ev = copyTask(t, eval, 100)
	if eval == 0 {
		ev = nil
	}
	require.NoError(t, tr.Fit(copyTask(t, train, 0), ev))
	return tr
}

// Two runs with the same seed give the same losses, dropout included.
func TestTrainerIsDeterministic(t *testing.T) {
	cfg := Config{LR: 1e-2, BatchSize: 4, MaxSteps: 4, Seed: 5, WarmupSteps: 1}
	a := fit(t, tinyLoRA(t, 0.1, 1), cfg, 12, 0).Losses()
	b := fit(t, tinyLoRA(t, 0.1, 1), cfg, 12, 0).Losses()
	require.Len(t, a, 4)
	require.Equal(t, a, b)
	c := fit(t, tinyLoRA(t, 0.1, 1), Config{LR: 1e-2, BatchSize: 4, MaxSteps: 4, Seed: 6, WarmupSteps: 1}, 12, 0).Losses()
	require.NotEqual(t, a, c)
}

// 6 steps = 3 steps, checkpoint, resume, 3 more: the same losses, the same
// final parameters (shuffling across epochs and dropout on). Resuming
// mid-epoch (from step 4) works the same.
func TestTrainerResumeContinuesTheLossCurve(t *testing.T) {
	out := t.TempDir()
	// 10 samples, batch 2, accumulation 2: 5 micro-batches, 3 steps per epoch
	cfg := Config{LR: 5e-3, WeightDecay: 0.1, BatchSize: 2, GradAccum: 2, Epochs: 2, Seed: 3, Schedule: Cosine,
		WarmupSteps: 2, MaxGradNorm: 1, SaveSteps: 1, OutputDir: out}
	full := fit(t, tinyLoRA(t, 0.1, 1), cfg, 10, 0)
	want := full.Losses()
	require.Len(t, want, 6)
	final := filepath.Join(out, "checkpoint-6", ParamsFile)

	for _, from := range []int{3, 4} {
		st, err := ReadState(filepath.Join(out, "checkpoint-"+itoa(from)))
		require.NoError(t, err)
		require.Equal(t, from, st.Step)
		resumed := t.TempDir()
		copyDir(t, filepath.Join(out, "checkpoint-"+itoa(from)), filepath.Join(resumed, "checkpoint-"+itoa(from)))
		mb, err := os.ReadFile(filepath.Join(out, MetricsFile))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(resumed, MetricsFile), mb, 0o644))
		c := cfg
		c.OutputDir, c.ResumeFrom = resumed, "latest"
		tr := fit(t, tinyLoRA(t, 0.1, 99), c, 10, 0) // other LoRA init: the checkpoint overrides it
		got := tr.Losses()
		require.Len(t, got, 6-from)
		for i, l := range got {
			require.InDelta(t, want[from+i], l, 1e-6, "resumed from %d, step %d", from, from+i+1)
		}
		requireSameTensors(t, final, filepath.Join(resumed, "checkpoint-6", ParamsFile), 1e-6)
		// metrics.jsonl keeps the records up to the checkpoint and continues
		recs := readMetrics(t, filepath.Join(resumed, MetricsFile))
		require.Len(t, recs, 6)
		for i, r := range recs {
			require.Equal(t, i+1, r.Step)
			require.InDelta(t, want[i], *r.Loss, 1e-6)
		}
	}

	// a different batch shape cannot continue the run
	c := cfg
	c.BatchSize, c.ResumeFrom, c.OutputDir = 5, filepath.Join(out, "checkpoint-3"), t.TempDir()
	c.Progress = io.Discard
	err := New(tinyLoRA(t, 0, 1), c).Fit(copyTask(t, 10, 0), nil)
	require.ErrorContains(t, err, "batch size 2, this one 5")
}

// Batch 4 and 2 micro-batches of 2 accumulated make the same step: the
// same gradient (AdamW's first moment is 0.1·g) and norm, with samples of
// different lengths so that token weighting matters.
func TestGradientAccumulationEquivalence(t *testing.T) {
	run := func(batch, accum int) (string, Record) {
		out := t.TempDir()
		tr := fit(t, tinyLoRA(t, 0, 1), Config{LR: 1e-3, BatchSize: batch, GradAccum: accum, MaxSteps: 1,
			NoShuffle: true, OutputDir: out}, 4, 0)
		return filepath.Join(out, "checkpoint-1"), tr.History[0]
	}
	a, ra := run(4, 1)
	b, rb := run(2, 2)
	require.InDelta(t, *ra.Loss, *rb.Loss, 1e-6)
	require.InDelta(t, *ra.GradNorm, *rb.GradNorm, 1e-5**ra.GradNorm)
	requireSameTensors(t, filepath.Join(a, OptimizerFile), filepath.Join(b, OptimizerFile), 1e-5)
	requireSameTensors(t, filepath.Join(a, ParamsFile), filepath.Join(b, ParamsFile), 1e-5)
	// and the plain mean of the two micro-batch losses would not be the same
	ds := copyTask(t, 4, 0)
	require.NotEqual(t, ds.Samples[0].Targets()+ds.Samples[1].Targets(), ds.Samples[2].Targets()+ds.Samples[3].Targets())
}

// A LoRA run on llama-tiny lowers the eval loss; evaluation, metrics and
// the final adapter checkpoint are written.
func TestTrainerLowersEvalLoss(t *testing.T) {
	m := tinyLoRA(t, 0, 1)
	before, err := Evaluate(m, copyTask(t, 8, 100), 4)
	require.NoError(t, err)
	out := t.TempDir()
	tr := fit(t, m, Config{LR: 3e-2, BatchSize: 8, Epochs: 10, WarmupRatio: 0.1, EvalSteps: 20, OutputDir: out, MaxGradNorm: 1,
		PlotCurves: true}, 64, 8)
	var evals []float64
	for _, r := range tr.History {
		if r.EvalLoss != nil {
			evals = append(evals, *r.EvalLoss)
			require.InDelta(t, math.Exp(*r.EvalLoss), *r.EvalPPL, 1e-9)
		}
	}
	require.Len(t, evals, 4) // steps 20, 40, 60 and 80 (the last)
	after := evals[len(evals)-1]
	t.Logf("eval loss %.4f -> %.4f", before, after)
	require.Less(t, after, before-0.4)
	require.Less(t, evals[3], evals[0])
	for _, f := range []string{"adapter_config.json", "adapter_model.safetensors", StateFile, OptimizerFile, ParamsFile} {
		require.FileExists(t, filepath.Join(out, "checkpoint-80", f))
	}
	require.Len(t, readMetrics(t, filepath.Join(out, MetricsFile)), 80+4)
	// PlotCurves: the run's curves beside its metrics
	svg, err := os.ReadFile(filepath.Join(out, "curves.svg"))
	require.NoError(t, err)
	for _, series := range []string{">train loss</text>", ">eval loss</text>", ">learning rate</text>"} {
		require.Contains(t, string(svg), series)
	}
	f, err := os.Open(filepath.Join(out, "curves.png"))
	require.NoError(t, err)
	defer f.Close()
	_, err = png.Decode(f)
	require.NoError(t, err)
}

// Activation checkpointing in the trainer leaves the loss curve as it is.
func TestTrainerCheckpointingSameCurve(t *testing.T) {
	cfg := Config{LR: 1e-2, BatchSize: 4, MaxSteps: 3, Seed: 2}
	a := fit(t, tinyLoRA(t, 0, 1), cfg, 8, 0).Losses()
	cfg.Checkpointing = true
	b := fit(t, tinyLoRA(t, 0, 1), cfg, 8, 0).Losses()
	require.InDeltaSlice(t, a, b, 1e-5)
}

// Full fine-tuning: a base model without PEFT trains every parameter and
// its checkpoints are HF model folders.
func TestTrainerFullFineTuning(t *testing.T) {
	m, err := llama.Load(tinyDir)
	require.NoError(t, err)
	defer m.Free()
	out := t.TempDir()
	tr := fit(t, m, Config{LR: 1e-3, BatchSize: 4, MaxSteps: 3, OutputDir: out}, 8, 0)
	l := tr.Losses()
	require.Less(t, l[2], l[0])
	require.FileExists(t, filepath.Join(out, "checkpoint-3", "model.safetensors"))
	require.FileExists(t, filepath.Join(out, "checkpoint-3", "config.json"))
	require.NoFileExists(t, filepath.Join(out, "curves.svg"), "curves only with PlotCurves")
}

// C memory stays flat over many training steps.
func TestTrainerRSSFlat(t *testing.T) {
	m := tinyLoRA(t, 0.1, 1)
	ds := copyTask(t, 16, 0)
	steps := func(n int) {
		require.NoError(t, New(m, Config{LR: 1e-4, BatchSize: 4, MaxSteps: n, Progress: io.Discard, MaxGradNorm: 1}).Fit(ds, nil))
	}
	steps(30)
	runtime.GC()
	before := memstat.RSS()
	steps(300)
	runtime.GC()
	after := memstat.RSS()
	growth := float64(after-before) / float64(before)
	t.Logf("RSS %d KiB -> %d KiB over 300 steps (%.2f%%)", before>>10, after>>10, 100*growth)
	require.Less(t, growth, 0.05)
}

func TestTrainerErrors(t *testing.T) {
	m := tinyLoRA(t, 0, 1)
	require.ErrorContains(t, New(m, Config{Progress: io.Discard}).Fit(nil, nil), "empty training set")
	require.ErrorContains(t, New(m, Config{Schedule: "step", Progress: io.Discard}).Fit(copyTask(t, 2, 0), nil), `unknown schedule "step"`)
	require.ErrorContains(t, New(m, Config{ResumeFrom: t.TempDir(), Progress: io.Discard}).Fit(copyTask(t, 2, 0), nil), StateFile)
	require.NoError(t, nn.Freeze(m))
	require.ErrorContains(t, New(m, Config{Progress: io.Discard}).Fit(copyTask(t, 2, 0), nil), "no trainable parameters")
}

func itoa(i int) string { return string(rune('0' + i)) }

func copyDir(t *testing.T, src, dst string) {
	require.NoError(t, os.MkdirAll(dst, 0o755))
	entries, err := os.ReadDir(src)
	require.NoError(t, err)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644))
	}
}

func readMetrics(t *testing.T, path string) []Record {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r Record
		require.NoError(t, json.Unmarshal(sc.Bytes(), &r))
		out = append(out, r)
	}
	return out
}

// requireSameTensors compares every float32 tensor of two safetensors files.
func requireSameTensors(t *testing.T, a, b string, tol float64) {
	t.Helper()
	fa, err := safetensors.OpenFiles(a)
	require.NoError(t, err)
	defer fa.Close()
	fb, err := safetensors.OpenFiles(b)
	require.NoError(t, err)
	defer fb.Close()
	require.Equal(t, fa.Names(), fb.Names())
	for _, n := range fa.Names() {
		da, _ := fa.Data(n)
		db, _ := fb.Data(n)
		va, vb := safetensors.Float32s(da), safetensors.Float32s(db)
		require.Len(t, vb, len(va))
		for i := range va {
			require.InDelta(t, va[i], vb[i], tol, "%s[%d]", n, i)
		}
	}
}
