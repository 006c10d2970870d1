package bloom_test

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

func fx(t testing.TB) string {
	f, err := filepath.Abs(filepath.Join("..", "..", "testdata", "hf"))
	require.NoError(t, err)
	_, err = os.Stat(f)
	require.NoError(t, err)
	return f
}

func diff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// bloom-tiny__lora-qkv: LoRA on the fused query_key_value with bias="all"
// (every bias of the model was trained and is in the adapter file), loaded
// through peft.Load: adapted, disabled (the loaded biases stay, as in PEFT)
// and merged logits, and every merged parameter.
func TestLoRAQKVFixture(t *testing.T) {
	base, err := bloom.Load(filepath.Join(fx(t), "bloom-tiny"))
	require.NoError(t, err)
	set, err := safetensors.OpenFiles(filepath.Join(fx(t), "expected", "bloom-tiny__lora-qkv.safetensors"))
	require.NoError(t, err)
	defer set.Close()
	f32 := func(k string) []float32 {
		b, err := set.Data(k)
		require.NoError(t, err, k)
		return safetensors.Float32s(b)
	}
	i64 := func(k string) ([]int64, []int64) {
		info, _, _ := set.Info(k)
		b, _ := set.Data(k)
		return safetensors.Int64s(b), info.Shape
	}
	ids, shape := i64("input_ids")
	mask, _ := i64("attention_mask")
	run := func(m interface {
		ForwardT(*tensor.Scope, *models.Batch) *models.Output
	}) []float32 {
		s := tensor.NoGradScope()
		defer s.Close()
		out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...), AttentionMask: s.FromInt64(mask, shape...)})
		require.NoError(t, s.Err())
		return s.Float32s(out.Logits)
	}

	m, err := peft.Load(base, filepath.Join(fx(t), "adapters", "bloom-tiny", "lora-qkv"))
	require.NoError(t, err)
	d := diff(run(m), f32("logits"))
	t.Logf("adapted max abs diff %.3g", d)
	require.LessOrEqual(t, d, 1e-4)

	restore := m.DisableAdapters()
	d = diff(run(m), f32("logits_disabled"))
	t.Logf("disabled max abs diff %.3g", d)
	require.LessOrEqual(t, d, 1e-4)
	require.Greater(t, diff(run(m), f32("logits_base")), 1e-3, "bias=all biases stay under disable")
	restore()

	merged, err := m.MergeAndUnload()
	require.NoError(t, err)
	d = diff(run(merged), f32("logits_merged"))
	t.Logf("merged max abs diff %.3g", d)
	require.LessOrEqual(t, d, 1e-4)
	params := map[string]*nn.Param{}
	for _, np := range nn.NamedParams(merged) {
		params[np.Name] = np.Param
	}
	s := tensor.NoGradScope()
	defer s.Close()
	n := 0
	for _, key := range set.Names() {
		if !strings.HasPrefix(key, "merged.") {
			continue
		}
		p, ok := params[strings.TrimPrefix(key, "merged.")]
		require.True(t, ok, key)
		require.LessOrEqual(t, diff(s.Float32s(p.T()), f32(key)), 1e-5, key)
		n++
	}
	require.Equal(t, 16, n)
	merged.(*bloom.Model).Free()
}
