package adapter_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/adapter"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/stretchr/testify/require"
)

// AdapterHub's layout: keys <layer>.attention_adapters.adapters.<name>.…
// and <layer>.output_adapters.adapters.<name>.…, a "config" object with
// BnConfig's fields; written and read back to the same logits.
func TestAdapterHubRoundTrip(t *testing.T) {
	cfg := adapter.Houlsby()
	cfg.TrainLayerNorms = false
	m, err := adapter.Wrap(loadLlama(t), cfg)
	require.NoError(t, err)
	trainSteps(t, m, 3, 0.01)
	want := logits(t, m)
	dir := t.TempDir()
	require.NoError(t, adapter.SaveAdapterHub(m, dir, "default"))

	set, err := safetensors.OpenFiles(filepath.Join(dir, adapter.HubWeightsName))
	require.NoError(t, err)
	names := set.Names()
	set.Close()
	require.Len(t, names, 2*2*4)
	require.Contains(t, names, "model.layers.0.attention_adapters.adapters.default.adapter_down.0.weight")
	require.Contains(t, names, "model.layers.1.output_adapters.adapters.default.adapter_up.bias")
	js := readJSON(t, filepath.Join(dir, adapter.HubConfigName))
	require.Equal(t, "default", js["name"])
	require.Equal(t, "adapters.1.2.0", js["version"])
	require.Equal(t, 64.0, js["hidden_size"])
	require.Equal(t, "llama", js["model_type"])
	c := js["config"].(map[string]any)
	require.Equal(t, true, c["mh_adapter"])
	require.Equal(t, "swish", c["non_linearity"])
	require.Equal(t, false, c["original_ln_before"])
	require.Equal(t, "bottleneck", c["architecture"])

	loaded, err := adapter.LoadAdapterHub(loadLlama(t), dir)
	require.NoError(t, err)
	require.Equal(t, want, logits(t, loaded))
	tr, _ := nn.CountParams(loaded)
	require.Zero(t, tr)

	// LayerNorm training is not representable
	h, err := adapter.Wrap(loadLlama(t), adapter.Houlsby())
	require.NoError(t, err)
	require.ErrorContains(t, adapter.SaveAdapterHub(h, t.TempDir(), "default"), "input_layernorm")
}

func TestAdapterHubLoadErrors(t *testing.T) {
	m, err := adapter.Wrap(loadBloom(t), adapter.Pfeiffer())
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, adapter.SaveAdapterHub(m, dir, "default"))
	cfgPath := filepath.Join(dir, adapter.HubConfigName)
	orig, _ := os.ReadFile(cfgPath)
	js := readJSON(t, cfgPath)
	require.Equal(t, "bloom", js["model_type"])

	write := func(from, to string) {
		data := []byte(replaceOnce(string(orig), from, to))
		require.NoError(t, os.WriteFile(cfgPath, data, 0o644))
	}
	// AdapterHub's own seq_bn preset feeds the residual stream to the adapter
	write(`"original_ln_before": false`, `"original_ln_before": true`)
	_, err = adapter.LoadAdapterHub(loadBloom(t), dir)
	require.ErrorContains(t, err, `"original_ln_before"`)
	write(`"use_gating": false`, `"use_gating": true`)
	_, err = adapter.LoadAdapterHub(loadBloom(t), dir)
	require.ErrorContains(t, err, `"use_gating"`)
	write(`"name": "default"`, `"name": "other"`)
	_, err = adapter.LoadAdapterHub(loadBloom(t), dir)
	require.ErrorContains(t, err, `missing tensor "transformer.h.0.output_adapters.adapters.other.`)
	write(`"reduction_factor": 16`, `"reduction_factor": 8`)
	_, err = adapter.LoadAdapterHub(loadBloom(t), dir)
	require.ErrorContains(t, err, "shape")
	require.NoError(t, os.WriteFile(cfgPath, orig, 0o644))
	_, err = adapter.LoadAdapterHub(loadBloom(t), dir)
	require.NoError(t, err)
	require.NoError(t, os.Remove(filepath.Join(dir, adapter.HubWeightsName)))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pytorch_adapter.bin"), []byte("x"), 0o644))
	_, err = adapter.LoadAdapterHub(loadBloom(t), dir)
	require.ErrorContains(t, err, "use_safetensors=True")
}

func replaceOnce(s, from, to string) string {
	for i := 0; i+len(from) <= len(s); i++ {
		if s[i:i+len(from)] == from {
			return s[:i] + to + s[i+len(from):]
		}
	}
	panic("not found: " + from)
}
