package peft_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

const tinyAdapters = "../testdata/hf/adapters/llama-tiny"

// PEFT's from_pretrained(adapter_name=, is_trainable=), load_adapter,
// set_adapter with a list, active_adapters and
// save_pretrained(selected_adapters=).
func TestLoadNamesAdaptersAndSelectsThem(t *testing.T) {
	m, err := peft.Load(loadTiny(t), filepath.Join(tinyAdapters, "lora-default"), peft.WithAdapterName("x"))
	require.NoError(t, err)
	require.Equal(t, []string{"x"}, m.Adapters())
	require.Equal(t, []string{"x"}, m.ActiveAdapters())
	require.Equal(t, "x", m.ActiveAdapter())
	require.Empty(t, m.TrainableParams(), "is_trainable=False: frozen")

	require.NoError(t, m.LoadAdapter(filepath.Join(tinyAdapters, "lora-rich"), "rich", peft.Trainable()))
	require.Equal(t, []string{"x"}, m.ActiveAdapters(), "a loaded second adapter is not activated")
	require.NoError(t, m.SetAdapter("x", "rich"))
	require.Equal(t, []string{"x", "rich"}, m.ActiveAdapters())
	nx, nrich := 0, 0
	for _, np := range m.TrainableParams() {
		switch {
		case strings.Contains(np.Name, ".x."):
			nx++
		case strings.Contains(np.Name, ".rich."):
			nrich++
		}
	}
	require.Positive(t, nx)
	require.Positive(t, nrich)
	require.ErrorContains(t, m.SetAdapter(), "at least one adapter")
	require.ErrorContains(t, m.SetAdapter("x", "nope"), `no adapter "nope"`)
	require.ErrorContains(t, m.SetAdapter("x", "x"), "named twice")

	dir := t.TempDir()
	require.ErrorContains(t, m.SaveSelected(dir, "nope"), `selected adapter "nope" does not exist`)
	require.NoError(t, m.SaveSelected(dir, "rich"))
	require.FileExists(t, filepath.Join(dir, "rich", peft.WeightsName))
	require.NoFileExists(t, filepath.Join(dir, peft.ConfigName), "only the selected adapter is written")
	require.NoFileExists(t, filepath.Join(dir, "x", peft.ConfigName))

	require.NoError(t, m.DeleteAdapter("x"))
	require.Equal(t, []string{"rich"}, m.ActiveAdapters(), "the other active adapter stays active")
}

// Every adapter records the base model's path, also the ones added later
// (PEFT writes base_model_name_or_path for each saved adapter).
func TestAddedAdapterSavesBaseModelName(t *testing.T) {
	m, err := lora.Wrap(loadTiny(t), &lora.Config{TargetModules: lora.List("q_proj")})
	require.NoError(t, err)
	require.NoError(t, m.AddAdapter("second", &lora.Config{TargetModules: lora.List("v_proj")}))
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	for _, sub := range []string{"", "second"} {
		raw, err := os.ReadFile(filepath.Join(dir, sub, peft.ConfigName))
		require.NoError(t, err)
		var cfg struct {
			Base *string `json:"base_model_name_or_path"`
		}
		require.NoError(t, json.Unmarshal(raw, &cfg))
		require.NotNil(t, cfg.Base, "adapter %q", sub)
		require.Equal(t, llamaTiny, *cfg.Base, "adapter %q", sub)
	}
}

// Two adapters with their own copy of a modules_to_save layer cannot be
// active together (PEFT's ModulesToSaveWrapper raises too).
func TestSetAdapterRefusesTwoModulesToSaveCopies(t *testing.T) {
	m, err := lora.Wrap(loadTiny(t), &lora.Config{TargetModules: lora.List("q_proj"), ModulesToSave_: []string{"lm_head"}})
	require.NoError(t, err)
	require.NoError(t, m.AddAdapter("second", &lora.Config{TargetModules: lora.List("q_proj"), ModulesToSave_: []string{"lm_head"}}))
	require.ErrorContains(t, m.SetAdapter("default", "second"), `modules_to_save "lm_head" has a copy for each of [default second]`)
	require.Equal(t, []string{"default"}, m.ActiveAdapters(), "nothing changed")
}

// Loading an adapter for inference puts the model in eval mode (PEFT's
// load_adapter calls eval() when is_trainable is False): dropout stops.
func TestLoadForInferenceSwitchesDropoutOff(t *testing.T) {
	m, err := lora.Wrap(loadTiny(t), &lora.Config{TargetModules: lora.List("q_proj", "v_proj"), LoraDropout: 0.5,
		InitLoraWeights: lora.Init{Value: "false"}})
	require.NoError(t, err)
	nn.SetTraining(m, true)
	s := tensor.NoGradScope()
	defer s.Close()
	require.Greater(t, maxAbs(logits(t, s, m), logits(t, s, m)), 0.0, "dropout is on while training")
	require.NoError(t, m.LoadAdapter(filepath.Join(tinyAdapters, "lora-default"), "x"))
	require.Zero(t, maxAbs(logits(t, s, m), logits(t, s, m)), "eval mode after an inference load")
}
