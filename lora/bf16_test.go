package lora_test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// The bf16 golden files: transformers' llama-tiny loaded with
// torch_dtype=bfloat16 (alone, and with LoRA adapters computing in float32
// as current PEFT does). Computing in bf16 the way transformers does gives
// bf16 values, many bit-equal to transformers' (all of them on the CPU the
// fixtures were made on; see testutil.RequireBF16Like for other CPUs);
// computing in float32 lands on the gap itself, which the test checks too
// so that it cannot pass by accident.
//
// The harness made the LoRA files with PEFT 0.10, which created the
// adapters in the base's dtype, so the float32 adapter file was copied
// into bfloat16 parameters (rounded) before the harness upcast them to
// float32: the adapters it computed with hold bf16-rounded values. The
// test rounds the loaded adapters the same way ("harness" below) and must
// then match as RequireBF16Like says; with the file's exact float32 values
// (current PEFT, "exact") the logits may differ by the bf16 rounding of the output — at these logit
// sizes one bf16 step is the whole gap — so that case is held to the
// cross-CPU bound alone.
func TestBF16Fixtures(t *testing.T) {
	for _, tc := range []struct{ file, adapter string }{
		{"llama-tiny__bf16-base", ""},
		{"llama-tiny__bf16-lora-default", "lora-default"},
		{"llama-tiny__bf16-lora-rich", "lora-rich"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			fx := fixtures(t)
			e := openExpected(t, tc.file)
			meta := e.set.Files()[0].Metadata()
			gap, err := strconv.ParseFloat(meta["max_abs_bf16_vs_fp32"], 64)
			require.NoError(t, err)
			want := e.f32(t, "logits")
			mask, _ := e.i64(t, "attention_mask")

			run := func(dtype string, harness bool) []float32 {
				base, err := llama.Load(filepath.Join(fx, "llama-tiny"), models.WithDType(dtype))
				require.NoError(t, err)
				defer base.Free()
				if tc.adapter == "" {
					return logitsOf(t, base, e)
				}
				pm, err := peft.Load(base, filepath.Join(fx, "adapters", "llama-tiny", tc.adapter))
				require.NoError(t, err)
				if dtype == "bfloat16" {
					// adapters stay float32 (PEFT's autocast_adapter_dtype);
					// modules_to_save copies keep the base's dtype
					for _, np := range nn.NamedParams(pm) {
						switch {
						case strings.Contains(np.Name, "lora_"):
							require.Equal(t, tensor.Float32, np.Param.DType(), np.Name)
						case strings.Contains(np.Name, "modules_to_save"):
							require.Equal(t, tensor.BFloat16, np.Param.DType(), np.Name)
						}
					}
				}
				if harness {
					roundAdaptersThroughBF16(t, pm)
				}
				return logitsOf(t, pm, e)
			}
			testutil.RequireBF16Like(t, run("bfloat16", true), want, mask, gap, "bf16 logits are not transformers' bf16")
			if tc.adapter != "" {
				exact := testutil.CompareBF16(run("bfloat16", false), want, mask)
				t.Logf("bf16 with the file's exact float32 adapters: max %.5f, %.1f%% bit-equal", exact.Max, 100*exact.Equal)
				require.True(t, exact.AllBF16)
				require.LessOrEqual(t, exact.Max, gap*1.5)
			}

			f32 := run("float32", false)
			d32 := testutil.MaxAbsDiff(f32, want, mask)
			require.InDelta(t, gap, d32, gap*0.05, "float32 compute lands on the gap")
			require.Greater(t, d32, gap/2)
		})
	}
}

// roundAdaptersThroughBF16 gives the LoRA parameters bf16-rounded values
// (kept float32), as the fixture harness's PEFT 0.10 load left them.
func roundAdaptersThroughBF16(t *testing.T, m nn.Module) {
	s := tensor.NoGradScope()
	defer s.Close()
	for _, np := range nn.NamedParams(m) {
		if strings.Contains(np.Name, "lora_") {
			np.Param.Set(s.Keep(s.To(s.To(np.Param.T(), tensor.BFloat16), tensor.Float32)))
		}
	}
	require.NoError(t, s.Err())
}
