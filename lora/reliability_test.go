package lora_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/models/gpt2"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/stretchr/testify/require"
)

// editConfig rewrites keys of dir's adapter_config.json.
func editConfig(t *testing.T, dir string, set map[string]any) {
	p := filepath.Join(dir, peft.ConfigName)
	data, err := os.ReadFile(p)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(data, &m))
	for k, v := range set {
		m[k] = v
	}
	out, err := json.Marshal(m)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, out, 0o644))
}

// Issue #19 items 1 and 6: values of adapter_config.json that used to panic
// or be accepted silently are refused by Validate, with the field named.
func TestBadLoRAConfigRefused(t *testing.T) {
	cases := []struct {
		name string
		set  map[string]any
		want string
	}{
		{"layers_pattern not a regex", map[string]any{"layers_pattern": "(", "layers_to_transform": []int{0}}, `"layers_pattern"`},
		{"layers_pattern list with a bad regex", map[string]any{"layers_pattern": []string{"layers", "[z-a]"}, "layers_to_transform": 1}, `"layers_pattern"`},
		{"rank_pattern key not a regex", map[string]any{"rank_pattern": map[string]any{"q_proj(": 4}}, `"rank_pattern"`},
		{"alpha_pattern key not a regex", map[string]any{"alpha_pattern": map[string]any{"*v_proj": 4}}, `"alpha_pattern"`},
		{"rank_pattern value not positive", map[string]any{"rank_pattern": map[string]any{"q_proj": 0}}, `"rank_pattern"`},
		{"dropout 1", map[string]any{"lora_dropout": 1.0}, `"lora_dropout"`},
		{"dropout negative", map[string]any{"lora_dropout": -0.1}, `"lora_dropout"`},
		{"negative layer", map[string]any{"layers_to_transform": -1}, `"layers_to_transform"`},
	}
	base := loadBase(t)
	defer base.Free()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyAdapter(t, "lora-default")
			editConfig(t, dir, c.set)
			require.NotPanics(t, func() {
				_, err := peft.Load(base, dir)
				require.ErrorContains(t, err, c.want)
			})
			untouched(t, base)
		})
	}
}

// Issue #19 item 5: an adapter tensor stored with an integer dtype is
// refused, as the base loader refuses one (it used to be converted and
// used).
func TestIntegerAdapterTensorRefused(t *testing.T) {
	dir := copyAdapter(t, "lora-default")
	p := filepath.Join(dir, peft.WeightsName)
	set, err := safetensors.OpenFiles(p)
	require.NoError(t, err)
	var all []safetensors.Tensor
	const bad = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
	for _, k := range set.Names() {
		info, _, _ := set.Info(k)
		d, _ := set.Data(k)
		tt := safetensors.Tensor{Name: k, DType: info.DType, Shape: info.Shape, Data: append([]byte(nil), d...)}
		if k == bad { // same byte count: I32 in place of F32
			tt.DType = "I32"
		}
		all = append(all, tt)
	}
	set.Close()
	require.NoError(t, safetensors.Write(p, all, map[string]string{"format": "pt"}))
	base := loadBase(t)
	defer base.Free()
	_, err = peft.Load(base, dir)
	require.ErrorContains(t, err, bad)
	require.ErrorContains(t, err, "I32")
	untouched(t, base)
}

// Issue #19 item 7: an adapter saved by PEFT 0.10 with bias="lora_only"
// has no bias tensors (PEFT's bug); it loads with the base's biases and a
// warning that names the cause, and computes what the same adapter with
// bias="none" computes.
func TestLoraOnlyBiasFromPEFT010(t *testing.T) {
	mk := func(bias string) string {
		src := filepath.Join(fixtures(t), "adapters", "gpt2-tiny", "lora-c_attn")
		dir := t.TempDir()
		set, err := safetensors.OpenFiles(filepath.Join(src, peft.WeightsName))
		require.NoError(t, err)
		var keep []safetensors.Tensor
		for _, k := range set.Names() {
			if strings.HasSuffix(k, ".bias") && !strings.Contains(k, "lora_") {
				continue // what PEFT 0.10 writes under lora_only: no bias
			}
			info, _, _ := set.Info(k)
			d, _ := set.Data(k)
			keep = append(keep, safetensors.Tensor{Name: k, DType: info.DType, Shape: info.Shape, Data: append([]byte(nil), d...)})
		}
		set.Close()
		require.NoError(t, safetensors.Write(filepath.Join(dir, peft.WeightsName), keep, map[string]string{"format": "pt"}))
		data, err := os.ReadFile(filepath.Join(src, peft.ConfigName))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, peft.ConfigName), data, 0o644))
		editConfig(t, dir, map[string]any{"bias": bias})
		return dir
	}
	var warnings []string
	defer func(w func(string)) { peft.Warn = w }(peft.Warn)
	peft.Warn = func(msg string) { warnings = append(warnings, msg) }

	e := openExpected(t, "gpt2-tiny__lora-c_attn")
	load := func(dir string) []float32 {
		base, err := gpt2.Load(filepath.Join(fixtures(t), "gpt2-tiny"))
		require.NoError(t, err)
		defer base.Free()
		m, err := peft.Load(base, dir)
		require.NoError(t, err)
		return logitsOf(t, m, e)
	}
	got := load(mk("lora_only"))
	require.Len(t, warnings, 1)
	require.Contains(t, warnings[0], "lora_only")
	require.Contains(t, warnings[0], "base_layer.bias")
	require.Contains(t, warnings[0], "PEFT 0.10")
	want := load(mk("none"))
	require.Len(t, warnings, 1, "no warning for bias none")
	require.Equal(t, want, got)
}
