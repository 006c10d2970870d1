package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// peft logits [--merge] on LoRA adapters with a data-dependent init: the
// init runs again on the loaded base (PEFT's from_pretrained), then the
// saved A and B load.
func TestLogitsWithDataInitAdapters(t *testing.T) {
	fx := fixtures(t)
	model := filepath.Join(fx, "llama-tiny")
	for _, name := range []string{"lora-pissa", "lora-olora", "lora-loftq"} {
		expected := filepath.Join(fx, "expected", "llama-tiny__"+name+".safetensors")
		adapter := filepath.Join(fx, "adapters", "llama-tiny", name)
		out := filepath.Join(t.TempDir(), "out.safetensors")
		require.NoError(t, run([]string{"logits", "--model", model, "--adapter", adapter, "--input", expected, "--out", out}, &bytes.Buffer{}, &bytes.Buffer{}))
		require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits")), 1e-4, name)
		require.NoError(t, run([]string{"logits", "--model", model, "--adapter", adapter, "--merge", "--input", expected, "--out", out}, &bytes.Buffer{}, &bytes.Buffer{}))
		require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits_merged")), 1e-4, name)
	}
}
