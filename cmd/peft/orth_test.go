package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The orthogonal methods' fixture adapters through the CLI (OFT, BOFT,
// HRA; linked through package auto): adapted and --merge logits, and
// `peft merge` then plain logits.
func TestOrthogonalAdapterCommands(t *testing.T) {
	fx := fixtures(t)
	for _, name := range []string{"oft", "oft-coft-share", "boft", "hra", "hra-gs"} {
		expected := filepath.Join(fx, "expected", "llama-tiny__"+name+".safetensors")
		out := filepath.Join(t.TempDir(), "out.safetensors")
		model := filepath.Join(fx, "llama-tiny")
		adapter := filepath.Join(fx, "adapters", "llama-tiny", name)
		args := []string{"logits", "--model", model, "--adapter", adapter, "--input", expected, "--out", out}
		var stderr bytes.Buffer
		require.NoError(t, run(args, &bytes.Buffer{}, &stderr), stderr.String())
		require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits")), 1e-4, name)
		require.NoError(t, run(append(args, "--merge"), &bytes.Buffer{}, &stderr), stderr.String())
		require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits_merged")), 1e-4, name)
		merged := filepath.Join(t.TempDir(), "merged")
		require.NoError(t, run([]string{"merge", "--model", model, "--adapter", adapter, "--out", merged}, &bytes.Buffer{}, &stderr), stderr.String())
		require.NoError(t, run([]string{"logits", "--model", merged, "--input", expected, "--out", out}, &bytes.Buffer{}, &stderr), stderr.String())
		require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits_merged")), 1e-4, name)
	}
}
