package train

import (
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/data"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// llama-tiny__loraplus-trace (PEFT 0.13.2, create_loraplus_optimizer with
// AdamW, lr 1e-3, loraplus_lr_ratio 16, weight decay 0.01): from the
// stored init, the Trainer's LoRA+ steps give PEFT's parameters after
// each of 3 steps, and its losses.
func TestLoraPlusTrace(t *testing.T) {
	set, err := safetensors.OpenFiles(filepath.Join("..", "testdata", "hf", "expected", "llama-tiny__loraplus-trace.safetensors"))
	require.NoError(t, err)
	defer set.Close()
	f32 := func(key string) []float32 {
		b, err := set.Data(key)
		require.NoError(t, err, key)
		return append([]float32(nil), safetensors.Float32s(b)...)
	}
	i64 := func(key string) []int64 {
		b, err := set.Data(key)
		require.NoError(t, err, key)
		return append([]int64(nil), safetensors.Int64s(b)...)
	}
	ids, mask, labels := i64("input_ids"), i64("attention_mask"), i64("labels")
	info, _, _ := set.Info("input_ids")
	rows, cols := int(info.Shape[0]), int(info.Shape[1])
	// the fixture's two rows as samples: row 1 keeps its left padding
	// (attention mask 0, labels -100), so the batch is the fixture's
	ds := &data.Dataset{}
	for r := 0; r < rows; r++ {
		ds.Samples = append(ds.Samples, data.Sample{InputIDs: ids[r*cols : (r+1)*cols],
			AttentionMask: mask[r*cols : (r+1)*cols], Labels: labels[r*cols : (r+1)*cols]})
	}
	wantLosses := f32("losses")

	// PEFT's groups: lora_A at lr, lora_B at lr x 16, both with decay 0.01
	var groups []struct {
		LR          float64  `json:"lr"`
		WeightDecay float64  `json:"weight_decay"`
		Params      []string `json:"params"`
	}
	require.NoError(t, json.Unmarshal([]byte(set.Files()[0].Metadata()["param_groups"]), &groups))

	m := tinyLoRA(t, 0, 1)
	got := LoraPlusGroups(m, m.TrainableParams(), 1e-3, 16, DefaultLoraPlusLREmbedding, 0.01)
	require.Len(t, got, len(groups))
	for i, g := range got {
		names := []string{}
		for _, np := range g.Params {
			names = append(names, np.Name)
		}
		require.ElementsMatch(t, groups[i].Params, names, g.Name)
		require.InDelta(t, groups[i].LR, g.LR, 1e-12, g.Name)
		require.Equal(t, groups[i].WeightDecay, g.WeightDecay, g.Name)
	}

	params := map[string]*nn.Param{}
	for _, np := range m.TrainableParams() {
		params[np.Name] = np.Param
	}
	for steps := 1; steps <= 3; steps++ {
		s := tensor.NoGradScope()
		for name, p := range params {
			s.CopyInto(p.T(), s.FromFloat32(f32("init."+name), p.Shape()...))
		}
		require.NoError(t, s.Err())
		s.Close()
		tr := New(m, Config{LR: 1e-3, WeightDecay: 0.01, LoraPlusLRRatio: 16, Schedule: "constant",
			BatchSize: rows, MaxSteps: steps, NoShuffle: true, Progress: io.Discard})
		require.NoError(t, tr.Fit(ds, nil))
		for k, l := range tr.Losses() {
			require.InDelta(t, float64(wantLosses[k]), l, 2e-5, "loss before step %d", k+1)
		}
		worst := 0.0
		for name, p := range params {
			s := tensor.NoGradScope()
			d := maxAbsDiff(s.Float32s(p.T()), f32("step"+string(rune('0'+steps))+"."+name))
			s.Close()
			worst = max(worst, d)
		}
		t.Logf("after step %d: max abs diff %.3g", steps, worst)
		require.LessOrEqual(t, worst, 1e-5, "step %d", steps)
	}

	// plain AdamW at one rate does not give the trace (the test can fail)
	s := tensor.NoGradScope()
	for name, p := range params {
		s.CopyInto(p.T(), s.FromFloat32(f32("init."+name), p.Shape()...))
	}
	s.Close()
	tr := New(m, Config{LR: 1e-3, WeightDecay: 0.01, Schedule: "constant", BatchSize: rows, MaxSteps: 1, NoShuffle: true, Progress: io.Discard})
	require.NoError(t, tr.Fit(ds, nil))
	worst := 0.0
	for name, p := range params {
		s := tensor.NoGradScope()
		worst = max(worst, maxAbsDiff(s.Float32s(p.T()), f32("step1."+name)))
		s.Close()
	}
	require.Greater(t, worst, 1e-3)
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return 1e30
	}
	d := 0.0
	for i := range a {
		v := float64(a[i]) - float64(b[i])
		if v < 0 {
			v = -v
		}
		d = max(d, v)
	}
	return d
}

// LoRA+ groups on a model with a LoRA embedding adapter and trainable
// norm weights: embedding adapters in "embedding", norm weights (1-D, in
// an RMSNorm) without decay at the B rate, lora_A in A, lora_B in B.
func TestLoraPlusGroupsKinds(t *testing.T) {
	base, err := llama.Load(tinyDir)
	require.NoError(t, err)
	m, err := lora.Wrap(base, &lora.Config{R: 2, LoraAlpha: 4, TargetModules: lora.List("q_proj", "embed_tokens")})
	require.NoError(t, err)
	t.Cleanup(func() { nn.FreeParams(m) })
	params := m.TrainableParams()
	for _, np := range nn.NamedParams(m) {
		if strings.HasSuffix(np.Name, "norm.weight") {
			params = append(params, np)
		}
	}
	groups := LoraPlusGroups(m, params, 1e-3, 8, 5e-6, 0.1)
	byName := map[string]ParamGroup{}
	where := map[string]string{}
	for _, g := range groups {
		byName[g.Name] = g
		for _, np := range g.Params {
			where[np.Name] = g.Name
		}
	}
	require.Len(t, where, len(params))
	for _, np := range params {
		want := "groupA"
		switch {
		case strings.Contains(np.Name, "lora_embedding_"):
			want = "embedding"
		case strings.Contains(np.Name, "lora_B"):
			want = "groupB"
		case strings.HasSuffix(np.Name, "norm.weight"):
			want = "groupB_no_decay"
		}
		require.Equal(t, want, where[np.Name], np.Name)
	}
	require.NotEmpty(t, byName["embedding"].Params)
	require.NotEmpty(t, byName["groupB_no_decay"].Params)
	require.Equal(t, 5e-6, byName["embedding"].LR)
	require.Equal(t, 8e-3, byName["groupB"].LR)
	require.Equal(t, 0.0, byName["groupB_no_decay"].WeightDecay)
	require.Equal(t, 0.1, byName["groupA"].WeightDecay)

	_, err = New(m, Config{LoraPlusLRRatio: -1}).newOptimizer(params)
	require.ErrorContains(t, err, "loraplus_lr_ratio")
	_, err = New(m, Config{LoraPlusLREmbedding: 1e-5}).newOptimizer(params)
	require.ErrorContains(t, err, "loraplus_lr_embedding")
}
