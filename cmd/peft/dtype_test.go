package main

import (
	"bytes"
	"math"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// maxAbsUnpadded is max |a-b| over the positions attention_mask keeps.
func maxAbsUnpadded(t *testing.T, a, b []float32, expected string) float64 {
	set, err := safetensors.OpenFiles(expected)
	require.NoError(t, err)
	defer set.Close()
	mb, err := set.Data("attention_mask")
	require.NoError(t, err)
	mask := safetensors.Int64s(mb)
	vocab := len(a) / len(mask)
	var d float64
	for p, m := range mask {
		if m == 0 {
			continue
		}
		for j := p * vocab; j < (p+1)*vocab; j++ {
			d = math.Max(d, math.Abs(float64(a[j]-b[j])))
		}
	}
	return d
}

func gapOf(t *testing.T, expected string) float64 {
	set, err := safetensors.OpenFiles(expected)
	require.NoError(t, err)
	defer set.Close()
	g, err := strconv.ParseFloat(set.Files()[0].Metadata()["max_abs_bf16_vs_fp32"], 64)
	require.NoError(t, err)
	return g
}

// peft logits --dtype bfloat16 reproduces transformers' bf16 logits: the
// base bit for bit (within half of transformers' own bf16-vs-fp32 gap),
// with a float32 LoRA adapter within one bf16 step of the output (the
// fixture's adapters went through bf16 in PEFT 0.10: see lora's
// TestBF16Fixtures); the default dtype (the checkpoint's float32) lands on
// the gap.
func TestLogitsCommandBF16(t *testing.T) {
	fx := fixtures(t)
	model := filepath.Join(fx, "llama-tiny")
	for _, tc := range []struct{ name, adapter string }{{"bf16-base", ""}, {"bf16-lora-default", "lora-default"}} {
		expected := filepath.Join(fx, "expected", "llama-tiny__"+tc.name+".safetensors")
		gap := gapOf(t, expected)
		logits := func(dtype string) []float32 {
			out := filepath.Join(t.TempDir(), "out.safetensors")
			args := []string{"logits", "--model", model, "--input", expected, "--out", out}
			if dtype != "" {
				args = append(args, "--dtype", dtype)
			}
			if tc.adapter != "" {
				args = append(args, "--adapter", filepath.Join(fx, "adapters", "llama-tiny", tc.adapter))
			}
			var stderr bytes.Buffer
			require.NoError(t, run(args, &bytes.Buffer{}, &stderr), stderr.String())
			return readF32(t, out, "logits")
		}
		want := readF32(t, expected, "logits")
		d := maxAbsUnpadded(t, logits("bfloat16"), want, expected)
		if tc.adapter == "" {
			require.LessOrEqual(t, d, gap/2, tc.name)
		} else {
			require.LessOrEqual(t, d, gap*1.05, tc.name)
		}
		d32 := maxAbsUnpadded(t, logits(""), want, expected)
		require.InDelta(t, gap, d32, gap*0.05, "%s: the float32 checkpoint computes in float32 by default", tc.name)
	}
}

// Bad load options fail up front with the option named.
func TestLoadOptionErrors(t *testing.T) {
	fx := fixtures(t)
	model := filepath.Join(fx, "llama-tiny")
	expected := filepath.Join(fx, "expected", "llama-tiny__base.safetensors")
	out := filepath.Join(t.TempDir(), "out.safetensors")
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--dtype", "float8"}, []string{"--dtype", `dtype "float8"`, "bfloat16"}},
		{[]string{"--device", "tpu"}, []string{"--device", `device "tpu"`}},
		{[]string{"--device", "cuda:99"}, []string{"device cuda:99"}},
	} {
		args := append([]string{"logits", "--model", model, "--input", expected, "--out", out}, tc.args...)
		err := run(args, &bytes.Buffer{}, &bytes.Buffer{})
		require.Error(t, err, "%v", tc.args)
		for _, w := range tc.want {
			require.ErrorContains(t, err, w, "%v", tc.args)
		}
	}
	// Debian's libtorch 1.13 is a CPU build, and has no float16 matmul on
	// the CPU; a libtorch that has them must load instead.
	err := run([]string{"logits", "--model", model, "--input", expected, "--out", out, "--device", "cuda"}, &bytes.Buffer{}, &bytes.Buffer{})
	if tensor.CUDADeviceCount() == 0 {
		require.ErrorContains(t, err, "device cuda:0: this libtorch has no CUDA support")
		require.ErrorContains(t, err, "LIBTORCH=")
	} else {
		require.NoError(t, err)
	}
	err = run([]string{"logits", "--model", model, "--input", expected, "--out", out, "--dtype", "float16"}, &bytes.Buffer{}, &bytes.Buffer{})
	if tensor.CanCompute(tensor.Float16, tensor.CPU) != nil {
		require.ErrorContains(t, err, "float16 on cpu")
		require.ErrorContains(t, err, "choose --dtype bfloat16 or float32")
	} else {
		require.NoError(t, err)
	}
}
