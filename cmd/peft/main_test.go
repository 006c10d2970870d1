package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/safetensors"
	"github.com/stretchr/testify/require"
)

func fixtures(t *testing.T) string {
	f, err := filepath.Abs(filepath.Join("..", "..", "testdata", "hf"))
	require.NoError(t, err)
	_, err = os.Stat(f)
	require.NoError(t, err, "golden fixtures expected at testdata/hf")
	return f
}

func TestLogitsCommandMatchesHF(t *testing.T) {
	fx := fixtures(t)
	expected := filepath.Join(fx, "expected", "llama-tiny__base.safetensors")
	out := filepath.Join(t.TempDir(), "out.safetensors")
	var stderr bytes.Buffer
	// the expected file itself holds input_ids and attention_mask
	err := run([]string{"logits", "--model", filepath.Join(fx, "llama-tiny"), "--input", expected, "--out", out}, &bytes.Buffer{}, &stderr)
	require.NoError(t, err, stderr.String())

	got, err := safetensors.OpenFiles(out)
	require.NoError(t, err)
	defer got.Close()
	want, err := safetensors.OpenFiles(expected)
	require.NoError(t, err)
	defer want.Close()
	gi, _, ok := got.Info("logits")
	require.True(t, ok)
	wi, _, _ := want.Info("logits")
	require.Equal(t, wi.Shape, gi.Shape)
	require.Equal(t, safetensors.F32, gi.DType)
	gb, _ := got.Data("logits")
	wb, _ := want.Data("logits")
	g, w := safetensors.Float32s(gb), safetensors.Float32s(wb)
	var d float64
	for i := range g {
		d = math.Max(d, math.Abs(float64(g[i]-w[i])))
	}
	require.LessOrEqual(t, d, 1e-4)
}

func TestLogitsCommandErrors(t *testing.T) {
	fx := fixtures(t)
	model := filepath.Join(fx, "llama-tiny")
	dir := t.TempDir()
	out := filepath.Join(dir, "out.safetensors")

	err := run([]string{"logits", "--model", model, "--out", out}, &bytes.Buffer{}, &bytes.Buffer{})
	require.ErrorContains(t, err, "--input is required")

	noIDs := filepath.Join(dir, "noids.safetensors")
	require.NoError(t, safetensors.Write(noIDs, []safetensors.Tensor{{Name: "attention_mask", DType: safetensors.I64, Shape: []int64{1, 1}, Data: make([]byte, 8)}}, nil))
	err = run([]string{"logits", "--model", model, "--input", noIDs, "--out", out}, &bytes.Buffer{}, &bytes.Buffer{})
	require.ErrorContains(t, err, `no tensor "input_ids"`)
	require.ErrorContains(t, err, "noids.safetensors")

	f32IDs := filepath.Join(dir, "f32.safetensors")
	require.NoError(t, safetensors.Write(f32IDs, []safetensors.Tensor{{Name: "input_ids", DType: safetensors.F32, Shape: []int64{1, 1}, Data: make([]byte, 4)}}, nil))
	err = run([]string{"logits", "--model", model, "--input", f32IDs, "--out", out}, &bytes.Buffer{}, &bytes.Buffer{})
	require.ErrorContains(t, err, `tensor "input_ids" must be I64`)

	err = run([]string{"logits", "--model", dir, "--input", f32IDs, "--out", out}, &bytes.Buffer{}, &bytes.Buffer{})
	require.ErrorContains(t, err, "config.json")

	err = run([]string{"frobnicate"}, &bytes.Buffer{}, &bytes.Buffer{})
	require.ErrorContains(t, err, `unknown command "frobnicate"`)
	_, statErr := os.Stat(out)
	require.True(t, os.IsNotExist(statErr), "no output is written on error")
}

func readF32(t *testing.T, path, key string) []float32 {
	set, err := safetensors.OpenFiles(path)
	require.NoError(t, err)
	defer set.Close()
	b, err := set.Data(key)
	require.NoError(t, err)
	return append([]float32(nil), safetensors.Float32s(b)...)
}

func maxAbs(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

func TestLogitsWithAdapters(t *testing.T) {
	fx := fixtures(t)
	model := filepath.Join(fx, "llama-tiny")
	for _, name := range []string{"lora-default", "lora-rich", "lora-dora"} {
		expected := filepath.Join(fx, "expected", "llama-tiny__"+name+".safetensors")
		adapter := filepath.Join(fx, "adapters", "llama-tiny", name)
		out := filepath.Join(t.TempDir(), "out.safetensors")
		require.NoError(t, run([]string{"logits", "--model", model, "--adapter", adapter, "--input", expected, "--out", out}, &bytes.Buffer{}, &bytes.Buffer{}))
		require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits")), 1e-4, name)
		require.NoError(t, run([]string{"logits", "--model", model, "--adapter", adapter, "--merge", "--input", expected, "--out", out}, &bytes.Buffer{}, &bytes.Buffer{}))
		require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits_merged")), 1e-4, name)
	}
}

// peft merge writes a HF checkpoint whose plain logits equal the unmerged
// adapted logits.
func TestMergeCommand(t *testing.T) {
	fx := fixtures(t)
	expected := filepath.Join(fx, "expected", "llama-tiny__lora-rich.safetensors")
	merged := filepath.Join(t.TempDir(), "merged")
	var stdout bytes.Buffer
	require.NoError(t, run([]string{"merge", "--model", filepath.Join(fx, "llama-tiny"),
		"--adapter", filepath.Join(fx, "adapters", "llama-tiny", "lora-rich"), "--out", merged}, &stdout, &bytes.Buffer{}))
	out := filepath.Join(t.TempDir(), "out.safetensors")
	require.NoError(t, run([]string{"logits", "--model", merged, "--input", expected, "--out", out}, &bytes.Buffer{}, &bytes.Buffer{}))
	require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits")), 1e-4)
	set, err := safetensors.OpenDir(merged)
	require.NoError(t, err)
	defer set.Close()
	for _, k := range set.Names() {
		require.NotContains(t, k, "lora")
		require.NotContains(t, k, "base_layer")
	}
}

func TestInspect(t *testing.T) {
	fx := fixtures(t)
	var out bytes.Buffer
	require.NoError(t, run([]string{"inspect", "--model", filepath.Join(fx, "llama-tiny"),
		filepath.Join(fx, "adapters", "llama-tiny", "lora-default")}, &out, &bytes.Buffer{}))
	require.Contains(t, out.String(), "LORA adapter, task CAUSAL_LM")
	require.Contains(t, out.String(), `"r": 8`)
	// 2 layers × (q: 8·64+64·8, v: 8·64+32·8) = 3,584 of 139,584 + 3,584
	require.Contains(t, out.String(), "trainable params: 3,584 || all params: 143,168 || trainable%: 2.5034")
}
