package main

import (
	"bytes"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// maskOf reads the fixture's attention_mask.
func maskOf(t *testing.T, expected string) []int64 {
	set, err := safetensors.OpenFiles(expected)
	require.NoError(t, err)
	defer set.Close()
	mb, err := set.Data("attention_mask")
	require.NoError(t, err)
	return safetensors.Int64s(mb)
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
// base as testutil.RequireBF16Like says (bit for bit on the fixtures' CPU),
// with a float32 LoRA adapter in bf16 values within the cross-CPU bound (the
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
		mask := maskOf(t, expected)
		if tc.adapter == "" {
			testutil.RequireBF16Like(t, logits("bfloat16"), want, mask, gap, tc.name)
		} else {
			st := testutil.CompareBF16(logits("bfloat16"), want, mask)
			require.True(t, st.AllBF16, tc.name)
			require.LessOrEqual(t, st.Max, gap*1.5, tc.name)
		}
		d32 := testutil.MaxAbsDiff(logits(""), want, mask)
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
