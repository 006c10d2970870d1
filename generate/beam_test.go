package generate

import (
	"encoding/binary"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// toyLM is a language model over a tiny vocabulary whose next-token logits
// are a fixed pseudo-random function of the whole sequence so far. It keeps
// the sequence in the cache (as fullForwards does), so beam search's cache
// reordering must move it right.
type toyLM struct{ vocab int }

func (m toyLM) logits(seq []int64) []float32 {
	h := fnv.New64a()
	var b [8]byte
	for _, id := range seq {
		binary.LittleEndian.PutUint64(b[:], uint64(id))
		h.Write(b[:])
	}
	rng := rand.New(rand.NewPCG(h.Sum64(), 1))
	out := make([]float32, m.vocab)
	for i := range out {
		out[i] = float32(rng.NormFloat64() * 2)
	}
	return out
}

func (m toyLM) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	rows, L := b.InputIDs.Size(0), b.InputIDs.Size(1)
	ids := s.Int64s(b.InputIDs)
	var past []int64
	var T0 int64
	if b.PastKeyValues.Len() > 0 {
		k := b.PastKeyValues.Layers[0].K
		T0 = k.Size(2)
		past = s.Int64s(k)
	}
	T := T0 + L
	hist := make([][]int64, rows)
	logits := make([]float32, 0, rows*L*int64(m.vocab))
	flat := make([]int64, 0, rows*T)
	for r := int64(0); r < rows; r++ {
		hist[r] = append(append([]int64(nil), past[r*T0:(r+1)*T0]...), ids[r*L:(r+1)*L]...)
		flat = append(flat, hist[r]...)
		for j := T0; j < T; j++ {
			logits = append(logits, m.logits(hist[r][:j+1])...)
		}
	}
	c := b.PastKeyValues
	if len(c.Layers) == 0 {
		c.Layers = make([]models.KV, 1)
	}
	old := c.Layers[0]
	k := s.Keep(s.FromInt64(flat, rows, 1, T, 1))
	c.Layers[0] = models.KV{K: k, V: k.Clone()}
	old.K.Free()
	old.V.Free()
	return &models.Output{Logits: s.FromFloat32(logits, rows, L, int64(m.vocab)), PastKeyValues: c}
}

type scored struct {
	gen   []int64 // generated tokens, the eos included
	score float64
}

// bruteForce scores every continuation of prompt up to n tokens: summed
// log-probabilities over generated length^lp, a sequence ending at its eos
// or at n tokens.
func bruteForce(m toyLM, prompt []int64, n int, eos int64, lp float64) []scored {
	var all []scored
	var walk func(seq []int64, gen []int64, sum float64)
	walk = func(seq []int64, gen []int64, sum float64) {
		lg := m.logits(seq)
		var mx, z float64 = math.Inf(-1), 0
		for _, v := range lg {
			mx = math.Max(mx, float64(v))
		}
		for _, v := range lg {
			z += math.Exp(float64(v) - mx)
		}
		for tok := range lg {
			s := sum + float64(lg[tok]) - mx - math.Log(z)
			g := append(append([]int64(nil), gen...), int64(tok))
			if int64(tok) == eos || len(g) == n {
				all = append(all, scored{g, s / math.Pow(float64(len(g)), lp)})
				continue
			}
			walk(append(append([]int64(nil), seq...), int64(tok)), g, s)
		}
	}
	walk(prompt, nil, 0)
	sort.SliceStable(all, func(a, b int) bool { return all[a].score > all[b].score })
	return all
}

// With enough beams to hold every candidate, beam search is exhaustive: it
// returns the best-scoring sequences of a brute-force search, for every
// length penalty, with the heuristic and the "never" stopping rule
// (early_stopping=true stops at the first num_beams finished hypotheses by
// design).
func TestBeamSearchEqualsBruteForce(t *testing.T) {
	for _, v := range []struct{ vocab, n, beams int }{{3, 3, 12}, {4, 3, 36}, {3, 4, 36}} {
		m := toyLM{vocab: v.vocab}
		eos := int64(v.vocab - 1)
		prompts := [][]int64{{0, 1, 0}, {1, 1, 2}}
		for _, lp := range []float64{1, 2, 0.5, tiny, -1} {
			for _, es := range []EarlyStopping{EarlyStoppingHeuristic, EarlyStoppingNever} {
				cfg := DefaultGenerationConfig()
				cfg.MaxNewTokens, cfg.NumBeams, cfg.NumReturnSequences = v.n, v.beams, 5
				cfg.EOSTokenID, cfg.LengthPenalty, cfg.EarlyStopping = TokenIDs{eos}, lp, es
				out, err := Generate(bg, m, Input{InputIDs: prompts}, cfg)
				require.NoError(t, err)
				require.Len(t, out.Sequences, 10)
				for p, prompt := range prompts {
					want := bruteForce(m, prompt, v.n, eos, lp)
					for j := 0; j < 5; j++ {
						row := p*5 + j
						require.Equal(t, prompt, out.Sequences[row][:3])
						require.Equal(t, want[j].gen, out.NewTokens(row), "vocab %d lp %v %v: prompt %d, rank %d", v.vocab, lp, es, p, j)
						require.InDelta(t, want[j].score, out.SequenceScores[row], 1e-4)
					}
				}
			}
		}
	}
}

// A narrow beam on the toy model: the returned sequences are well formed
// (eos appended when it fits, padding after it), sorted by score, and each
// score is its tokens' length-penalised log-probability.
func TestBeamSearchScoresAreSequenceLogprobs(t *testing.T) {
	m := toyLM{vocab: 6}
	eos := int64(5)
	pad := int64(0)
	cfg := DefaultGenerationConfig()
	cfg.MaxNewTokens, cfg.NumBeams, cfg.NumReturnSequences = 6, 3, 3
	cfg.EOSTokenID, cfg.PadTokenID, cfg.LengthPenalty = TokenIDs{eos}, &pad, 1.3
	prompt := []int64{3, 1}
	out, err := Generate(bg, m, Input{InputIDs: [][]int64{prompt}}, cfg)
	require.NoError(t, err)
	for i := range out.Sequences {
		gen := out.NewTokens(i)
		seq := append([]int64(nil), prompt...)
		var sum float64
		for _, tok := range gen {
			lg := m.logits(seq)
			var mx, z float64 = math.Inf(-1), 0
			for _, v := range lg {
				mx = math.Max(mx, float64(v))
			}
			for _, v := range lg {
				z += math.Exp(float64(v) - mx)
			}
			sum += float64(lg[tok]) - mx - math.Log(z)
			seq = append(seq, tok)
		}
		require.InDelta(t, sum/math.Pow(float64(len(gen)), 1.3), out.SequenceScores[i], 1e-4)
		if i > 0 {
			require.GreaterOrEqual(t, out.SequenceScores[i-1], out.SequenceScores[i])
		}
		for j := 2 + len(gen); j < len(out.Sequences[i]); j++ {
			require.Equal(t, pad, out.Sequences[i][j])
		}
	}
}

// Beam sampling is reproducible with a seed and keeps its candidates
// inside top-k.
func TestBeamSampleSeeded(t *testing.T) {
	m := toyLM{vocab: 50}
	seed := int64(3)
	cfg := DefaultGenerationConfig()
	cfg.MaxNewTokens, cfg.NumBeams, cfg.NumReturnSequences = 5, 3, 2
	cfg.DoSample, cfg.TopK, cfg.Seed, cfg.OutputScores = true, 8, &seed, true
	in := Input{InputIDs: [][]int64{{1, 2}, {3, 4}}}
	a, err := Generate(bg, m, in, cfg)
	require.NoError(t, err)
	b, err := Generate(bg, m, in, cfg)
	require.NoError(t, err)
	require.Equal(t, a.Sequences, b.Sequences)
	require.Len(t, a.Sequences, 4)
	for r := 0; r < a.ScoresShape[0]; r++ {
		for st := 0; st < a.ScoresShape[1]; st++ {
			kept := 0
			for _, v := range a.ScoresAt(r, st) {
				if !math.IsInf(float64(v), -1) {
					kept++
				}
			}
			require.Equal(t, 8, kept)
		}
	}
}
