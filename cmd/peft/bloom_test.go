package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// BLOOM through the CLI: base logits, the bias="all" LoRA adapter (adapted
// and merged; 2·(8·64 + 192·8) LoRA weights + 1,536 biases train), a
// merged checkpoint, and inspect.
func TestBloomCommands(t *testing.T) {
	fx := fixtures(t)
	model := filepath.Join(fx, "bloom-tiny")
	expected := filepath.Join(fx, "expected", "bloom-tiny__lora-qkv.safetensors")
	adapter := filepath.Join(fx, "adapters", "bloom-tiny", "lora-qkv")
	out := filepath.Join(t.TempDir(), "out.safetensors")
	run1 := func(args ...string) {
		var stderr bytes.Buffer
		require.NoError(t, run(args, &bytes.Buffer{}, &stderr), stderr.String())
	}
	run1("logits", "--model", model, "--input", expected, "--out", out)
	require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits_base")), 1e-4)
	run1("logits", "--model", model, "--adapter", adapter, "--input", expected, "--out", out)
	require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits")), 1e-4)
	run1("logits", "--model", model, "--adapter", adapter, "--merge", "--input", expected, "--out", out)
	require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits_merged")), 1e-4)

	merged := filepath.Join(t.TempDir(), "merged")
	run1("merge", "--model", model, "--adapter", adapter, "--out", merged)
	run1("logits", "--model", merged, "--input", expected, "--out", out)
	require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits_merged")), 1e-4)

	var stdout bytes.Buffer
	require.NoError(t, run([]string{"inspect", "--model", model, adapter}, &stdout, &bytes.Buffer{}))
	require.Contains(t, stdout.String(), "LORA adapter")
	require.Contains(t, stdout.String(), "trainable params: 5,632 ||")
	stdout.Reset()
	require.NoError(t, run([]string{"inspect", model}, &stdout, &bytes.Buffer{}))
	require.Contains(t, stdout.String(), "132,992 parameters")
	require.Contains(t, stdout.String(), "BloomForCausalLM(")
}

// The IA3 fixture adapter through the CLI (peft.Load finds IA3 by its
// peft_type because the command links the ia3 package).
func TestIA3AdapterCommand(t *testing.T) {
	fx := fixtures(t)
	expected := filepath.Join(fx, "expected", "llama-tiny__ia3.safetensors")
	out := filepath.Join(t.TempDir(), "out.safetensors")
	args := []string{"logits", "--model", filepath.Join(fx, "llama-tiny"), "--adapter", filepath.Join(fx, "adapters", "llama-tiny", "ia3"), "--input", expected, "--out", out}
	require.NoError(t, run(args, &bytes.Buffer{}, &bytes.Buffer{}))
	require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits")), 1e-4)
	require.NoError(t, run(append(args, "--merge"), &bytes.Buffer{}, &bytes.Buffer{}))
	require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits_merged")), 1e-4)
}
