package llama

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

func fixtures(t testing.TB) string {
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, parent, dir, "go.mod not found")
		dir = parent
	}
	f := filepath.Join(dir, "testdata", "hf")
	_, err = os.Stat(f)
	require.NoError(t, err, "the golden fixtures must be at testdata/hf")
	return f
}

// expected reads tensors of an expected/*.safetensors file as Go slices.
type expectedFile struct {
	set *safetensors.Set
}

func openExpected(t testing.TB, name string) *expectedFile {
	set, err := safetensors.OpenFiles(filepath.Join(fixtures(t), "expected", name+".safetensors"))
	require.NoError(t, err)
	t.Cleanup(func() { set.Close() })
	return &expectedFile{set}
}

func (e *expectedFile) f32(t testing.TB, key string) ([]float32, []int64) {
	info, _, ok := e.set.Info(key)
	require.True(t, ok, key)
	b, err := e.set.Data(key)
	require.NoError(t, err)
	return safetensors.Float32s(b), info.Shape
}

func (e *expectedFile) i64(t testing.TB, key string) ([]int64, []int64) {
	info, _, ok := e.set.Info(key)
	require.True(t, ok, key)
	b, err := e.set.Data(key)
	require.NoError(t, err)
	return safetensors.Int64s(b), info.Shape
}

func loadTiny(t testing.TB) *Model {
	m, err := Load(filepath.Join(fixtures(t), "llama-tiny"))
	require.NoError(t, err)
	t.Cleanup(m.Free)
	return m
}

func TestLogitsMatchHF(t *testing.T) {
	m := loadTiny(t)
	exp := openExpected(t, "llama-tiny__base")
	ids, ishape := exp.i64(t, "input_ids")
	mask, _ := exp.i64(t, "attention_mask")
	want, wshape := exp.f32(t, "logits")

	s := tensor.NoGradScope()
	defer s.Close()
	out := m.ForwardT(s, &models.Batch{
		InputIDs:      s.FromInt64(ids, ishape...),
		AttentionMask: s.FromInt64(mask, ishape...),
	})
	require.NoError(t, s.Err())
	require.Equal(t, wshape, out.Logits.Shape())
	got := s.Float32s(out.Logits)
	// every position, padded ones too: the mask is HF's to the bit
	require.LessOrEqual(t, maxAbsDiff(got, want), 1e-4)
	t.Logf("max abs diff vs HF: %.3g", maxAbsDiff(got, want))
}

func TestLogitsWithGenerationPositionIDs(t *testing.T) {
	m := loadTiny(t)
	exp := openExpected(t, "llama-tiny__base")
	ids, ishape := exp.i64(t, "input_ids")
	mask, _ := exp.i64(t, "attention_mask")
	pos, _ := exp.i64(t, "position_ids_gen")
	want, _ := exp.f32(t, "logits_gen_position_ids")
	s := tensor.NoGradScope()
	defer s.Close()
	out := m.ForwardT(s, &models.Batch{
		InputIDs:      s.FromInt64(ids, ishape...),
		AttentionMask: s.FromInt64(mask, ishape...),
		PositionIDs:   s.FromInt64(pos, ishape...),
	})
	require.NoError(t, s.Err())
	require.LessOrEqual(t, maxAbsDiff(s.Float32s(out.Logits), want), 1e-4)
}

// The loss for labels with -100 equals cross-entropy computed here, in Go,
// from the HF logits.
func TestLossMatchesIndependentCrossEntropy(t *testing.T) {
	m := loadTiny(t)
	exp := openExpected(t, "llama-tiny__base")
	ids, ishape := exp.i64(t, "input_ids")
	mask, _ := exp.i64(t, "attention_mask")
	logits, lshape := exp.f32(t, "logits")
	B, L, V := int(lshape[0]), int(lshape[1]), int(lshape[2])
	labels := make([]int64, len(ids))
	for i := range ids {
		labels[i] = ids[i]
		if mask[i] == 0 || i%L < 4 { // padding and a "prompt" are ignored
			labels[i] = models.IgnoreIndex
		}
	}
	var sum float64
	var n int
	for b := 0; b < B; b++ {
		for p := 0; p < L-1; p++ {
			target := labels[b*L+p+1]
			if target == models.IgnoreIndex {
				continue
			}
			row := logits[(b*L+p)*V : (b*L+p+1)*V]
			mx := math.Inf(-1)
			for _, v := range row {
				mx = math.Max(mx, float64(v))
			}
			var z float64
			for _, v := range row {
				z += math.Exp(float64(v) - mx)
			}
			sum += mx + math.Log(z) - float64(row[target])
			n++
		}
	}
	want := sum / float64(n)

	s := tensor.NoGradScope()
	defer s.Close()
	out := m.ForwardT(s, &models.Batch{
		InputIDs:      s.FromInt64(ids, ishape...),
		AttentionMask: s.FromInt64(mask, ishape...),
		Labels:        s.FromInt64(labels, ishape...),
	})
	require.NoError(t, s.Err())
	require.InDelta(t, want, s.Item(out.Loss), 1e-5)
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}
