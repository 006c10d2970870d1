package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/gopeft/peft/examples/custom-model/tinymix"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// The whole program: LoRA on the family's own modules trains (the loss at
// least halves in 40 steps), the adapter is saved in PEFT's format with
// the family's module names, and base + adapter reload to identical logits.
func TestTrainSaveReload(t *testing.T) {
	dir := t.TempDir()
	res, err := run(dir, 40)
	require.NoError(t, err)
	require.Len(t, res.Losses, 40)
	first, last := res.Losses[0], res.Losses[len(res.Losses)-1]
	t.Logf("loss %.4f → %.4f", first, last)
	require.Less(t, last, first/2, "the loss goes down")
	require.Equal(t, 0.0, res.MaxDiff, "the reloaded base + adapter give the same logits")
	// 2 layers × (w_in: A [4, 32] + B [64, 4]; w_out: A [4, 64] + B [32, 4]) = 1,536; the base 10,688
	require.Equal(t, "trainable params: 1,536 || all params: 12,224 || trainable%: 12.5654", res.Summary)

	raw, err := os.ReadFile(filepath.Join(dir, "adapter", "adapter_config.json"))
	require.NoError(t, err)
	var cfg struct {
		PeftType      string   `json:"peft_type"`
		TargetModules []string `json:"target_modules"`
		Base          string   `json:"base_model_name_or_path"`
		R             int      `json:"r"`
	}
	require.NoError(t, json.Unmarshal(raw, &cfg))
	require.Equal(t, "LORA", cfg.PeftType)
	require.Equal(t, []string{"w_in", "w_out"}, cfg.TargetModules)
	require.Equal(t, filepath.Join(dir, "base"), cfg.Base)
	require.Equal(t, 4, cfg.R)

	f, err := safetensors.Open(filepath.Join(dir, "adapter", "adapter_model.safetensors"))
	require.NoError(t, err)
	defer f.Close()
	shapes := map[string][]int64{}
	for _, n := range f.Names() {
		info, _ := f.Info(n)
		shapes[n] = info.Shape
	}
	want := map[string][]int64{}
	for _, l := range []string{"0", "1"} {
		p := "base_model.model.layers." + l
		want[p+".w_in.lora_A.weight"] = []int64{4, 32}
		want[p+".w_in.lora_B.weight"] = []int64{64, 4}
		want[p+".w_out.lora_A.weight"] = []int64{4, 64}
		want[p+".w_out.lora_B.weight"] = []int64{32, 4}
	}
	require.Equal(t, want, shapes, "PEFT's key names, the family's module paths")
}

// TokenShift against the formula by hand: x + mix·(x_prev − x), zeros
// before the first position.
func TestTokenShiftMatchesFormula(t *testing.T) {
	s := tensor.NoGradScope()
	defer s.Close()
	x := []float32{1, 2, 3, 4, 5, 6} // [1, 3, 2]
	mix := []float32{0.5, 0.25}
	ts := &tinymix.TokenShift{Mix: nn.NewParam(s.Keep(s.FromFloat32(mix, 2)))}
	defer ts.Mix.Free()
	got := s.Float32s(ts.Forward(s, s.FromFloat32(x, 1, 3, 2)))
	require.NoError(t, s.Err())
	var want []float32
	for p := 0; p < 3; p++ {
		for c := 0; c < 2; c++ {
			prev := float32(0)
			if p > 0 {
				prev = x[(p-1)*2+c]
			}
			cur := x[p*2+c]
			want = append(want, cur+mix[c]*(prev-cur))
		}
	}
	require.InDeltaSlice(t, want, got, 1e-6)

	ts.Forward(s, s.FromFloat32(x, 3, 2))
	require.ErrorContains(t, s.Err(), "token shift: want [batch, seq, hidden]")
}

// The family's Load names what is wrong with a folder.
func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := tinymix.Load(dir)
	require.ErrorContains(t, err, "config.json")

	write := func(cfg string) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o644))
	}
	write(`{"model_type": "llama"}`)
	_, err = tinymix.Load(dir)
	require.ErrorContains(t, err, `model_type "llama"`)
	write(`{"model_type": "tinymix", "vocab_size": 0, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "layer_norm_eps": 1e-5}`)
	_, err = tinymix.Load(dir)
	require.ErrorContains(t, err, `"vocab_size" is 0`)
	write(`{"model_type": "tinymix", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "layer_norm_eps": 1e-5}`)
	_, err = tinymix.Load(dir)
	require.Error(t, err, "no weights")

	// weights of another size: the key and the shapes are named
	other, err := tinymix.New(tinymix.Config{VocabSize: 8, HiddenSize: 4, IntermediateSize: 8, NumHiddenLayers: 1, LayerNormEps: 1e-5}, 1)
	require.NoError(t, err)
	defer other.Free()
	require.NoError(t, other.Save(filepath.Join(dir, "other")))
	os.Rename(filepath.Join(dir, "other", "model.safetensors"), filepath.Join(dir, "model.safetensors"))
	_, err = tinymix.Load(dir)
	require.ErrorContains(t, err, "embed_tokens.weight")

	m, err := tinymix.New(tinymix.Config{VocabSize: 8, HiddenSize: 4, IntermediateSize: 8, NumHiddenLayers: 1, LayerNormEps: 1e-5}, 1)
	require.NoError(t, err)
	defer m.Free()
	s := tensor.NoGradScope()
	defer s.Close()
	_, err = m.Forward(s, models.Inputs{InputIDs: s.FromInt64([]int64{1, 2}, 2)})
	require.ErrorContains(t, err, "input_ids: want int64 [batch, seq]")
}

// The parameter names are the module tree's paths (the checkpoint's keys).
func TestParameterNames(t *testing.T) {
	m, err := tinymix.New(tinymix.Config{VocabSize: 8, HiddenSize: 4, IntermediateSize: 8, NumHiddenLayers: 1, LayerNormEps: 1e-5}, 1)
	require.NoError(t, err)
	defer m.Free()
	var names []string
	for _, np := range nn.NamedParams(m) {
		names = append(names, np.Name)
	}
	sort.Strings(names)
	require.Equal(t, []string{"embed_tokens.weight", "layers.0.norm.bias", "layers.0.norm.weight", "layers.0.shift.mix",
		"layers.0.w_in.bias", "layers.0.w_in.weight", "layers.0.w_out.bias", "layers.0.w_out.weight",
		"lm_head.weight", "norm.bias", "norm.weight"}, names)
}
