package ia3_test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gopeft/peft/ia3"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

func sortedList(v any) any {
	l, ok := v.([]any)
	if !ok {
		return v
	}
	out := make([]string, len(l))
	for i, x := range l {
		out[i] = x.(string)
	}
	sort.Strings(out)
	return out
}

// An adapter created here with PEFT's defaults for llama saves exactly the
// keys, shapes and adapter_config.json fields Python PEFT saved.
func TestCreatedAdapterHasPEFTsFormat(t *testing.T) {
	py := filepath.Join(fixtures(t), "adapters", "llama-tiny", "ia3")
	m, err := ia3.Wrap(loadLlama(t), &ia3.Config{BaseModelNameOrPath: "llama-tiny"})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))

	want, err := safetensors.OpenFiles(filepath.Join(py, peft.WeightsName))
	require.NoError(t, err)
	defer want.Close()
	got, err := safetensors.OpenFiles(filepath.Join(dir, peft.WeightsName))
	require.NoError(t, err)
	defer got.Close()
	require.Equal(t, want.Names(), got.Names())
	for _, k := range want.Names() {
		wi, _, _ := want.Info(k)
		gi, _, _ := got.Info(k)
		require.Equal(t, wi.Shape, gi.Shape, k)
		require.Equal(t, wi.DType, gi.DType, k)
	}
	wc := readJSON(t, filepath.Join(py, peft.ConfigName))
	gc := readJSON(t, filepath.Join(dir, peft.ConfigName))
	require.Equal(t, len(wc), len(gc), "keys: %v vs %v", wc, gc)
	for k, v := range wc {
		require.Contains(t, gc, k)
		require.Equal(t, sortedList(v), sortedList(gc[k]), k)
	}
}

// BLOOM's defaults: the fused query_key_value (outputs scaled, [3h, 1]) and
// mlp.dense_4h_to_h (inputs scaled, [1, 4h]).
func TestBloomDefaults(t *testing.T) {
	cfg := &ia3.Config{}
	m, err := ia3.Wrap(loadBloom(t), cfg)
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.Equal(t, []string{"query_key_value", "mlp.dense_4h_to_h"}, cfg.TargetModules.List)
	require.Equal(t, []string{"mlp.dense_4h_to_h"}, cfg.FeedforwardModules.List)
	state, err := m.AdapterStateDict(peft.DefaultAdapter)
	require.NoError(t, err)
	shapes := map[string][]int64{}
	for _, np := range state {
		shapes[np.Name] = np.Param.Shape()
	}
	require.Len(t, shapes, 4)
	require.Equal(t, []int64{192, 1}, shapes["base_model.model.transformer.h.0.self_attention.query_key_value.ia3_l"])
	require.Equal(t, []int64{1, 256}, shapes["base_model.model.transformer.h.1.mlp.dense_4h_to_h.ia3_l"])
	require.Contains(t, nn.Format(m), "(ia3_l): ParameterDict(default: [192 1])")
}

// Trainable counts equal the closed forms from the configs: per layer
// llama scales k and v outputs (kv_heads·head_dim each) and down_proj's
// input (intermediate_size); bloom scales the fused qkv output (3h) and
// dense_4h_to_h's input (4h).
func TestTrainableCountsFromConfig(t *testing.T) {
	l := loadLlama(t)
	c := l.Config
	wantLlama := c.NumHiddenLayers * (2*c.NumKeyValueHeads*c.HeadSize() + c.IntermediateSize)
	_, baseTotal := nn.CountParams(l)
	m, err := ia3.Wrap(l, &ia3.Config{})
	require.NoError(t, err)
	tr, total := nn.CountParams(m)
	require.Equal(t, wantLlama, tr)
	require.EqualValues(t, 384, tr)
	require.Equal(t, baseTotal+tr, total)
	require.Equal(t, peft.FormatTrainable(tr, total), peft.TrainableSummary(m))

	b := loadBloom(t)
	bc := b.Config
	mb, err := ia3.Wrap(b, &ia3.Config{})
	require.NoError(t, err)
	tr, _ = nn.CountParams(mb)
	require.Equal(t, bc.NLayer*(3*bc.HiddenSize+4*bc.HiddenSize), tr)
	for _, np := range mb.TrainableParams() {
		require.True(t, strings.HasSuffix(np.Name, ".ia3_l.default"), np.Name)
	}
}

// A freshly wrapped model (vectors of ones) gives exactly the base logits.
func TestUntrainedIsExactlyBase(t *testing.T) {
	e := openExpected(t, "llama-tiny__ia3")
	base := loadLlama(t)
	want := logitsOf(t, base, e)
	m, err := ia3.Wrap(base, &ia3.Config{})
	require.NoError(t, err)
	require.Equal(t, want, logitsOf(t, m, e))

	eb := openExpected(t, "bloom-tiny__lora-qkv")
	bb := loadBloom(t)
	wantB := logitsOf(t, bb, eb)
	mb, err := ia3.Wrap(bb, &ia3.Config{})
	require.NoError(t, err)
	require.Equal(t, wantB, logitsOf(t, mb, eb))
}

func snapshot(t *testing.T, m nn.Module) map[string][]float32 {
	s := tensor.NoGradScope()
	defer s.Close()
	out := map[string][]float32{}
	for _, np := range nn.NamedParams(m) {
		out[np.Name] = append([]float32(nil), s.Float32s(np.Param.T())...)
	}
	require.NoError(t, s.Err())
	return out
}

// T-Few training of IA3 on bloom-tiny: a few AdamW steps lower the total
// loss, change every ia3_l and leave every other parameter bit-identical;
// rank classification then picks the trained answers. Save → load onto a
// fresh base gives the same logits, bit for bit.
func TestTFewTrainingChangesOnlyIA3(t *testing.T) {
	m, err := ia3.Wrap(loadBloom(t), &ia3.Config{})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	nn.SetTraining(m, true)
	examples := []ia3.MultipleChoice{
		{Input: []int64{5, 17, 33}, Choices: [][]int64{{100}, {200, 201}, {300}}, Label: 2},
		{Input: []int64{9, 40}, Choices: [][]int64{{100, 7}, {200}, {300}}, Label: 0},
	}
	b, err := ia3.NewChoiceBatch(examples, 3)
	require.NoError(t, err)
	before := snapshot(t, m)
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: 0.3, WeightDecay: 0})
	defer opt.Free()
	var first, last float64
	for step := 0; step < 30; step++ {
		s := tensor.NewScope()
		l := ia3.TFewLoss(s, m, b)
		s.Backward(l.Total)
		require.NoError(t, s.Err())
		v := s.Item(l.Total)
		if step == 0 {
			first = v
			t.Logf("step 0: LM %.4f UL %.4f LN %.4f", s.Item(l.LM), s.Item(l.Unlikelihood), s.Item(l.LengthNormalized))
		}
		last = v
		s.Close()
		require.NoError(t, opt.Step())
		require.NoError(t, nn.ZeroGrad(m))
	}
	t.Logf("T-Few loss %.4f -> %.4f", first, last)
	require.Less(t, last, first*0.9)
	after := snapshot(t, m)
	for name, v := range before {
		if strings.Contains(name, ".ia3_l.") {
			require.NotEqual(t, v, after[name], name)
		} else {
			require.Equal(t, v, after[name], name)
		}
	}
	pred, _, err := ia3.RankClassify(m, examples, 3)
	require.NoError(t, err)
	require.Equal(t, []int{2, 0}, pred)

	nn.SetTraining(m, false)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	e := openExpected(t, "bloom-tiny__lora-qkv")
	want := logitsOf(t, m, e)
	loaded, err := peft.Load(loadBloom(t), dir)
	require.NoError(t, err)
	defer nn.FreeParams(loaded)
	require.Equal(t, want, logitsOf(t, loaded, e))
	dir2 := t.TempDir()
	require.NoError(t, loaded.Save(dir2))
	for _, f := range []string{peft.WeightsName, peft.ConfigName} {
		a, _ := os.ReadFile(filepath.Join(dir, f))
		b, _ := os.ReadFile(filepath.Join(dir2, f))
		require.Equal(t, a, b, f)
	}
	// merged equals adapted
	merged, err := loaded.MergeAndUnload()
	require.NoError(t, err)
	require.LessOrEqual(t, maxDiff(want, logitsOf(t, merged, e)), 1e-4)
}

func TestConfigAndLoadErrors(t *testing.T) {
	_, err := ia3.Wrap(loadLlama(t), &ia3.Config{TargetModules: ia3.List("nope")})
	require.ErrorContains(t, err, `target_modules ["nope"] matched no module`)
	require.ErrorContains(t, err, "k_proj")
	_, err = ia3.Wrap(loadLlama(t), &ia3.Config{TargetModules: ia3.List("k_proj"), FeedforwardModules: ia3.List("down_proj")})
	require.ErrorContains(t, err, `"feedforward_modules": "down_proj" is not in "target_modules"`)
	_, err = ia3.Wrap(loadLlama(t), &ia3.Config{TargetModules: ia3.List("input_layernorm"), FeedforwardModules: ia3.List()})
	require.ErrorContains(t, err, "IA3 supports Linear and Conv1D")
	_, err = ia3.Wrap(loadLlama(t), &ia3.Config{TargetModules: ia3.Regex("(unclosed"), FeedforwardModules: ia3.List()})
	require.ErrorContains(t, err, "target_modules")

	// an IA3 adapter of llama-tiny on bloom-tiny: PEFT's defaults for bloom
	// are not in the file, so loading fails naming the file and a key
	_, err = peft.Load(loadBloom(t), filepath.Join(fixtures(t), "adapters", "llama-tiny", "ia3"))
	require.Error(t, err)
	require.ErrorContains(t, err, "target_modules")

	// a truncated vector
	dir := t.TempDir()
	src := filepath.Join(fixtures(t), "adapters", "llama-tiny", "ia3")
	cfg, _ := os.ReadFile(filepath.Join(src, peft.ConfigName))
	require.NoError(t, os.WriteFile(filepath.Join(dir, peft.ConfigName), cfg, 0o644))
	m, err := ia3.Wrap(loadLlama(t), &ia3.Config{TargetModules: ia3.List("k_proj", "v_proj", "down_proj"), FeedforwardModules: ia3.List("k_proj")})
	require.NoError(t, err) // k_proj treated as feed-forward: its vector is [1, 64]
	require.NoError(t, m.Save(dir+"/x"))
	data, _ := os.ReadFile(filepath.Join(dir, "x", peft.WeightsName))
	require.NoError(t, os.WriteFile(filepath.Join(dir, peft.WeightsName), data, 0o644))
	_, err = peft.Load(loadLlama(t), dir)
	require.ErrorContains(t, err, ".ia3_l\"")
	require.ErrorContains(t, err, "shape")

	_, err = ia3.Decode([]byte(`{"peft_type":"IA3","target_modules":["k_proj"],"feedforward_modules":["down_proj"]}`))
	require.ErrorContains(t, err, "subset")
}

// modules_to_save copies lm_head (trainable, saved under its own key); a
// second adapter and PEFT's linear add_weighted_adapter (l = Σ wᵢ lᵢ).
func TestModulesToSaveAndWeightedAdapter(t *testing.T) {
	m, err := ia3.Wrap(loadLlama(t), &ia3.Config{ModulesToSave_: []string{"lm_head"}})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	state, err := m.AdapterStateDict(peft.DefaultAdapter)
	require.NoError(t, err)
	var keys []string
	for _, np := range state {
		keys = append(keys, np.Name)
	}
	require.Contains(t, keys, "base_model.model.lm_head.weight")
	tr, _ := nn.CountParams(m)
	require.EqualValues(t, 384+512*64, tr)

	require.NoError(t, m.AddAdapter("second", &ia3.Config{}))
	s := tensor.NoGradScope()
	defer s.Close()
	var lA, lB *nn.Param
	for _, np := range nn.NamedParams(m) {
		switch np.Name {
		case "base_model.model.model.layers.0.self_attn.k_proj.ia3_l.default":
			lA = np.Param
		case "base_model.model.model.layers.0.self_attn.k_proj.ia3_l.second":
			lB = np.Param
		}
	}
	require.NotNil(t, lA)
	require.NotNil(t, lB)
	s.CopyInto(lA.T(), s.Full(tensor.Float32, 2, lA.Shape()...))
	s.CopyInto(lB.T(), s.Full(tensor.Float32, 3, lB.Shape()...))
	require.NoError(t, ia3.AddWeightedAdapter(m, []string{"default", "second"}, []float64{0.5, 2}, "mix"))
	var mix *nn.Param
	for _, np := range nn.NamedParams(m) {
		if np.Name == "base_model.model.model.layers.0.self_attn.k_proj.ia3_l.mix" {
			mix = np.Param
		}
	}
	require.NotNil(t, mix)
	for _, v := range s.Float32s(mix.T()) {
		require.InDelta(t, 0.5*2+2*3, v, 1e-6)
	}
	require.ErrorContains(t, ia3.AddWeightedAdapter(m, []string{"default"}, []float64{1, 2}, "bad"), "weights")
	require.ErrorContains(t, ia3.AddWeightedAdapter(m, []string{"nope"}, []float64{1}, "bad"), `no adapter "nope"`)
}

// Several active adapters multiply their vectors (PEFT's IA3 forward).
func TestForwardScalesOutputsAndInputs(t *testing.T) {
	base := loadBloom(t)
	m, err := ia3.Wrap(base, &ia3.Config{})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	s := tensor.NoGradScope()
	defer s.Close()
	for _, np := range nn.NamedParams(m) {
		if strings.HasSuffix(np.Name, ".ia3_l.default") {
			s.CopyInto(np.Param.T(), s.Full(tensor.Float32, 0.5, np.Param.Shape()...))
		}
	}
	// with every vector at 1/2 the fused qkv output is halved and
	// dense_4h_to_h sees half its input: compare with the model whose
	// weights were scaled by hand
	x := s.FromInt64([]int64{4, 8, 15, 16, 23, 42}, 1, 6)
	got := s.Float32s(m.ForwardT(s, &models.Batch{InputIDs: x}).Logits)
	ref := loadBloom(t)
	defer ref.Free()
	for _, np := range nn.NamedParams(ref) {
		if strings.Contains(np.Name, "query_key_value") || strings.HasSuffix(np.Name, "dense_4h_to_h.weight") {
			s.CopyInto(np.Param.T(), s.MulScalar(np.Param.T(), 0.5))
		}
	}
	want := s.Float32s(ref.ForwardT(s, &models.Batch{InputIDs: x}).Logits)
	require.NoError(t, s.Err())
	require.LessOrEqual(t, maxDiff(got, want), 1e-5)
}

// target_modules "all-linear" becomes the list of the model's linear layers
// (lm_head left out), which is what the saved config holds, as PEFT does;
// feedforward_modules keeps PEFT's default for the model type.
func TestAllLinearIsExpandedAndSaved(t *testing.T) {
	cfg := &ia3.Config{TargetModules: ia3.Regex(peft.AllLinear)}
	m, err := ia3.Wrap(loadLlama(t), cfg)
	require.NoError(t, err)
	want := []string{"down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"}
	require.Equal(t, want, cfg.TargetModules.List)
	require.Len(t, peft.Tuners(m.Base()), 2*len(want), "every linear layer of both decoder layers")
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	saved := readJSON(t, filepath.Join(dir, peft.ConfigName))
	require.Equal(t, sortedList(saved["target_modules"]), sortedList([]any{"down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"}))
	require.Equal(t, []any{"down_proj"}, saved["feedforward_modules"])
}
