package adalora_test

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/adalora"
	"github.com/gopeft/peft/data"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

// keptRanks counts the non-zero lora_E entries of every layer, in module
// order (the fixture's adalora_kept_ranks rows).
func keptRanks(t testing.TB, m *peft.Model) []int64 {
	s := tensor.NoGradScope()
	defer s.Close()
	var out []int64
	for _, at := range peft.Tuners(m.Base()) {
		e, _ := at.Tuner.(*adalora.SVDLinear).E.Get(peft.DefaultAdapter)
		n := int64(0)
		for _, v := range s.Float32s(e.T()) {
			if v != 0 {
				n++
			}
		}
		out = append(out, n)
	}
	require.NoError(t, s.Err())
	return out
}

func sum(v []int64) int64 {
	n := int64(0)
	for _, x := range v {
		n += x
	}
	return n
}

// Eight steps of the fixture's schedule (init_r 6, target_r 3, tinit 1,
// tfinal 2, total_step 8) on its inputs and labels, from a fresh adapter,
// with update_and_allocate after each step as PEFT's docs say: the number
// of ranks kept after each step is the fixture's (36, 36, 27, 21, 19, 18,
// 18, 18 — the trained adapters differ across BLAS builds and inits, the
// budget they are cut to does not), the last two steps keep the final
// pattern, only AdaLoRA's parameters change and the loss falls. Saved and
// reloaded, the cut adapter computes what the masked one did.
func TestAdaLoRAAllocatorSteps(t *testing.T) {
	e := testutil.OpenExpected(t, fixture)
	cfg := fixtureConfig(t)
	cfg.RankPattern = nil
	tensor.ManualSeed(7)
	m, err := adalora.Wrap(loadLlama(t), cfg)
	require.NoError(t, err)
	before := testutil.Snapshot(t, m)
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: 1e-2})
	defer opt.Free()

	fxKept, shape := e.I64(t, "adalora_kept_ranks")
	nn.SetTraining(m, true)
	var losses []float64
	var patterns []map[string][]bool
	for step := 0; step < *cfg.TotalStep; step++ {
		s := tensor.NewScope()
		out := m.ForwardT(s, fixtureBatch(t, s, e, true))
		s.Backward(out.Loss)
		require.NoError(t, s.Err())
		losses = append(losses, s.Item(out.Loss))
		s.Close()
		require.NoError(t, opt.Step())
		require.NoError(t, m.AfterOptimizerStep(step))
		require.NoError(t, opt.ZeroGrad())

		kept := keptRanks(t, m)
		want := sum(fxKept[int64(step)*shape[1] : int64(step+1)*shape[1]])
		t.Logf("step %d: loss %.4f kept %v (sum %d, PEFT's sum %d)", step, losses[step], kept, sum(kept), want)
		require.Equal(t, want, sum(kept), "step %d", step)
		patterns = append(patterns, cfg.RankPattern)
	}
	nn.SetTraining(m, false)
	require.Less(t, losses[len(losses)-1], losses[0])
	testutil.RequireOnlyTrainedChanged(t, before, testutil.Snapshot(t, m), func(name string) bool {
		return strings.Contains(name, ".lora_A.") || strings.Contains(name, ".lora_B.") || strings.Contains(name, ".lora_E.")
	})
	require.Equal(t, patterns[6], patterns[7])
	kept := cfg.KeptRanks()
	require.Len(t, kept, 6)
	total := 0
	for _, n := range kept {
		total += n
	}
	require.Equal(t, 18, total)

	// save: the tensors cut to the pattern, the pattern in the config
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	set, err := safetensors.OpenFiles(filepath.Join(dir, peft.WeightsName))
	require.NoError(t, err)
	for path, n := range kept {
		info, _, ok := set.Info(peft.KeyPrefix + path + ".lora_A")
		require.True(t, ok, path)
		require.Equal(t, int64(n), info.Shape[0], path)
		info, _, _ = set.Info(peft.KeyPrefix + path + ".lora_B")
		require.Equal(t, int64(n), info.Shape[1], path)
	}
	set.Close()
	saved := testutil.ReadJSON(t, filepath.Join(dir, peft.ConfigName))
	require.Len(t, saved["rank_pattern"], 6)
	shipped := testutil.ReadJSON(t, filepath.Join(adapterDir(t), peft.ConfigName))
	require.Equal(t, keys(shipped), keys(saved)) // the keys PEFT 0.10 writes
	for _, k := range []string{"init_r", "target_r", "tinit", "tfinal", "deltaT", "total_step", "beta1", "beta2", "orth_reg_weight", "lora_alpha", "target_modules"} {
		require.Equal(t, shipped[k], saved[k], k)
	}

	inMemory, _ := testutil.LogitsOf(t, m, e)
	m2, err := peft.Load(loadLlama(t), dir)
	require.NoError(t, err)
	reloaded, _ := testutil.LogitsOf(t, m2, e)
	d := testutil.MaxDiff(inMemory, reloaded)
	t.Logf("reloaded - in memory: %.3g (PEFT's fixture: %s)", d, e.Meta(t, "max_abs_reload_minus_inmemory"))
	require.LessOrEqual(t, d, 1e-5)
	require.Greater(t, testutil.MaxDiff(reloaded, e.F32(t, "logits_base")), 1e-3)
}

// The Trainer drives the allocator (train.StepHook): after a run of
// total_step steps the config holds the final rank pattern (target_r per
// layer on average) and the masked singular values are zero.
func TestAdaLoRATrainer(t *testing.T) {
	e := testutil.OpenExpected(t, fixture)
	cfg := fixtureConfig(t)
	cfg.RankPattern = nil
	m, err := adalora.Wrap(loadLlama(t), cfg)
	require.NoError(t, err)
	ids, shape := e.I64(t, "input_ids")
	mask, _ := e.I64(t, "attention_mask")
	labels, _ := e.I64(t, "labels")
	ds := &data.Dataset{}
	cols := shape[1]
	for r := int64(0); r < shape[0]; r++ {
		ds.Samples = append(ds.Samples, data.Sample{InputIDs: ids[r*cols : (r+1)*cols], AttentionMask: mask[r*cols : (r+1)*cols], Labels: labels[r*cols : (r+1)*cols]})
	}
	tr := train.New(m, train.Config{LR: 1e-2, Schedule: "constant", BatchSize: 2, MaxSteps: *cfg.TotalStep, NoShuffle: true, Progress: io.Discard})
	require.NoError(t, tr.Fit(ds, nil))
	ls := tr.Losses()
	require.Less(t, ls[len(ls)-1], ls[0])
	require.NotNil(t, cfg.RankPattern)
	total := 0
	for _, n := range cfg.KeptRanks() {
		total += n
	}
	require.Equal(t, 18, total)
	require.Equal(t, int64(18), sum(keptRanks(t, m)))

	// the hook called before any backward says so
	fresh, err := adalora.Wrap(loadLlama(t), fixtureConfig(t))
	require.NoError(t, err)
	require.ErrorContains(t, fresh.AfterOptimizerStep(0), "has no gradient")
	noTotal := fixtureConfig(t)
	noTotal.TotalStep = nil
	fresh2, err := adalora.Wrap(loadLlama(t), noTotal)
	require.NoError(t, err)
	require.ErrorContains(t, fresh2.AfterOptimizerStep(0), "total_step")
	grow := fixtureConfig(t)
	grow.TargetR = grow.InitR + 1
	fresh3, err := adalora.Wrap(loadLlama(t), grow)
	require.NoError(t, err)
	require.ErrorContains(t, fresh3.AfterOptimizerStep(0), "target_r")

	// past the final allocation without a pattern: an error, not a silent no-op
	cfg.RankPattern = nil
	require.ErrorContains(t, m.AfterOptimizerStep(*cfg.TotalStep), "no rank_pattern")

	// a loaded (cut) adapter trained past the final step: the pattern's
	// masks fit the cut layers (nothing more to mask)
	loaded, err := peft.Load(loadLlama(t), adapterDir(t), peft.Trainable())
	require.NoError(t, err)
	lc, _ := loaded.Config(peft.DefaultAdapter)
	before := keptRanks(t, loaded)
	require.NoError(t, loaded.AfterOptimizerStep(*lc.(*adalora.Config).TotalStep))
	require.Equal(t, before, keptRanks(t, loaded))
	require.Equal(t, int64(18), sum(before))
}
