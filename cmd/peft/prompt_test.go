package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/safetensors"
	"github.com/stretchr/testify/require"
)

// peft logits --adapter runs Python PEFT's prompt-tuning, P-tuning and
// prefix-tuning adapters: PEFT's logits (with the virtual positions for
// prompt tuning / P-tuning); --merge refuses them.
func TestLogitsWithPromptAdapters(t *testing.T) {
	fx := fixtures(t)
	model := filepath.Join(fx, "llama-tiny")
	for _, name := range []string{"prompt-tuning-random", "prompt-tuning-text", "p-tuning-mlp", "p-tuning-lstm", "prefix-proj", "prefix-noproj"} {
		t.Run(name, func(t *testing.T) {
			expected := filepath.Join(fx, "expected", "llama-tiny__"+name+".safetensors")
			adapter := filepath.Join(fx, "adapters", "llama-tiny", name)
			out := filepath.Join(t.TempDir(), "out.safetensors")
			var stderr bytes.Buffer
			require.NoError(t, run([]string{"logits", "--model", model, "--adapter", adapter, "--input", expected, "--out", out}, &bytes.Buffer{}, &stderr), stderr.String())
			set, err := safetensors.OpenFiles(out)
			require.NoError(t, err)
			gi, _, _ := set.Info("logits")
			set.Close()
			want, err := safetensors.OpenFiles(expected)
			require.NoError(t, err)
			wi, _, _ := want.Info("logits")
			want.Close()
			require.Equal(t, wi.Shape, gi.Shape)
			require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits")), 1e-4)

			err = run([]string{"logits", "--model", model, "--adapter", adapter, "--merge", "--input", expected, "--out", out}, &bytes.Buffer{}, &bytes.Buffer{})
			require.ErrorContains(t, err, "not mergeable")
		})
	}
}

// peft inspect prints a prompt adapter's config and PEFT's trainable line
// (the saved table: 8 × 64 for prompt tuning).
func TestInspectPromptAdapter(t *testing.T) {
	fx := fixtures(t)
	var out bytes.Buffer
	require.NoError(t, run([]string{"inspect", "--model", filepath.Join(fx, "llama-tiny"),
		filepath.Join(fx, "adapters", "llama-tiny", "prompt-tuning-random")}, &out, &bytes.Buffer{}))
	require.Contains(t, out.String(), "PROMPT_TUNING adapter, task CAUSAL_LM")
	require.Contains(t, out.String(), "trainable params: 512 || all params: 140,096 || trainable%: 0.3655")
}
