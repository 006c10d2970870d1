package main

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/stretchr/testify/require"
)

// peft logits runs the adaption-prompt and multitask-prompt-tuning
// fixtures (task_ids read from the input file) with PEFT's logits, and
// --merge refuses both.
func TestLogitsAdaptionAndMultitaskPrompt(t *testing.T) {
	fx := fixtures(t)
	model := filepath.Join(fx, "llama-tiny")
	for _, name := range []string{"adaption-prompt", "multitask-prompt-tuning"} {
		t.Run(name, func(t *testing.T) {
			expected := filepath.Join(fx, "expected", "llama-tiny__"+name+".safetensors")
			adapter := filepath.Join(fx, "adapters", "llama-tiny", name)
			out := filepath.Join(t.TempDir(), "out.safetensors")
			var stderr bytes.Buffer
			require.NoError(t, run([]string{"logits", "--model", model, "--adapter", adapter, "--input", expected, "--out", out}, &bytes.Buffer{}, &stderr), stderr.String())
			require.Equal(t, shapeOf(t, expected, "logits"), shapeOf(t, out, "logits"))
			d := maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits"))
			t.Logf("max abs diff %.3g", d)
			require.LessOrEqual(t, d, 1e-4)

			err := run([]string{"logits", "--model", model, "--adapter", adapter, "--merge", "--input", expected, "--out", out}, &bytes.Buffer{}, &bytes.Buffer{})
			require.ErrorContains(t, err, "not mergeable")
		})
	}
}

// peft generate reads task_ids from the input file: the sequences are the
// library's generate with the same tasks; without task_ids a multitask
// adapter fails, and a task_ids of the wrong shape is named.
func TestGenerateTaskIDs(t *testing.T) {
	fx := fixtures(t)
	model := filepath.Join(fx, "llama-tiny")
	adapter := filepath.Join(fx, "adapters", "llama-tiny", "multitask-prompt-tuning")
	dir := t.TempDir()
	ids := []int64{1, 15, 27, 99, 4, 1, 15, 27, 99, 4}
	write := func(name string, tensors ...safetensors.Tensor) string {
		p := filepath.Join(dir, name)
		require.NoError(t, safetensors.Write(p, tensors, nil))
		return p
	}
	idsT := safetensors.Tensor{Name: "input_ids", DType: safetensors.I64, Shape: []int64{2, 5}, Data: safetensors.Int64Bytes(ids)}
	in := write("in.safetensors", idsT, safetensors.Tensor{Name: "task_ids", DType: safetensors.I64, Shape: []int64{2}, Data: safetensors.Int64Bytes([]int64{0, 1})})
	out := filepath.Join(dir, "out.safetensors")
	var stderr bytes.Buffer
	require.NoError(t, run([]string{"generate", "--model", model, "--adapter", adapter, "--input", in, "--max-new-tokens", "4", "--out", out}, &bytes.Buffer{}, &stderr), stderr.String())
	got, shape := readI64(t, out, "sequences")
	require.Equal(t, []int64{2, 9}, shape)

	base, err := llama.Load(model)
	require.NoError(t, err)
	m, err := peft.Load(base, adapter)
	require.NoError(t, err)
	res, err := generate.Generate(context.Background(), m, generate.Input{InputIDs: [][]int64{ids[:5], ids[5:]}, TaskIDs: []int64{0, 1}},
		generate.GenerationConfig{MaxNewTokens: 4})
	require.NoError(t, err)
	require.Equal(t, append(append([]int64(nil), res.Sequences[0]...), res.Sequences[1]...), got)

	noTasks := write("notasks.safetensors", idsT)
	err = run([]string{"generate", "--model", model, "--adapter", adapter, "--input", noTasks, "--max-new-tokens", "2", "--out", out}, &bytes.Buffer{}, &bytes.Buffer{})
	require.ErrorContains(t, err, "task_ids")
	bad := write("bad.safetensors", idsT, safetensors.Tensor{Name: "task_ids", DType: safetensors.I64, Shape: []int64{1, 2}, Data: safetensors.Int64Bytes([]int64{0, 1})})
	err = run([]string{"generate", "--model", model, "--adapter", adapter, "--input", bad, "--max-new-tokens", "2", "--out", out}, &bytes.Buffer{}, &bytes.Buffer{})
	require.ErrorContains(t, err, `"task_ids" must be I64 [2]`)
	err = run([]string{"logits", "--model", model, "--adapter", adapter, "--input", bad, "--out", out}, &bytes.Buffer{}, &bytes.Buffer{})
	require.ErrorContains(t, err, `"task_ids" must be I64 [2]`)
}
