package generate

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

var bg = context.Background()

func fixtures(t testing.TB) string {
	f, err := filepath.Abs(filepath.Join("..", "testdata", "hf"))
	require.NoError(t, err)
	_, err = os.Stat(f)
	require.NoError(t, err, "golden fixtures expected at testdata/hf")
	return f
}

func loadTiny(t testing.TB) *llama.Model {
	m, err := llama.Load(filepath.Join(fixtures(t), "llama-tiny"))
	require.NoError(t, err)
	t.Cleanup(m.Free)
	return m
}

// expected reads a fixture file's int64 and float32 tensors.
type expected struct{ set *safetensors.Set }

func openExpected(t testing.TB, name string) expected {
	set, err := safetensors.OpenFiles(filepath.Join(fixtures(t), "expected", name+".safetensors"))
	require.NoError(t, err)
	t.Cleanup(func() { set.Close() })
	return expected{set}
}

func (e expected) i64(t testing.TB, key string) ([]int64, []int64) {
	info, _, ok := e.set.Info(key)
	require.True(t, ok, key)
	b, err := e.set.Data(key)
	require.NoError(t, err)
	return safetensors.Int64s(b), info.Shape
}

func (e expected) f32(t testing.TB, key string) ([]float32, []int64) {
	info, _, ok := e.set.Info(key)
	require.True(t, ok, key)
	b, err := e.set.Data(key)
	require.NoError(t, err)
	return safetensors.Float32s(b), info.Shape
}

// rows splits a row-major [B, S] slice.
func rows(flat []int64, shape []int64) [][]int64 {
	out := make([][]int64, shape[0])
	for i := range out {
		out[i] = append([]int64(nil), flat[int64(i)*shape[1]:int64(i+1)*shape[1]]...)
	}
	return out
}

// fixtureInput is the fixtures' prompts: row 0 full, row 1 left-padded by 3.
func fixtureInput(t testing.TB) Input {
	e := openExpected(t, "llama-tiny__generate-base")
	ids, shape := e.i64(t, "input_ids")
	mask, _ := e.i64(t, "attention_mask")
	return Input{InputIDs: rows(ids, shape), AttentionMask: rows(mask, shape)}
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d float64
	for i := range a {
		if math.IsInf(float64(a[i]), -1) && math.IsInf(float64(b[i]), -1) {
			continue
		}
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// fullForwards runs a model without its KV cache: every step is a fresh
// forward over the whole sequence so far (the prompt-learning adapters
// re-inject their virtual tokens each time), with generate()'s positions.
// It keeps the tokens so far in the cache the generator hands it, as a
// float tensor [rows, 1, T, 1], so that beam search's cache reordering
// moves them like real keys and values.
type fullForwards struct{ m Model }

func (f fullForwards) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	hist := b.InputIDs
	if b.PastKeyValues.Len() > 0 {
		past := b.PastKeyValues.Layers[0].K
		rows, T := past.Size(0), past.Size(2)
		hist = s.Cat(1, s.To(s.Reshape(past, rows, T), tensor.Int64), b.InputIDs)
	}
	rows, T := hist.Size(0), hist.Size(1)
	nb := &models.Batch{InputIDs: hist, AttentionMask: b.AttentionMask}
	if b.AttentionMask != nil {
		mask := s.Int64s(b.AttentionMask)
		pos := make([]int64, len(mask))
		for r := int64(0); r < rows; r++ {
			var c int64
			for j := int64(0); j < T; j++ {
				c += mask[r*T+j]
				pos[r*T+j] = c - 1
				if mask[r*T+j] == 0 {
					pos[r*T+j] = 1
				}
			}
		}
		nb.PositionIDs = s.FromInt64(pos, rows, T)
	}
	out := f.m.ForwardT(s, nb)
	if b.UseCache && s.Err() == nil {
		c := b.PastKeyValues
		if len(c.Layers) == 0 {
			c.Layers = make([]models.KV, 1)
		}
		old := c.Layers[0]
		k := s.Keep(s.Reshape(s.To(hist, tensor.Float32), rows, 1, T, 1))
		c.Layers[0] = models.KV{K: k, V: k.Clone()}
		old.K.Free()
		old.V.Free()
	}
	return &models.Output{Logits: out.Logits, PastKeyValues: b.PastKeyValues}
}
