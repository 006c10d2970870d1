package models_test

import (
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	_ "github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/models/gpt2"
	"github.com/gopeft/peft/peft"
	"github.com/stretchr/testify/require"
)

// LoRA on the fused attention projection of BLOOM (query_key_value, with
// bias="all": every bias of the model was trained and is in the adapter
// file) and GPT-2 (c_attn, a Conv1D), loaded through peft.Load: adapted,
// disabled (the loaded biases stay, as in PEFT) and merged logits, and
// every merged parameter the fixture holds.
func TestLoRAFusedQKVFixtures(t *testing.T) {
	for _, tc := range []struct {
		model, adapter string
		load           func(string) (models.Model, error)
		merged         int // merged.* parameters in the fixture
	}{
		{"bloom-tiny", "lora-qkv", func(d string) (models.Model, error) { return bloom.Load(d) }, 16},
		{"gpt2-tiny", "lora-c_attn", func(d string) (models.Model, error) { return gpt2.Load(d) }, 15},
	} {
		t.Run(tc.model, func(t *testing.T) {
			base, err := tc.load(testutil.Fixtures(t, tc.model))
			require.NoError(t, err)
			e := testutil.OpenExpected(t, tc.model+"__"+tc.adapter)
			logits := func(m testutil.Forwarder) []float32 {
				got, _ := testutil.LogitsOf(t, m, e)
				return got
			}
			m, err := peft.Load(base, testutil.Fixtures(t, "adapters", tc.model, tc.adapter))
			require.NoError(t, err)
			d := testutil.MaxDiff(logits(m), e.F32(t, "logits"))
			t.Logf("adapted max abs diff %.3g", d)
			require.LessOrEqual(t, d, 1e-4)

			restore := m.DisableAdapters()
			d = testutil.MaxDiff(logits(m), e.F32(t, "logits_disabled"))
			t.Logf("disabled max abs diff %.3g", d)
			require.LessOrEqual(t, d, 1e-4)
			require.Greater(t, testutil.MaxDiff(logits(m), e.F32(t, "logits_base")), 1e-3, "bias=all biases stay under disable")
			restore()

			merged, err := m.MergeAndUnload()
			require.NoError(t, err)
			defer merged.(interface{ Free() }).Free()
			d = testutil.MaxDiff(logits(merged), e.F32(t, "logits_merged"))
			t.Logf("merged max abs diff %.3g", d)
			require.LessOrEqual(t, d, 1e-4)
			n := testutil.RequireMergedParams(t, merged, e.Set)
			require.Equal(t, tc.merged, n)
		})
	}
}
