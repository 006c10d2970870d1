package ia3_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
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

type forwarder interface {
	ForwardT(*tensor.Scope, *models.Batch) *models.Output
}

// logitsOf runs a forward pass on the fixture inputs.
func logitsOf(t testing.TB, m forwarder, e *expected) []float32 {
	ids, shape := e.i64(t, "input_ids")
	mask, _ := e.i64(t, "attention_mask")
	s := tensor.NoGradScope()
	defer s.Close()
	out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...), AttentionMask: s.FromInt64(mask, shape...)})
	require.NoError(t, s.Err())
	return s.Float32s(out.Logits)
}

func loadLlama(t testing.TB) *llama.Model {
	m, err := llama.Load(filepath.Join(fixtures(t), "llama-tiny"))
	require.NoError(t, err)
	return m
}

func loadBloom(t testing.TB) *bloom.Model {
	m, err := bloom.Load(filepath.Join(fixtures(t), "bloom-tiny"))
	require.NoError(t, err)
	return m
}

func readJSON(t *testing.T, path string) map[string]any {
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(data, &m))
	return m
}
