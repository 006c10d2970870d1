package lora_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/stretchr/testify/require"
)

func loadBase(t *testing.T) *llama.Model {
	base, err := llama.Load(filepath.Join(fixtures(t), "llama-tiny"))
	require.NoError(t, err)
	return base
}

func readJSON(t *testing.T, path string) map[string]any {
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(data, &m))
	return m
}

func sortedIfList(v any) any {
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

// An adapter created here from each fixture's settings saves exactly the
// keys, shapes and adapter_config.json fields that Python PEFT saved.
func TestCreatedAdapterHasPEFTsFormat(t *testing.T) {
	cases := map[string]*lora.Config{
		"lora-default": {R: 8, LoraAlpha: 16, TargetModules: lora.List("q_proj", "v_proj")},
		"lora-rich": {R: 4, LoraAlpha: 8, UseRSLoRA: true, Bias: "lora_only", ModulesToSave_: []string{"lm_head"},
			TargetModules: lora.Regex(`.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)`)},
		"lora-dora": {R: 8, LoraAlpha: 16, UseDoRA: true, TargetModules: lora.List("q_proj", "v_proj")},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			py := filepath.Join(fixtures(t), "adapters", "llama-tiny", name)
			cfg.BaseModelNameOrPath = "llama-tiny"
			m, err := lora.Wrap(loadBase(t), cfg)
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
			meta := got.Files()[0].Metadata()
			require.Equal(t, "pt", meta["format"])
			for k := range meta { // besides PEFT's "format", only the keys of the atomic switch (peft.MetaConfig…)
				require.True(t, k == "format" || strings.HasPrefix(k, "gopeft."), k)
			}

			wc := readJSON(t, filepath.Join(py, peft.ConfigName))
			gc := readJSON(t, filepath.Join(dir, peft.ConfigName))
			require.Equal(t, len(wc), len(gc), "same field set")
			for k, v := range wc {
				require.Contains(t, gc, k)
				require.Equal(t, sortedIfList(v), sortedIfList(gc[k]), "field %s", k)
			}
		})
	}
}

// Load(Save(x)) is bit-identical, through a second process-free round trip.
func TestSaveLoadRoundTrip(t *testing.T) {
	for _, name := range []string{"lora-default", "lora-rich", "lora-dora"} {
		t.Run(name, func(t *testing.T) {
			src := filepath.Join(fixtures(t), "adapters", "llama-tiny", name)
			m, err := peft.Load(loadBase(t), src)
			require.NoError(t, err)
			defer nn.FreeParams(m)
			dir := t.TempDir()
			require.NoError(t, m.Save(dir))
			a, err := safetensors.OpenFiles(filepath.Join(src, peft.WeightsName))
			require.NoError(t, err)
			defer a.Close()
			b, err := safetensors.OpenFiles(filepath.Join(dir, peft.WeightsName))
			require.NoError(t, err)
			defer b.Close()
			require.Equal(t, a.Names(), b.Names())
			for _, k := range a.Names() {
				da, _ := a.Data(k)
				db, _ := b.Data(k)
				require.Equal(t, da, db, k)
			}
			// the config round-trips field for field (unknown fields included)
			require.Equal(t, readJSON(t, filepath.Join(src, peft.ConfigName)), readJSON(t, filepath.Join(dir, peft.ConfigName)))
		})
	}
}

func TestUnknownConfigFieldsSurvive(t *testing.T) {
	src := filepath.Join(fixtures(t), "adapters", "llama-tiny", "lora-default")
	dir := t.TempDir()
	cfg := readJSON(t, filepath.Join(src, peft.ConfigName))
	cfg["some_future_field"] = map[string]any{"x": 1.0}
	data, _ := json.Marshal(cfg)
	require.NoError(t, os.WriteFile(filepath.Join(dir, peft.ConfigName), data, 0o644))
	w, _ := os.ReadFile(filepath.Join(src, peft.WeightsName))
	require.NoError(t, os.WriteFile(filepath.Join(dir, peft.WeightsName), w, 0o644))
	m, err := peft.Load(loadBase(t), dir)
	require.NoError(t, err)
	defer nn.FreeParams(m)
	out := t.TempDir()
	require.NoError(t, m.Save(out))
	require.Equal(t, map[string]any{"x": 1.0}, readJSON(t, filepath.Join(out, peft.ConfigName))["some_future_field"])
}

// The trainable-parameter line has PEFT's numbers for the fixture configs
// (counted by hand from llama-tiny's shapes: 139,584 base parameters).
func TestTrainableParametersLikePEFT(t *testing.T) {
	const base = 32768 + 32768 + 64 + 2*(4096+2048+2048+4096+3*8192+2*64)
	require.Equal(t, 139584, base)
	cases := []struct {
		name             string
		trainable, extra int64 // extra: parameters beyond base+trainable
	}{
		{"lora-default", 2 * (8*64 + 64*8 + 8*64 + 32*8), 0},
		{"lora-dora", 2 * (8*64 + 64*8 + 8*64 + 32*8 + 64 + 32), 0},
		// r=4 on all 7 projections + a trainable copy of lm_head (PEFT counts
		// the original and the copy)
		{"lora-rich", 2*(4*64+64*4+2*(4*64+32*4)+4*64+64*4+2*(4*64+128*4)+4*128+64*4) + 512*64, 0},
	}
	for _, c := range cases {
		m, err := peft.Load(loadBase(t), filepath.Join(fixtures(t), "adapters", "llama-tiny", c.name), peft.Trainable())
		require.NoError(t, err)
		require.Equal(t, peft.FormatTrainable(c.trainable, base+c.trainable+c.extra), peft.TrainableSummary(m), c.name)
		nn.FreeParams(m)
	}
}
