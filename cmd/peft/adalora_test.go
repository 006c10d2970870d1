package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The AdaLoRA fixture adapter through the CLI (found through package auto):
// adapted and merged logits.
func TestAdaLoRAAdapterCommand(t *testing.T) {
	fx := fixtures(t)
	expected := filepath.Join(fx, "expected", "llama-tiny__adalora.safetensors")
	out := filepath.Join(t.TempDir(), "out.safetensors")
	args := []string{"logits", "--model", filepath.Join(fx, "llama-tiny"), "--adapter", filepath.Join(fx, "adapters", "llama-tiny", "adalora"), "--input", expected, "--out", out}
	require.NoError(t, run(args, &bytes.Buffer{}, &bytes.Buffer{}))
	require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits")), 1e-4)
	require.NoError(t, run(append(args, "--merge"), &bytes.Buffer{}, &bytes.Buffer{}))
	require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits_merged")), 1e-4)
}
