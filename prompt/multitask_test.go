package prompt_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gopeft/peft/data"
	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prompt"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

const mpt = "multitask-prompt-tuning"

// mptLogits runs m on the fixture's inputs with its task ids.
func mptLogits(t testing.TB, m testutil.Forwarder, e *testutil.Expected, withTasks bool) ([]float32, []int64) {
	ids, shape := e.I64(t, "input_ids")
	mask, _ := e.I64(t, "attention_mask")
	tasks, tshape := e.I64(t, "task_ids")
	s := tensor.NoGradScope()
	defer s.Close()
	b := &models.Batch{InputIDs: s.FromInt64(ids, shape...), AttentionMask: s.FromInt64(mask, shape...)}
	if withTasks {
		b.TaskIDs = s.FromInt64(tasks, tshape...)
	}
	out := m.ForwardT(s, b)
	require.NoError(t, s.Err())
	return s.Float32s(out.Logits), out.Logits.Shape()
}

// llama-tiny__multitask-prompt-tuning (PEFT 0.10): with the file's task
// ids (row 0 task 0, row 1 task 1) the logits, virtual tokens included,
// are PEFT's; disabled, the base's; merging is refused; a fresh adapter
// with the same config trains PEFT's parameter count.
func TestMultitaskFixture(t *testing.T) {
	e := openExpected(t, mpt)
	m, err := peft.Load(loadBase(t), adapterDir(t, mpt))
	require.NoError(t, err)
	defer nn.FreeParams(m)
	got, shape := mptLogits(t, m, e, true)
	require.Equal(t, []int64{2, 20, 512}, shape)
	d := testutil.MaxDiff(got, e.F32(t, "logits"))
	t.Logf("logits: max abs diff %.3g", d)
	require.LessOrEqual(t, d, 1e-4)

	// each row really uses its own task: swapping the task ids changes the output
	ids, ishape := e.I64(t, "input_ids")
	mask, _ := e.I64(t, "attention_mask")
	s := tensor.NoGradScope()
	swapped := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, ishape...), AttentionMask: s.FromInt64(mask, ishape...),
		TaskIDs: s.FromInt64([]int64{1, 0}, 2)})
	require.NoError(t, s.Err())
	require.Greater(t, testutil.MaxDiff(s.Float32s(swapped.Logits), got), 1e-3)
	s.Close()

	restore := m.DisableAdapters()
	testutil.RequireLogits(t, m, e, "logits_disabled", 1e-4)
	restore()

	require.True(t, errors.Is(m.Merge(false), peft.ErrNotMergeable))
	_, err = m.MergeAndUnload()
	require.True(t, errors.Is(err, peft.ErrNotMergeable))

	fresh, err := peft.New(loadBase(t), &prompt.MultitaskConfig{TuningConfig: prompt.TuningConfig{
		PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 8}}, NumTasks: 2, NumRanks: 2})
	require.NoError(t, err)
	defer nn.FreeParams(fresh)
	want := e.Meta(t, "print_trainable_parameters")
	require.Equal(t, want[:strings.Index(want, " || trainable%")], strings.SplitN(peft.TrainableSummary(fresh), " || trainable%", 2)[0])
}

// Task ids are required, one per row, each below num_tasks.
func TestMultitaskTaskIDErrors(t *testing.T) {
	m, err := peft.Load(loadBase(t), adapterDir(t, mpt))
	require.NoError(t, err)
	defer nn.FreeParams(m)
	for _, c := range []struct {
		tasks []int64
		want  string
	}{
		{nil, "task_ids cannot be None"},
		{[]int64{0}, "task_ids: shape [1], want [2]"},
		{[]int64{0, 2}, "task_ids[1] = 2, the adapter has 2 tasks"},
	} {
		s := tensor.NoGradScope()
		b := &models.Batch{InputIDs: s.FromInt64([]int64{1, 2, 3, 4}, 2, 2)}
		if c.tasks != nil {
			b.TaskIDs = s.FromInt64(c.tasks, int64(len(c.tasks)))
		}
		m.ForwardT(s, b)
		require.ErrorContains(t, s.Err(), c.want)
		s.Close()
	}
}

// Save writes PEFT's three tensors and config keys; Load(Save(x)) is bit
// for bit the shipped adapter.
func TestMultitaskSaveRoundTrip(t *testing.T) {
	m, err := peft.Load(loadBase(t), adapterDir(t, mpt))
	require.NoError(t, err)
	defer nn.FreeParams(m)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	testutil.RequireSameAdapter(t, adapterDir(t, mpt), dir)

	fresh, err := peft.New(loadBase(t), &prompt.MultitaskConfig{TuningConfig: prompt.TuningConfig{
		PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 8}}, NumTasks: 2, NumRanks: 2})
	require.NoError(t, err)
	defer nn.FreeParams(fresh)
	dir2 := t.TempDir()
	require.NoError(t, fresh.Save(dir2))
	keys := func(m map[string]any) []string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	require.Equal(t, keys(testutil.ReadJSON(t, filepath.Join(adapterDir(t, mpt), peft.ConfigName))),
		keys(testutil.ReadJSON(t, filepath.Join(dir2, peft.ConfigName))))
	again, err := peft.Load(loadBase(t), dir2)
	require.NoError(t, err)
	defer nn.FreeParams(again)
	dir3 := t.TempDir()
	require.NoError(t, again.Save(dir3))
	testutil.RequireSameAdapter(t, dir2, dir3)
}

// Training with task ids lowers the loss and changes the shared table and
// the trained tasks' factors only.
func TestMultitaskTraining(t *testing.T) {
	tensor.ManualSeed(3)
	m, err := peft.New(loadBase(t), &prompt.MultitaskConfig{TuningConfig: prompt.TuningConfig{
		PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4}}, NumTasks: 3, NumRanks: 2})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.Len(t, m.TrainableParams(), 3)
	before := testutil.Snapshot(t, m)
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: 1e-2})
	defer opt.Free()
	ids := []int64{4, 8, 15, 16, 23, 42, 7, 99, 5, 17, 33, 2, 61, 8, 15, 16}
	losses := testutil.TrainSteps(t, m, opt.Step, func(s *tensor.Scope) *models.Batch {
		x := s.FromInt64(ids, 2, 8)
		return &models.Batch{InputIDs: x, Labels: x, TaskIDs: s.FromInt64([]int64{0, 2}, 2)}
	}, 8)
	t.Logf("losses %v", losses)
	require.Less(t, losses[len(losses)-1], losses[0])
	testutil.RequireOnlyTrainedChanged(t, before, testutil.Snapshot(t, m), func(n string) bool {
		return strings.HasPrefix(n, "prompt_encoder.")
	})
	// task 1 is in no row: its factors get no gradient and move only by
	// AdamW's weight decay, far less than task 0's
	after := testutil.Snapshot(t, m)
	cols := "prompt_encoder.default.prefix_task_cols"
	n := len(before[cols]) / 3
	require.Less(t, testutil.MaxDiff(before[cols][n:2*n], after[cols][n:2*n])*10, testutil.MaxDiff(before[cols][:n], after[cols][:n]))
}

// Generation takes the prompts' task ids: greedy decoding with the KV
// cache gives, at every step, the argmax of a full forward over the
// sequence so far with the same task.
func TestMultitaskGeneration(t *testing.T) {
	m, err := peft.Load(loadBase(t), adapterDir(t, mpt))
	require.NoError(t, err)
	defer nn.FreeParams(m)
	prompts := [][]int64{{1, 15, 27, 99, 4}, {1, 15, 27, 99, 4}}
	out, err := generate.Generate(context.Background(), m, generate.Input{InputIDs: prompts, TaskIDs: []int64{0, 1}},
		generate.GenerationConfig{MaxNewTokens: 5})
	require.NoError(t, err)
	for row, task := range []int64{0, 1} {
		seq := out.Sequences[row]
		for n := len(prompts[row]); n < len(seq); n++ {
			s := tensor.NoGradScope()
			o := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(seq[:n], 1, int64(n)), TaskIDs: s.FromInt64([]int64{task}, 1)})
			require.NoError(t, s.Err())
			last := s.Float32s(s.Select(o.Logits, 1, o.Logits.Size(1)-1))
			s.Close()
			best := 0
			for i, v := range last {
				if v > last[best] {
					best = i
				}
			}
			require.EqualValues(t, best, seq[n], "row %d step %d", row, n)
		}
	}
	require.NotEqual(t, out.Sequences[0], out.Sequences[1], "the two tasks continue the same prompt differently")
	_, err = generate.Generate(context.Background(), m, generate.Input{InputIDs: prompts}, generate.GenerationConfig{MaxNewTokens: 2})
	require.ErrorContains(t, err, "task_ids")
}

// The source-task inits read a saved multitask adapter (safetensors);
// EXACT_SOURCE_TASK copies one task's factors, AVERAGE_SOURCE_TASKS their
// mean, ONLY_SOURCE_SHARED the table only; bad settings name the field.
func TestMultitaskSourceInits(t *testing.T) {
	src := adapterDir(t, mpt)
	newWith := func(init string, tasks int, path string) (*peft.Model, error) {
		return peft.New(loadBase(t), &prompt.MultitaskConfig{TuningConfig: prompt.TuningConfig{
			PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 8}, PromptTuningInit: init},
			NumTasks: tasks, NumRanks: 2, PromptTuningInitTask: 1, PromptTuningInitStateDictPath: path})
	}
	shipped := func(key string) []float32 {
		m, err := peft.Load(loadBase(t), src)
		require.NoError(t, err)
		defer nn.FreeParams(m)
		return testutil.Snapshot(t, m)["prompt_encoder.default."+key]
	}
	table, cols, rows := shipped("embedding.weight"), shipped("prefix_task_cols"), shipped("prefix_task_rows")

	m, err := newWith(prompt.ExactSourceTask, 1, src)
	require.NoError(t, err)
	snap := testutil.Snapshot(t, m)
	require.True(t, testutil.EqualF32(table, snap["prompt_encoder.default.embedding.weight"]))
	require.True(t, testutil.EqualF32(cols[len(cols)/2:], snap["prompt_encoder.default.prefix_task_cols"]))
	require.True(t, testutil.EqualF32(rows[len(rows)/2:], snap["prompt_encoder.default.prefix_task_rows"]))
	nn.FreeParams(m)

	m, err = newWith(prompt.AverageSourceTasks, 1, filepath.Join(src, peft.WeightsName))
	require.NoError(t, err)
	snap = testutil.Snapshot(t, m)
	avg := snap["prompt_encoder.default.prefix_task_rows"]
	for i := range avg {
		require.InDelta(t, (rows[i]+rows[len(rows)/2+i])/2, avg[i], 1e-7)
	}
	nn.FreeParams(m)

	m, err = newWith(prompt.OnlySourceShared, 2, src)
	require.NoError(t, err)
	snap = testutil.Snapshot(t, m)
	require.True(t, testutil.EqualF32(table, snap["prompt_encoder.default.embedding.weight"]))
	require.False(t, testutil.EqualF32(cols, snap["prompt_encoder.default.prefix_task_cols"]))
	nn.FreeParams(m)

	_, err = newWith(prompt.ExactSourceTask, 2, src)
	require.ErrorContains(t, err, `"num_tasks" must be 1`)
	_, err = newWith(prompt.ExactSourceTask, 1, "")
	require.ErrorContains(t, err, `"prompt_tuning_init_state_dict_path" needs to be specified`)
	pt := filepath.Join(t.TempDir(), "source.pt")
	require.NoError(t, os.WriteFile(pt, []byte("x"), 0o644))
	_, err = newWith(prompt.AverageSourceTasks, 1, pt)
	require.ErrorContains(t, err, "only .safetensors files")
	_, err = peft.ParseConfig("adapter_config.json", []byte(`{"peft_type": "MULTITASK_PROMPT_TUNING", "num_virtual_tokens": 8, "prompt_tuning_init": "NOPE"}`))
	require.ErrorContains(t, err, `"prompt_tuning_init"`)
	_, err = peft.ParseConfig("adapter_config.json", []byte(`{"peft_type": "MULTITASK_PROMPT_TUNING", "num_virtual_tokens": 8, "num_tasks": -1}`))
	require.ErrorContains(t, err, `"num_tasks"`)
}

// Keys a newer PEFT writes survive a re-save; on a bfloat16 base the
// float32 prompts are cast to the activations' dtype.
func TestMultitaskConfigKeysAndBFloat16(t *testing.T) {
	cfg, err := peft.ParseConfig("adapter_config.json", []byte(`{"peft_type": "MULTITASK_PROMPT_TUNING", "num_virtual_tokens": 8,
		"num_tasks": 3, "num_ranks": 2, "prompt_tuning_init": "RANDOM", "peft_version": "0.17.0"}`))
	require.NoError(t, err)
	c := cfg.(*prompt.MultitaskConfig)
	require.Equal(t, 3, c.NumTasks)
	js, err := c.MarshalJSON()
	require.NoError(t, err)
	require.Contains(t, string(js), `"peft_version": "0.17.0"`)
	require.Contains(t, string(js), `"peft_type": "MULTITASK_PROMPT_TUNING"`)
	require.Contains(t, string(js), `"num_tasks": 3`)

	e := openExpected(t, mpt)
	base, err := llama.Load(testutil.Fixtures(t, "llama-tiny"), models.WithDType("bfloat16"))
	require.NoError(t, err)
	m, err := peft.Load(base, adapterDir(t, mpt))
	require.NoError(t, err)
	defer nn.FreeParams(m)
	got, _ := mptLogits(t, m, e, true)
	d := testutil.MaxDiff(got, e.F32(t, "logits"))
	t.Logf("bfloat16 vs PEFT's float32 logits: %.3g", d)
	require.Less(t, d, 0.1)
}

// TEXT init: the shared table is the word embeddings of the text's tokens,
// repeated to num_virtual_tokens, as prompt tuning's TEXT init.
func TestMultitaskTextInit(t *testing.T) {
	base := loadBase(t)
	m, err := peft.New(base, &prompt.MultitaskConfig{TuningConfig: prompt.TuningConfig{
		PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4}, PromptTuningInit: prompt.Text,
		PromptTuningInitText: "x", Tokenizer: fakeTokenizer{ids: []int64{5, 9}, name: "tok"}}, NumTasks: 2})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	snap := testutil.Snapshot(t, m)
	emb := snap["base_model.model.model.embed_tokens.weight"]
	table := snap["prompt_encoder.default.embedding.weight"]
	for i, id := range []int{5, 9, 5, 9} {
		require.True(t, testutil.EqualF32(emb[id*64:(id+1)*64], table[i*64:(i+1)*64]), "row %d", i)
	}
	cfg, _ := m.Config("default")
	js, err := cfg.MarshalJSON()
	require.NoError(t, err)
	require.Contains(t, string(js), `"tokenizer_name_or_path": "tok"`)
	require.Contains(t, string(js), `"num_ranks": 1`)
}

// The Trainer passes each sample's task (data.Sample.TaskID, PEFT's
// task_ids column) to the forward: training and evaluation run, the loss
// goes down, and without task ids the Trainer reports PEFT's error.
func TestMultitaskTrainerTaskColumn(t *testing.T) {
	tensor.ManualSeed(5)
	m, err := peft.New(loadBase(t), &prompt.MultitaskConfig{TuningConfig: prompt.TuningConfig{
		PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4}}, NumTasks: 2, NumRanks: 1})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	ds := &data.Dataset{}
	for i := 0; i < 8; i++ {
		ids := []int64{1, int64(10 + i), int64(20 + i%2), 7, 9}
		task := int64(i % 2)
		ds.Samples = append(ds.Samples, data.Sample{InputIDs: ids, Labels: ids, AttentionMask: []int64{1, 1, 1, 1, 1}, TaskID: &task})
	}
	before, err := train.Evaluate(m, ds, 4)
	require.NoError(t, err)
	tr := train.New(m, train.Config{LR: 3e-2, BatchSize: 4, Epochs: 3, Progress: io.Discard})
	require.NoError(t, tr.Fit(ds, nil))
	after, err := train.Evaluate(m, ds, 4)
	require.NoError(t, err)
	t.Logf("eval loss %.4f -> %.4f", before, after)
	require.Less(t, after, before)

	for i := range ds.Samples {
		ds.Samples[i].TaskID = nil
	}
	_, err = train.Evaluate(m, ds, 4)
	require.ErrorContains(t, err, "task_ids cannot be None")
}
