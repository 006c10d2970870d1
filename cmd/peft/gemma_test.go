package main

import (
	"bytes"
	"math"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/stretchr/testify/require"
)

// `peft logits` picks the Gemma family from config.json's model_type and
// reproduces the reference's base, LoRA-adapted and merged logits
// (testdata/ref/gemma-reference.py).
func TestLogitsCommandGemma(t *testing.T) {
	for _, name := range []string{"gemma2-tiny", "gemma3-tiny"} {
		dir, err := filepath.Abs(filepath.Join("..", "..", "testdata", "ref", name))
		require.NoError(t, err)
		expected := filepath.Join(dir, "expected.safetensors")
		want, err := safetensors.OpenFiles(expected)
		require.NoError(t, err)
		defer want.Close()
		for _, c := range []struct {
			key  string
			args []string
		}{
			{"logits", nil},
			{"logits_lora", []string{"--adapter", filepath.Join(dir, "lora")}},
			{"logits_merged", []string{"--adapter", filepath.Join(dir, "lora"), "--merge"}},
		} {
			out := filepath.Join(t.TempDir(), "out.safetensors")
			var stderr bytes.Buffer
			args := append([]string{"logits", "--model", dir, "--input", expected, "--out", out}, c.args...)
			require.NoError(t, run(args, &bytes.Buffer{}, &stderr), stderr.String())
			got, err := safetensors.OpenFiles(out)
			require.NoError(t, err)
			gb, err := got.Data("logits")
			require.NoError(t, err)
			wb, err := want.Data(c.key)
			require.NoError(t, err)
			g, w := safetensors.Float32s(gb), safetensors.Float32s(wb)
			require.Len(t, g, len(w))
			var d float64
			for i := range g {
				d = math.Max(d, math.Abs(float64(g[i]-w[i])))
			}
			require.LessOrEqual(t, d, 1e-4, name+" "+c.key)
			got.Close()
		}
	}
}

// `peft estimate --measure` builds and trains a Gemma model of the config
// (the shape's family "gemma": gemma2, gemma3_text).
func TestMeasurePeakGemma(t *testing.T) {
	path := filepath.Join("..", "..", "testdata", "ref", "gemma3-tiny", "config.json")
	shape := &peft.ModelShape{Family: "gemma", ModelType: "gemma3_text", Vocab: 96}
	peak, err := measurePeak(path, shape, "lora", peft.MemoryOptions{R: 4, Batch: 1, Seq: 16})
	require.NoError(t, err)
	require.Positive(t, peak)
}
