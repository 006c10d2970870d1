package gemma_test

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/gemma"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// The tiny checkpoints, adapters and golden outputs are made by the
// independent plain-torch reference testdata/ref/gemma-reference.py.
var tiny = []string{"gemma2-tiny", "gemma3-tiny"}

const tol = 1e-4

func refDir(t testing.TB, name string) string {
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
	d := filepath.Join(dir, "testdata", "ref", name)
	_, err = os.Stat(d)
	require.NoError(t, err, "the Gemma reference fixtures are committed in testdata/ref")
	return d
}

type golden struct{ set *safetensors.Set }

func openGolden(t testing.TB, name string) *golden {
	set, err := safetensors.OpenFiles(filepath.Join(refDir(t, name), "expected.safetensors"))
	require.NoError(t, err)
	t.Cleanup(func() { set.Close() })
	return &golden{set}
}

func (g *golden) f32(t testing.TB, key string) []float32 {
	b, err := g.set.Data(key)
	require.NoError(t, err, key)
	return safetensors.Float32s(b)
}

func (g *golden) i64(t testing.TB, key string) ([]int64, []int64) {
	info, _, ok := g.set.Info(key)
	require.True(t, ok, key)
	b, err := g.set.Data(key)
	require.NoError(t, err)
	return safetensors.Int64s(b), info.Shape
}

func load(t testing.TB, name string, opts ...models.LoadOption) *gemma.Model {
	m, err := gemma.Load(refDir(t, name), opts...)
	require.NoError(t, err)
	t.Cleanup(m.Free)
	return m
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d float64
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// forward runs m on the golden batch (with labels) and returns the logits
// and the loss.
func forward(t *testing.T, s *tensor.Scope, m models.Model, g *golden) ([]float32, float32) {
	ids, sh := g.i64(t, "input_ids")
	mask, _ := g.i64(t, "attention_mask")
	labels, _ := g.i64(t, "labels")
	out := m.ForwardT(s, &models.Batch{
		InputIDs:      s.FromInt64(ids, sh...),
		AttentionMask: s.FromInt64(mask, sh...),
		Labels:        s.FromInt64(labels, sh...),
	})
	require.NoError(t, s.Err())
	return s.Float32s(out.Logits), float32(s.Item(out.Loss))
}

// Base logits over a left-padded batch (padded query rows included) and
// the shifted loss match the reference: embeddings scaled by √hidden,
// (1+w) norms, GeGLU, query_pre_attn_scalar, soft-capping, sliding windows
// (5 positions over a 12-token prompt), Gemma 3's q/k norms and two rope
// bases with linear scaling on the global layer.
func TestLogitsMatchReference(t *testing.T) {
	for _, name := range tiny {
		t.Run(name, func(t *testing.T) {
			m := load(t, name)
			g := openGolden(t, name)
			s := tensor.NoGradScope()
			defer s.Close()
			logits, loss := forward(t, s, m, g)
			require.LessOrEqual(t, maxAbsDiff(logits, g.f32(t, "logits")), tol)
			require.InDelta(t, g.f32(t, "loss")[0], loss, tol)
		})
	}
}

// A LoRA adapter in PEFT's format on every linear of the layers: adapted
// logits and loss, then merge_and_unload's logits, match the reference.
func TestLoRAMatchesReference(t *testing.T) {
	for _, name := range tiny {
		t.Run(name, func(t *testing.T) {
			m := load(t, name)
			g := openGolden(t, name)
			pm, err := peft.Load(m, filepath.Join(refDir(t, name), "lora"))
			require.NoError(t, err)
			s := tensor.NoGradScope()
			defer s.Close()
			logits, loss := forward(t, s, pm, g)
			require.LessOrEqual(t, maxAbsDiff(logits, g.f32(t, "logits_lora")), tol)
			require.InDelta(t, g.f32(t, "loss_lora")[0], loss, tol)
			merged, err := pm.MergeAndUnload()
			require.NoError(t, err)
			logits, _ = forward(t, s, merged, g)
			require.LessOrEqual(t, maxAbsDiff(logits, g.f32(t, "logits_merged")), tol)
		})
	}
}

// Greedy decoding with the KV cache from a left-padded prompt, with
// generate()'s position ids and a growing mask, reproduces the reference's
// tokens and per-step scores, with and without the adapter: the sliding
// window keeps masking by cache index while decoding.
func TestGreedyDecodeMatchesReference(t *testing.T) {
	for _, name := range tiny {
		for _, adapter := range []bool{false, true} {
			t.Run(name, func(t *testing.T) {
				var m models.Model = load(t, name)
				key := "gen"
				if adapter {
					pm, err := peft.Load(m, filepath.Join(refDir(t, name), "lora"))
					require.NoError(t, err)
					m, key = pm, "gen_lora"
				}
				g := openGolden(t, name)
				seq, scores := greedy(t, m, g, 6)
				want, _ := g.i64(t, key+"_sequences")
				require.Equal(t, want, seq)
				require.LessOrEqual(t, maxAbsDiff(scores, g.f32(t, key+"_scores")), tol)
			})
		}
	}
}

// greedy decodes steps tokens as transformers' generate() and returns the
// sequences [B, L+steps] and the scores [B, steps, V], flattened.
func greedy(t *testing.T, m models.Model, g *golden, steps int) ([]int64, []float32) {
	ids, shape := g.i64(t, "input_ids")
	mask, _ := g.i64(t, "attention_mask")
	B, L := int(shape[0]), int(shape[1])
	s := tensor.NoGradScope()
	defer s.Close()
	cache := &models.Cache{}
	defer cache.Free()
	pos := make([]int64, B*L)
	next := make([]int64, B)
	for b := 0; b < B; b++ {
		var c int64
		for i := 0; i < L; i++ {
			c += mask[b*L+i]
			pos[b*L+i] = c - 1
			if mask[b*L+i] == 0 {
				pos[b*L+i] = 1
			}
		}
		next[b] = c
	}
	seqs := make([][]int64, B)
	for b := range seqs {
		seqs[b] = append([]int64{}, ids[b*L:(b+1)*L]...)
	}
	fullMask, width := append([]int64{}, mask...), L
	in, inPos, inLen := ids, pos, L
	perStep := make([][]float32, B)
	for step := 0; step < steps; step++ {
		out := m.ForwardT(s, &models.Batch{
			InputIDs:      s.FromInt64(in, int64(B), int64(inLen)),
			AttentionMask: s.FromInt64(fullMask, int64(B), int64(width)),
			PositionIDs:   s.FromInt64(inPos, int64(B), int64(inLen)),
			PastKeyValues: cache, UseCache: true, LastLogitsOnly: true,
		})
		require.NoError(t, s.Err())
		last := s.Float32s(out.Logits) // [B, 1, V]
		V := len(last) / B
		in, inPos, inLen = make([]int64, B), make([]int64, B), 1
		grown := make([]int64, 0, B*(width+1))
		for b := 0; b < B; b++ {
			row := last[b*V : (b+1)*V]
			perStep[b] = append(perStep[b], row...)
			best := 0
			for i, v := range row {
				if v > row[best] {
					best = i
				}
			}
			in[b], inPos[b] = int64(best), next[b]
			next[b]++
			seqs[b] = append(seqs[b], in[b])
			grown = append(append(grown, fullMask[b*width:(b+1)*width]...), 1)
		}
		fullMask, width = grown, width+1
		s.FreeAll()
	}
	var seq []int64
	var scores []float32
	for b := 0; b < B; b++ {
		seq = append(seq, seqs[b]...)
		scores = append(scores, perStep[b]...)
	}
	return seq, scores
}
