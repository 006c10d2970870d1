package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/safetensors"
	"github.com/stretchr/testify/require"
)

// GPT-2 and BERT through the CLI: base logits, the fixture adapters
// (adapted and merged), a merged checkpoint, and inspect. For BERT
// sequence classification the logits file holds [B, num_labels].
func TestEncoderAndGPT2Commands(t *testing.T) {
	fx := fixtures(t)
	cases := []struct {
		model, adapter, expected string
		shape                    []int64
		trainable, total         string
		class                    string
	}{
		{"gpt2-tiny", "lora-c_attn", "gpt2-tiny__lora-c_attn", []int64{2, 12, 512},
			"trainable params: 5,568 ||", "141,056 parameters", "GPT2LMHeadModel("},
		{"bert-tiny", "lora-seqcls", "bert-tiny__lora-seqcls", []int64{2, 3},
			"trainable params: 4,291 ||", "112,515 parameters", "BertForSequenceClassification("},
	}
	for _, c := range cases {
		t.Run(c.model, func(t *testing.T) {
			model := filepath.Join(fx, c.model)
			expected := filepath.Join(fx, "expected", c.expected+".safetensors")
			adapter := filepath.Join(fx, "adapters", c.model, c.adapter)
			out := filepath.Join(t.TempDir(), "out.safetensors")
			run1 := func(args ...string) {
				var stderr bytes.Buffer
				require.NoError(t, run(args, &bytes.Buffer{}, &stderr), stderr.String())
			}
			check := func(key string) {
				t.Helper()
				set, err := safetensors.OpenFiles(out)
				require.NoError(t, err)
				info, _, ok := set.Info("logits")
				set.Close()
				require.True(t, ok)
				require.Equal(t, c.shape, info.Shape)
				d := maxAbs(readF32(t, out, "logits"), readF32(t, expected, key))
				t.Logf("%s %s: max abs diff %.3g", c.model, key, d)
				require.LessOrEqual(t, d, 1e-4)
			}
			run1("logits", "--model", model, "--input", expected, "--out", out)
			check("logits_base")
			run1("logits", "--model", model, "--adapter", adapter, "--input", expected, "--out", out)
			check("logits")
			run1("logits", "--model", model, "--adapter", adapter, "--merge", "--input", expected, "--out", out)
			check("logits_merged")

			merged := filepath.Join(t.TempDir(), "merged")
			run1("merge", "--model", model, "--adapter", adapter, "--out", merged)
			run1("logits", "--model", merged, "--input", expected, "--out", out)
			check("logits_merged")

			var stdout bytes.Buffer
			require.NoError(t, run([]string{"inspect", "--model", model, adapter}, &stdout, &bytes.Buffer{}))
			require.Contains(t, stdout.String(), "LORA adapter")
			require.Contains(t, stdout.String(), c.trainable)
			stdout.Reset()
			require.NoError(t, run([]string{"inspect", model}, &stdout, &bytes.Buffer{}))
			require.Contains(t, stdout.String(), c.total)
			require.Contains(t, stdout.String(), c.class)
		})
	}
}

// A model folder of an unknown family names the supported ones.
func TestUnsupportedModelTypeNamesFamilies(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"model_type": "t5"}`), 0o644))
	err := run([]string{"inspect", dir}, &bytes.Buffer{}, &bytes.Buffer{})
	require.ErrorContains(t, err, `model_type "t5" is not supported`)
	require.ErrorContains(t, err, "gpt2, bert")
}
