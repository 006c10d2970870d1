package lora_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/stretchr/testify/require"
)

func copyAdapter(t *testing.T, name string) string {
	src := filepath.Join(fixtures(t), "adapters", "llama-tiny", name)
	dst := t.TempDir()
	for _, f := range []string{peft.ConfigName, peft.WeightsName} {
		data, err := os.ReadFile(filepath.Join(src, f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dst, f), data, 0o644))
	}
	return dst
}

// untouched asserts the base model carries no adapter layer after a failed load.
func untouched(t *testing.T, base *llama.Model) {
	for _, p := range nn.Paths(base) {
		require.False(t, strings.Contains(p, "lora_") || strings.Contains(p, "base_layer"), "left behind: %s", p)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Run("adapter for another model", func(t *testing.T) {
		cfg := &llama.Config{HiddenSize: 32, IntermediateSize: 64, NumHiddenLayers: 2, NumAttentionHeads: 4, VocabSize: 512}
		other, err := llama.New(cfg, 1)
		require.NoError(t, err)
		defer other.Free()
		_, err = peft.Load(other, filepath.Join(fixtures(t), "adapters", "llama-tiny", "lora-default"))
		require.ErrorContains(t, err, "adapter_model.safetensors")
		require.ErrorContains(t, err, "lora_A.weight")
		require.ErrorContains(t, err, "shape")
		untouched(t, other)
	})
	t.Run("missing key", func(t *testing.T) {
		dir := copyAdapter(t, "lora-default")
		p := filepath.Join(dir, peft.WeightsName)
		set, err := safetensors.OpenFiles(p)
		require.NoError(t, err)
		var keep []safetensors.Tensor
		for _, k := range set.Names() {
			if k == "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight" {
				continue
			}
			info, _, _ := set.Info(k)
			d, _ := set.Data(k)
			keep = append(keep, safetensors.Tensor{Name: k, DType: info.DType, Shape: info.Shape, Data: append([]byte(nil), d...)})
		}
		set.Close()
		require.NoError(t, safetensors.Write(p, keep, nil))
		base := loadBase(t)
		_, err = peft.Load(base, dir)
		require.ErrorContains(t, err, `missing tensor "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"`)
		untouched(t, base)
	})
	t.Run("wrong peft_type", func(t *testing.T) {
		dir := copyAdapter(t, "lora-default")
		p := filepath.Join(dir, peft.ConfigName)
		data, _ := os.ReadFile(p)
		require.NoError(t, os.WriteFile(p, []byte(strings.Replace(string(data), `"LORA"`, `"FOURIERFT"`, 1)), 0o644))
		_, err := peft.Load(loadBase(t), dir)
		require.ErrorContains(t, err, `peft_type "FOURIERFT" is not registered`)
		require.ErrorContains(t, err, "adapter_config.json")
	})
	t.Run("unknown target module", func(t *testing.T) {
		base := loadBase(t)
		_, err := lora.Wrap(base, &lora.Config{R: 4, TargetModules: lora.List("qkv_proj")})
		require.ErrorContains(t, err, `["qkv_proj"] matched no module`)
		require.ErrorContains(t, err, "q_proj")
		untouched(t, base)
	})
	t.Run("bad config value", func(t *testing.T) {
		dir := copyAdapter(t, "lora-default")
		p := filepath.Join(dir, peft.ConfigName)
		data, _ := os.ReadFile(p)
		require.NoError(t, os.WriteFile(p, []byte(strings.Replace(string(data), `"bias": "none"`, `"bias": "some"`, 1)), 0o644))
		_, err := peft.Load(loadBase(t), dir)
		require.ErrorContains(t, err, `field "bias"`)
	})
	t.Run("unexpected key", func(t *testing.T) {
		dir := copyAdapter(t, "lora-default")
		p := filepath.Join(dir, peft.WeightsName)
		set, _ := safetensors.OpenFiles(p)
		var all []safetensors.Tensor
		for _, k := range set.Names() {
			info, _, _ := set.Info(k)
			d, _ := set.Data(k)
			all = append(all, safetensors.Tensor{Name: k, DType: info.DType, Shape: info.Shape, Data: append([]byte(nil), d...)})
		}
		set.Close()
		all = append(all, safetensors.Tensor{Name: "base_model.model.model.layers.0.mlp.gate_proj.lora_A.weight", DType: "F32", Shape: []int64{1}, Data: make([]byte, 4)})
		require.NoError(t, safetensors.Write(p, all, nil))
		base := loadBase(t)
		_, err := peft.Load(base, dir)
		require.ErrorContains(t, err, `unexpected tensor "base_model.model.model.layers.0.mlp.gate_proj.lora_A.weight"`)
		untouched(t, base)
	})
}

func TestMultiAdapter(t *testing.T) {
	fx := filepath.Join(fixtures(t), "adapters", "llama-tiny")
	m, err := peft.Load(loadBase(t), filepath.Join(fx, "lora-default"))
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.NoError(t, m.LoadAdapter(filepath.Join(fx, "lora-dora"), "dora"))
	require.Equal(t, []string{"default", "dora"}, m.Adapters())
	require.Equal(t, "default", m.ActiveAdapter())
	eDefault := openExpected(t, "llama-tiny__lora-default")
	eDora := openExpected(t, "llama-tiny__lora-dora")
	require.LessOrEqual(t, maxDiff(logitsOf(t, m, eDefault), eDefault.f32(t, "logits")), 1e-4)
	require.NoError(t, m.SetAdapter("dora"))
	require.LessOrEqual(t, maxDiff(logitsOf(t, m, eDora), eDora.f32(t, "logits")), 1e-4)
	// only the active adapter trains
	for _, np := range m.TrainableParams() {
		require.Contains(t, np.Name, ".dora.")
	}
	require.Error(t, m.AddAdapter("dora", &lora.Config{R: 2}))
	require.ErrorContains(t, m.SetAdapter("nope"), `no adapter "nope"`)
	// merge, then deleting a merged adapter is refused
	require.NoError(t, m.Merge(false))
	require.LessOrEqual(t, maxDiff(logitsOf(t, m, eDora), eDora.f32(t, "logits")), 1e-4)
	require.ErrorContains(t, m.DeleteAdapter("dora"), "merged")
	require.NoError(t, m.Unmerge())
	require.NoError(t, m.DeleteAdapter("dora"))
	require.Equal(t, "default", m.ActiveAdapter())
	require.LessOrEqual(t, maxDiff(logitsOf(t, m, eDefault), eDefault.f32(t, "logits")), 1e-4)
	// unload gives back the base model exactly
	base, err := m.Unload()
	require.NoError(t, err)
	require.LessOrEqual(t, maxDiff(logitsOf(t, base, eDefault), eDefault.f32(t, "logits_base")), 1e-5) // merge+unmerge: fp32 rounding
}

func TestSafeMergeRefusesNaN(t *testing.T) {
	m, err := peft.Load(loadBase(t), filepath.Join(fixtures(t), "adapters", "llama-tiny", "lora-default"))
	require.NoError(t, err)
	defer nn.FreeParams(m)
	// poison one lora_B
	for _, np := range nn.NamedParams(m) {
		if strings.HasSuffix(np.Name, "layers.1.self_attn.q_proj.lora_B.default.weight") {
			data := make([]float32, np.Param.Numel())
			for i := range data {
				data[i] = float32(nanValue())
			}
			setParam(t, np.Param, data)
		}
	}
	err = m.Merge(true)
	require.ErrorContains(t, err, "not finite")
}
