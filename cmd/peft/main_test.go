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
	f, err := filepath.Abs(filepath.Join("..", "..", "..", "shared", "fixtures", "hf"))
	require.NoError(t, err)
	_, err = os.Stat(f)
	require.NoError(t, err, "golden fixtures expected at ../shared/fixtures/hf")
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
