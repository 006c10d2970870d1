package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/safetensors"
	"github.com/stretchr/testify/require"
)

func readI64(t *testing.T, path, key string) ([]int64, []int64) {
	t.Helper()
	set, err := safetensors.OpenFiles(path)
	require.NoError(t, err)
	defer set.Close()
	info, _, ok := set.Info(key)
	require.True(t, ok, key)
	require.Equal(t, safetensors.I64, info.DType)
	b, err := set.Data(key)
	require.NoError(t, err)
	return safetensors.Int64s(b), info.Shape
}

func shapeOf(t *testing.T, path, key string) []int64 {
	t.Helper()
	set, err := safetensors.OpenFiles(path)
	require.NoError(t, err)
	defer set.Close()
	info, _, ok := set.Info(key)
	require.True(t, ok, key)
	return info.Shape
}

// `peft generate` reproduces HF's greedy generations token for token, with
// every step's scores within 1e-4, from the fixture files themselves (they
// hold input_ids and attention_mask).
func TestGenerateCommandMatchesHF(t *testing.T) {
	fx := fixtures(t)
	model := filepath.Join(fx, "llama-tiny")
	for _, tc := range []struct {
		fixture string
		args    []string
	}{
		{"llama-tiny__generate-base", nil},
		{"llama-tiny__generate-lora-default", []string{"--adapter", filepath.Join(fx, "adapters", "llama-tiny", "lora-default")}},
		{"llama-tiny__generate-lora-default", []string{"--adapter", filepath.Join(fx, "adapters", "llama-tiny", "lora-default"), "--merge"}},
	} {
		t.Run(strings.Join(append([]string{tc.fixture}, tc.args...), " "), func(t *testing.T) {
			expected := filepath.Join(fx, "expected", tc.fixture+".safetensors")
			out := filepath.Join(t.TempDir(), "out.safetensors")
			args := append([]string{"generate", "--model", model}, tc.args...)
			args = append(args, "--input", expected, "--max-new-tokens", "8", "--scores", "--out", out)
			var stderr bytes.Buffer
			require.NoError(t, run(args, &bytes.Buffer{}, &stderr), stderr.String())

			got, gotShape := readI64(t, out, "sequences")
			want, wantShape := readI64(t, expected, "sequences")
			require.Equal(t, wantShape, gotShape)
			require.Equal(t, want, got)
			require.Equal(t, shapeOf(t, expected, "scores"), shapeOf(t, out, "scores"))
			d := maxAbs(readF32(t, out, "scores"), readF32(t, expected, "scores"))
			t.Logf("max |scores - HF| = %.3g", d)
			require.LessOrEqual(t, d, 1e-4)
		})
	}
}

// Sampling with K return sequences and beam search write [B·K, S+N].
func TestGenerateCommandSamplingAndBeams(t *testing.T) {
	fx := fixtures(t)
	model := filepath.Join(fx, "llama-tiny")
	input := filepath.Join(fx, "expected", "llama-tiny__generate-base.safetensors")
	dir := t.TempDir()
	gen := func(name string, extra ...string) string {
		out := filepath.Join(dir, name)
		args := append([]string{"generate", "--model", model, "--input", input, "--max-new-tokens", "6", "--out", out}, extra...)
		var stderr bytes.Buffer
		require.NoError(t, run(args, &bytes.Buffer{}, &stderr), stderr.String())
		return out
	}
	sampling := []string{"--do-sample", "--temperature", "0.8", "--top-k", "20", "--top-p", "0.9",
		"--repetition-penalty", "1.2", "--seed", "5", "--num-return-sequences", "3"}
	a := gen("a.safetensors", sampling...)
	b := gen("b.safetensors", sampling...)
	sa, shape := readI64(t, a, "sequences")
	require.Equal(t, []int64{6, 18}, shape)
	sb, _ := readI64(t, b, "sequences")
	require.Equal(t, sa, sb, "same seed, same tokens")
	prompts, _ := readI64(t, input, "input_ids")
	for r := 0; r < 6; r++ {
		require.Equal(t, prompts[(r/3)*12:(r/3+1)*12], sa[r*18:r*18+12])
	}

	c := gen("c.safetensors", "--num-beams", "4", "--num-return-sequences", "2", "--length-penalty", "0.5",
		"--early-stopping", "never", "--scores")
	_, shape = readI64(t, c, "sequences")
	require.Equal(t, []int64{4, 18}, shape)
	require.Equal(t, []int64{4}, shapeOf(t, c, "sequences_scores"))
	require.Equal(t, []int64{8, 6, 512}, shapeOf(t, c, "scores"))
}

func TestGenerateCommandErrors(t *testing.T) {
	fx := fixtures(t)
	model := filepath.Join(fx, "llama-tiny")
	input := filepath.Join(fx, "expected", "llama-tiny__generate-base.safetensors")
	out := filepath.Join(t.TempDir(), "out.safetensors")
	base := []string{"generate", "--model", model, "--input", input, "--out", out}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{base, "--max-new-tokens N (N > 0) is required"},
		{[]string{"generate", "--model", model, "--max-new-tokens", "2", "--out", out}, "--input is required"},
		{append(base[:len(base):len(base)], "--max-new-tokens", "2", "--num-return-sequences", "2"), "greedy decoding returns one sequence"},
		{append(base[:len(base):len(base)], "--max-new-tokens", "2", "--do-sample", "--temperature", "0"), "--temperature must be positive"},
		{append(base[:len(base):len(base)], "--max-new-tokens", "2", "--num-beams", "2", "--early-stopping", "soon"), "--early-stopping"},
		{append(base[:len(base):len(base)], "--max-new-tokens", "2", "--merge"), "--merge needs an --adapter"},
		{[]string{"generate", "--model", model, "--input", filepath.Join(fx, "llama-tiny", "model.safetensors"), "--max-new-tokens", "2", "--out", out}, `no tensor "input_ids"`},
	} {
		err := run(tc.args, &bytes.Buffer{}, &bytes.Buffer{})
		require.ErrorContains(t, err, tc.want, "%v", tc.args)
	}
	var stdout bytes.Buffer
	require.NoError(t, run([]string{"help"}, &stdout, &bytes.Buffer{}))
	require.Contains(t, stdout.String(), "generate --model DIR")
}
