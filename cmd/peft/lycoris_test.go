package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The LoHa and LoKr fixture adapters through the CLI (peft logits finds
// LOHA/LOKR through package auto), adapted and merged.
func TestLyCORISAdapterCommands(t *testing.T) {
	fx := fixtures(t)
	for _, m := range []string{"loha", "lokr", "lokr-decompose-both"} {
		expected := filepath.Join(fx, "expected", "llama-tiny__"+m+".safetensors")
		out := filepath.Join(t.TempDir(), "out.safetensors")
		args := []string{"logits", "--model", filepath.Join(fx, "llama-tiny"), "--adapter", filepath.Join(fx, "adapters", "llama-tiny", m), "--input", expected, "--out", out}
		var stderr bytes.Buffer
		require.NoError(t, run(args, &bytes.Buffer{}, &stderr), stderr.String())
		require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits")), 1e-4, m)
		require.NoError(t, run(append(args, "--merge"), &bytes.Buffer{}, &stderr), stderr.String())
		require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits_merged")), 1e-4, m)
	}
}
