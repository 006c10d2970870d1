package lora_test

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"

	_ "github.com/gopeft/peft/lora"
)

func fixtures(t testing.TB) string {
	f, err := filepath.Abs(filepath.Join("..", "testdata", "hf"))
	require.NoError(t, err)
	_, err = os.Stat(f)
	require.NoError(t, err, "golden fixtures expected at testdata/hf")
	return f
}

type expected struct{ set *safetensors.Set }

func openExpected(t testing.TB, name string) *expected {
	set, err := safetensors.OpenFiles(filepath.Join(fixtures(t), "expected", name+".safetensors"))
	require.NoError(t, err)
	t.Cleanup(func() { set.Close() })
	return &expected{set}
}

func (e *expected) f32(t testing.TB, key string) []float32 {
	b, err := e.set.Data(key)
	require.NoError(t, err, key)
	return safetensors.Float32s(b)
}

func (e *expected) i64(t testing.TB, key string) ([]int64, []int64) {
	info, _, ok := e.set.Info(key)
	require.True(t, ok, key)
	b, _ := e.set.Data(key)
	return safetensors.Int64s(b), info.Shape
}

func maxDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// logitsOf runs a forward pass on the fixture inputs.
func logitsOf(t testing.TB, m interface {
	ForwardT(*tensor.Scope, *models.Batch) *models.Output
}, e *expected) []float32 {
	ids, shape := e.i64(t, "input_ids")
	mask, _ := e.i64(t, "attention_mask")
	s := tensor.NoGradScope()
	defer s.Close()
	out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...), AttentionMask: s.FromInt64(mask, shape...)})
	require.NoError(t, s.Err())
	return s.Float32s(out.Logits)
}

func TestLoRAFixtures(t *testing.T) {
	for _, name := range []string{"lora-default", "lora-rich", "lora-dora"} {
		t.Run(name, func(t *testing.T) {
			fx := fixtures(t)
			base, err := llama.Load(filepath.Join(fx, "llama-tiny"))
			require.NoError(t, err)
			e := openExpected(t, "llama-tiny__"+name)

			m, err := peft.Load(base, filepath.Join(fx, "adapters", "llama-tiny", name))
			require.NoError(t, err)
			d := maxDiff(logitsOf(t, m, e), e.f32(t, "logits"))
			t.Logf("adapted max abs diff %.3g", d)
			require.LessOrEqual(t, d, 1e-4)

			restore := m.DisableAdapters()
			require.LessOrEqual(t, maxDiff(logitsOf(t, m, e), e.f32(t, "logits_disabled")), 1e-4)
			restore()
			require.LessOrEqual(t, maxDiff(logitsOf(t, m, e), e.f32(t, "logits")), 1e-4)

			merged, err := m.MergeAndUnload()
			require.NoError(t, err)
			require.LessOrEqual(t, maxDiff(logitsOf(t, merged, e), e.f32(t, "logits_merged")), 1e-4)
			// every changed parameter equals PEFT's merged value
			n := testutil.RequireMergedParams(t, merged, e.set)
			require.Greater(t, n, 0)
			for _, np := range nn.NamedParams(merged) {
				require.NotContains(t, np.Name, "lora_")
			}
			nn.FreeParams(merged)
		})
	}
}
