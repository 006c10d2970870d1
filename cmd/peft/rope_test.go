package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/safetensors"
	"github.com/stretchr/testify/require"
)

// logits reads position_ids from the input file: the llama3-rope fixture's
// far positions (300..) reproduce transformers' logits.
func TestLogitsCommandReadsPositionIDs(t *testing.T) {
	fx := fixtures(t)
	model := filepath.Join(fx, "llama3-rope-tiny")
	expected := filepath.Join(fx, "expected", "llama3-rope-tiny__far.safetensors")
	dir := t.TempDir()
	out := filepath.Join(dir, "out.safetensors")
	var stderr bytes.Buffer
	require.NoError(t, run([]string{"logits", "--model", model, "--input", expected, "--out", out}, &bytes.Buffer{}, &stderr), stderr.String())
	require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, "logits")), 1e-4)

	// a position_ids tensor of another length is refused, naming it
	bad := filepath.Join(dir, "bad.safetensors")
	ids, shape := readI64(t, expected, "input_ids")
	require.NoError(t, safetensors.Write(bad, []safetensors.Tensor{
		{Name: "input_ids", DType: safetensors.I64, Shape: shape, Data: safetensors.Int64Bytes(ids)},
		{Name: "position_ids", DType: safetensors.I64, Shape: []int64{shape[0], shape[1] - 1}, Data: make([]byte, 8*shape[0]*(shape[1]-1))},
	}, nil))
	err := run([]string{"logits", "--model", model, "--input", bad, "--out", out}, &bytes.Buffer{}, &bytes.Buffer{})
	require.ErrorContains(t, err, "position_ids has shape")
	require.ErrorContains(t, err, "bad.safetensors")
}

// generate reads position_ids too: the prompt runs at them (here with a
// jump, which changes the logits), so the first step's scores are the
// logits command's last-position logits at the same positions.
func TestGenerateCommandReadsPositionIDs(t *testing.T) {
	fx := fixtures(t)
	model := filepath.Join(fx, "llama3-rope-tiny")
	expected := filepath.Join(fx, "expected", "llama3-rope-tiny__far.safetensors")
	dir := t.TempDir()
	ids, shape := readI64(t, expected, "input_ids")
	B, S := shape[0], shape[1]
	pos := make([]int64, B*S)
	for b := int64(0); b < B; b++ {
		for j := int64(0); j < S; j++ {
			pos[b*S+j] = j
			if j >= S/2 {
				pos[b*S+j] = 300 + j
			}
		}
	}
	in := func(name string, withPos bool) string {
		p := filepath.Join(dir, name)
		ts := []safetensors.Tensor{{Name: "input_ids", DType: safetensors.I64, Shape: shape, Data: safetensors.Int64Bytes(ids)}}
		if withPos {
			ts = append(ts, safetensors.Tensor{Name: "position_ids", DType: safetensors.I64, Shape: shape, Data: safetensors.Int64Bytes(pos)})
		}
		require.NoError(t, safetensors.Write(p, ts, nil))
		return p
	}
	jump, plain := in("jump.safetensors", true), in("plain.safetensors", false)
	lastLogits := func(input string) []float32 {
		out := filepath.Join(dir, "logits.safetensors")
		require.NoError(t, run([]string{"logits", "--model", model, "--input", input, "--out", out}, &bytes.Buffer{}, &bytes.Buffer{}))
		all := readF32(t, out, "logits")
		V := int64(len(all)) / (B * S)
		var last []float32
		for b := int64(0); b < B; b++ {
			last = append(last, all[(b*S+S-1)*V:(b*S+S)*V]...)
		}
		return last
	}
	want, unjumped := lastLogits(jump), lastLogits(plain)
	require.Greater(t, maxAbs(want, unjumped), 1e-3) // the positions matter

	out := filepath.Join(dir, "gen.safetensors")
	var stderr bytes.Buffer
	require.NoError(t, run([]string{"generate", "--model", model, "--input", jump, "--out", out, "--max-new-tokens", "2", "--scores"},
		&bytes.Buffer{}, &stderr), stderr.String())
	scores := readF32(t, out, "scores") // [B, 2, V]
	V := int64(len(want)) / B
	var first []float32
	for b := int64(0); b < B; b++ {
		first = append(first, scores[b*2*V:b*2*V+V]...)
	}
	require.LessOrEqual(t, maxAbs(first, want), 1e-4)
}

// logits dispatches qwen3 and phi3 folders to the LLaMA family and
// reproduces the plain-torch reference (testdata/hf/README-qwen3-phi3.md),
// with and without the LoRA adapter.
func TestLogitsCommandQwen3Phi3(t *testing.T) {
	fx := fixtures(t)
	for _, name := range []string{"qwen3-tiny", "phi3-tiny"} {
		expected := filepath.Join(fx, "expected", name+"__ref.safetensors")
		for _, adapter := range []bool{false, true} {
			out := filepath.Join(t.TempDir(), "out.safetensors")
			args := []string{"logits", "--model", filepath.Join(fx, name), "--input", expected, "--out", out}
			key := "logits"
			if adapter {
				args = append(args, "--adapter", filepath.Join(fx, "adapters", name, "lora"))
				key = "logits_lora"
			}
			var stderr bytes.Buffer
			require.NoError(t, run(args, &bytes.Buffer{}, &stderr), stderr.String())
			require.LessOrEqual(t, maxAbs(readF32(t, out, "logits"), readF32(t, expected, key)), 1e-4, "%s %s", name, key)
		}
	}
}
