package lntuning_test

import (
	"strings"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/lntuning"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

func loadLlama(t testing.TB) models.Model {
	return testutil.Load(t, llama.Load, "llama-tiny")
}

// llama-tiny__ln-tuning (PEFT 0.13.2, both layers' norms and the final
// norm): adapted, disabled and merged logits, merged norm weights, the
// saved files, and the trainable count of a fresh adapter with PEFT's
// defaults for llama.
func TestLNTuningFixture(t *testing.T) {
	testutil.RequireMethodFixture(t, testutil.MethodFixture{
		Name: "ln-tuning", Base: loadLlama, Mergeable: true,
		Fresh: func(base models.Model) (*peft.Model, error) { return lntuning.Wrap(base, &lntuning.Config{}) },
	})
}

func idsBatch(e *testutil.Expected, t *testing.T) func(s *tensor.Scope) *models.Batch {
	ids, shape := e.I64(t, "input_ids")
	return func(s *tensor.Scope) *models.Batch {
		x := s.FromInt64(ids, shape...)
		return &models.Batch{InputIDs: x, Labels: x}
	}
}

// A fresh adapter is the base exactly; training changes only the copies
// (the original norms stay), lowers the loss; merge-and-unload leaves the
// tuned norms in the model under their plain names; the trained adapter
// reloads bit for bit.
func TestTrainingChangesOnlyCopies(t *testing.T) {
	e := testutil.OpenExpected(t, "llama-tiny__ln-tuning")
	base := loadLlama(t)
	want, _ := testutil.LogitsOf(t, base, e)
	m, err := lntuning.Wrap(base, &lntuning.Config{})
	require.NoError(t, err)
	got, _ := testutil.LogitsOf(t, m, e)
	require.True(t, testutil.EqualF32(want, got))

	before := testutil.Snapshot(t, m)
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: 1e-2})
	defer opt.Free()
	losses := testutil.TrainSteps(t, m, opt.Step, idsBatch(e, t), 6)
	t.Logf("losses %v", losses)
	require.Less(t, losses[len(losses)-1], losses[0])
	after := testutil.Snapshot(t, m)
	changed := testutil.RequireOnlyTrainedChanged(t, before, after, func(n string) bool {
		return strings.Contains(n, ".ln_tuning_layers.")
	})
	require.Equal(t, 5, changed)

	adapted, _ := testutil.LogitsOf(t, m, e)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	loaded, err := peft.Load(loadLlama(t), dir)
	require.NoError(t, err)
	again, _ := testutil.LogitsOf(t, loaded, e)
	require.True(t, testutil.EqualF32(adapted, again))
	nn.FreeParams(loaded)

	merged, err := m.MergeAndUnload()
	require.NoError(t, err)
	mg, _ := testutil.LogitsOf(t, merged, e)
	require.True(t, testutil.EqualF32(adapted, mg), "the merged model runs the tuned norms")
	final := testutil.Snapshot(t, merged)
	require.Equal(t, after["base_model.model.model.norm.ln_tuning_layers.default.weight"], final["model.norm.weight"])
}

// One adapter at a time: two active adapters fail the forward with
// PEFT's message, merging two fails; switching adapters works.
func TestOneAdapterAtATime(t *testing.T) {
	e := testutil.OpenExpected(t, "llama-tiny__ln-tuning")
	dir := testutil.Fixtures(t, "adapters", "llama-tiny", "ln-tuning")
	m, err := peft.Load(loadLlama(t), dir)
	require.NoError(t, err)
	require.NoError(t, m.AddAdapter("fresh", &lntuning.Config{}))
	require.NoError(t, m.SetAdapter("fresh"))
	testutil.RequireLogits(t, m, e, "logits_base", 1e-4)
	require.NoError(t, m.SetAdapter("default"))
	testutil.RequireLogits(t, m, e, "logits", 1e-4)

	require.NoError(t, m.SetAdapter("default", "fresh"))
	s := tensor.NoGradScope()
	ids, shape := e.I64(t, "input_ids")
	m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...)})
	require.ErrorContains(t, s.Err(), "LN tuning does not allow inference with more than one adapter at a time")
	s.Close()
	err = m.Merge(false, "default", "fresh")
	require.ErrorIs(t, err, peft.ErrNotMergeable)

	// merging one, then the other: the first is unmerged first
	require.NoError(t, m.SetAdapter("default"))
	require.NoError(t, m.Merge(false, "default"))
	testutil.RequireLogits(t, m, e, "logits_merged", 1e-4)
	require.NoError(t, m.Merge(false, "fresh"))
	testutil.RequireLogits(t, m, e, "logits_base", 1e-4)
	require.NoError(t, m.Unmerge())
	testutil.RequireLogits(t, m, e, "logits", 1e-4)
}

// Errors name the field or the layer.
func TestErrors(t *testing.T) {
	_, err := lntuning.Wrap(loadLlama(t), &lntuning.Config{TargetModules: peft.TargetList("nope")})
	require.ErrorContains(t, err, "matched no module")
	_, err = lntuning.Wrap(loadLlama(t), &lntuning.Config{TargetModules: peft.TargetRegex(peft.AllLinear)})
	require.ErrorContains(t, err, `field "target_modules"`)
	_, err = lntuning.Wrap(loadLlama(t), &lntuning.Config{TargetModules: peft.TargetList("layers")})
	require.ErrorContains(t, err, "not a single-tensor layer")
	_, err = lntuning.Decode([]byte(`{"peft_type":"LN_TUNING","target_modules":"(x"}`))
	require.ErrorContains(t, err, `field "target_modules"`)
}

// Keys this library does not know survive a load and a save; a mixed
// batch fails naming the layer type.
func TestUnknownKeysAndRows(t *testing.T) {
	c, err := lntuning.Decode([]byte(`{"peft_type":"LN_TUNING","modules_to_save":"lm_head","future_key":true}`))
	require.NoError(t, err)
	require.Equal(t, []string{"lm_head"}, c.(*lntuning.Config).ModulesToSave())
	js, err := c.MarshalJSON()
	require.NoError(t, err)
	require.Contains(t, string(js), `"future_key": true`)

	m, err := lntuning.Wrap(loadLlama(t), &lntuning.Config{})
	require.NoError(t, err)
	s := tensor.NoGradScope()
	defer s.Close()
	defer peft.WithSelection(s, &peft.Selection{Rows: []string{peft.DefaultAdapter}})()
	m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64([]int64{1, 2, 3}, 1, 3)})
	require.ErrorContains(t, s.Err(), "(ln_tuning.LNTuningLayer) cannot run different adapters per row")
}
