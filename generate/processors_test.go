package generate

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

var inf = float32(math.Inf(-1))

func runProc(t *testing.T, p processor, seqs [][]int64, scores []float32) []float32 {
	t.Helper()
	s := tensor.NoGradScope()
	defer s.Close()
	x := s.FromFloat32(scores, int64(len(seqs)), int64(len(scores)/len(seqs)))
	out := s.Float32s(p.process(s, seqs, x))
	require.NoError(t, s.Err())
	return out
}

func TestRepetitionPenalty(t *testing.T) {
	// tokens 0, 1 (twice) and 4 were seen in row 0; 2 in row 1
	got := runProc(t, repetitionPenalty{2}, [][]int64{{0, 1, 1, 4}, {2, 2, 2, 2}}, []float32{
		1, -2, 3, 0.5, -1,
		1, -2, 3, 0.5, -1,
	})
	require.Equal(t, []float32{
		0.5, -4, 3, 0.5, -2, // positive divided, negative multiplied, once each
		1, -2, 1.5, 0.5, -1,
	}, got)
	// a penalty below 1 rewards repetition
	got = runProc(t, repetitionPenalty{0.5}, [][]int64{{0, 1}}, []float32{1, -2, 3})
	require.Equal(t, []float32{2, -1, 3}, got)
}

func TestMinLength(t *testing.T) {
	p := minLength{minLength: 4, eos: TokenIDs{3, 1, 99}} // 99: outside the vocabulary, ignored
	got := runProc(t, p, [][]int64{{5, 5, 5}, {6, 6, 6}}, []float32{1, 2, 3, 4, 1, 2, 3, 4})
	require.Equal(t, []float32{1, inf, 3, inf, 1, inf, 3, inf}, got)
	got = runProc(t, p, [][]int64{{5, 5, 5, 5}}, []float32{1, 2, 3, 4})
	require.Equal(t, []float32{1, 2, 3, 4}, got)
}

func TestTemperature(t *testing.T) {
	require.Equal(t, []float32{2, -4, 1}, runProc(t, temperature{0.5}, [][]int64{{0}}, []float32{1, -2, 0.5}))
}

func TestTopK(t *testing.T) {
	seqs := [][]int64{{0}, {0}}
	got := runProc(t, topK{2}, seqs, []float32{1, 3, 2.5, 0.5, -1, 5, 4, 3, 2, 1})
	require.Equal(t, []float32{inf, 3, 2.5, inf, inf, 5, 4, inf, inf, inf}, got)
	// ties with the k-th value are kept
	got = runProc(t, topK{2}, [][]int64{{0}}, []float32{1, 1, 3, 0, 1})
	require.Equal(t, []float32{1, 1, 3, inf, 1}, got)
	// k beyond the vocabulary keeps everything
	got = runProc(t, topK{10}, [][]int64{{0}}, []float32{1, 2, 3})
	require.Equal(t, []float32{1, 2, 3}, got)
}

func TestTopP(t *testing.T) {
	probs := []float64{0.5, 0.3, 0.15, 0.05}
	logp := make([]float32, len(probs))
	for i, p := range probs {
		logp[i] = float32(math.Log(p))
	}
	seqs := [][]int64{{0}}
	// sorted ascending, cumulative 0.05, 0.2, 0.5, 1: remove those <= 1-p
	require.Equal(t, []float32{logp[0], logp[1], inf, inf}, runProc(t, topP{p: 0.75, minKeep: 1}, seqs, logp))
	require.Equal(t, []float32{logp[0], logp[1], logp[2], inf}, runProc(t, topP{p: 0.9, minKeep: 1}, seqs, logp))
	require.Equal(t, []float32{logp[0], inf, inf, inf}, runProc(t, topP{p: 0.4, minKeep: 1}, seqs, logp))
	// p = 0 keeps min_tokens_to_keep
	require.Equal(t, []float32{logp[0], inf, inf, inf}, runProc(t, topP{p: tiny, minKeep: 1}, seqs, logp))
	require.Equal(t, []float32{logp[0], logp[1], inf, inf}, runProc(t, topP{p: tiny, minKeep: 2}, seqs, logp))
	// rows are independent; unsorted input
	two := []float32{logp[2], logp[0], logp[3], logp[1], logp[3], logp[2], logp[1], logp[0]}
	require.Equal(t, []float32{inf, logp[0], inf, logp[1], inf, inf, logp[1], logp[0]},
		runProc(t, topP{p: 0.75, minKeep: 1}, [][]int64{{0}, {0}}, two))
}

// The plan builds HF's list: processors first, warpers only when sampling,
// top-k/top-p keeping 2 tokens (or one more than the eos tokens) with beams.
func TestProcessorOrder(t *testing.T) {
	c := DefaultGenerationConfig()
	c.MaxNewTokens, c.RepetitionPenalty, c.MinLength, c.MinNewTokens = 4, 1.2, 3, 2
	c.EOSTokenID = TokenIDs{2}
	c.Temperature, c.TopK, c.TopP = 0.7, 5, 0.9
	p, err := c.resolve(6)
	require.NoError(t, err)
	require.Equal(t, []processor{repetitionPenalty{1.2}, minLength{3, TokenIDs{2}}, minLength{8, TokenIDs{2}}}, p.processors())

	c.DoSample = true
	p, err = c.resolve(6)
	require.NoError(t, err)
	require.Equal(t, []processor{repetitionPenalty{1.2}, minLength{3, TokenIDs{2}}, minLength{8, TokenIDs{2}},
		temperature{0.7}, topK{5}, topP{0.9, 1}}, p.processors())

	c.NumBeams, c.TopK, c.EOSTokenID = 4, 1, TokenIDs{2, 3, 4}
	c.RepetitionPenalty, c.MinLength, c.MinNewTokens, c.Temperature = 1, 0, 0, 1
	p, err = c.resolve(6)
	require.NoError(t, err)
	require.Equal(t, beamSample, p.mode)
	require.Equal(t, []processor{topK{4}, topP{0.9, 4}}, p.processors())

	// without eos there is nothing for the minimum lengths to mask
	c = DefaultGenerationConfig()
	c.MinNewTokens, c.MaxNewTokens = 3, 5
	p, err = c.resolve(2)
	require.NoError(t, err)
	require.Empty(t, p.processors())
}

func TestSampleOne(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	counts := make([]int, 4)
	for i := 0; i < 20000; i++ {
		k, err := sampleOne(rng, []float32{0.1, 0, 0.6, 0.3})
		require.NoError(t, err)
		counts[k]++
	}
	require.Zero(t, counts[1])
	require.InDelta(t, 0.1, float64(counts[0])/20000, 0.01)
	require.InDelta(t, 0.6, float64(counts[2])/20000, 0.015)
	_, err := sampleOne(rng, []float32{0, 0})
	require.Error(t, err)
	_, err = sampleOne(rng, []float32{float32(math.NaN()), 1})
	require.Error(t, err)

	got, err := sampleMany(rng, []float32{0.2, 0, 0.5, 0.3}, 3)
	require.NoError(t, err)
	require.ElementsMatch(t, []int{0, 2, 3}, got)
	_, err = sampleMany(rng, []float32{0.2, 0, 0.8}, 3)
	require.Error(t, err)
}

// The n-best list and the stopping rules, by hand.
func TestHypotheses(t *testing.T) {
	p := &plan{numBeams: 2, lengthPenalty: 1, maxLength: 10}
	h := newHypotheses(p)
	h.add([]int64{1}, -4, 2) // score -4/2 = -2
	require.False(t, h.done(-0.1, 5, 3), "fewer than num_beams hypotheses")
	h.add([]int64{2}, -3, 3) // -1
	require.Equal(t, -2.0, h.worst)
	h.add([]int64{3}, -9, 3) // -3: worse than the worst, refused
	require.Len(t, h.beams, 2)
	h.add([]int64{4}, -3, 2) // -1.5 replaces -2
	require.Equal(t, -1.5, h.worst)
	require.ElementsMatch(t, []float64{-1, -1.5}, []float64{h.beams[0].score, h.beams[1].score})

	// heuristic: done when worst >= best / (cur_len - prompt_len)^lp
	require.False(t, h.done(-2, 5, 3)) // -1.5 >= -1 ? no
	require.True(t, h.done(-4, 5, 3))  // -1.5 >= -2
	require.True(t, h.done(-2, 4, 3))  // -1.5 >= -2
	// never, lp > 0: the best reachable is best / (max_length - prompt_len)^lp
	h.earlyStopping = EarlyStoppingNever
	require.False(t, h.done(-4, 5, 3)) // -1.5 >= -4/7 ? no
	require.True(t, h.done(-14, 5, 3)) // -1.5 >= -2
	// never, lp <= 0: the current length is the best case
	h.lengthPenalty = -1
	require.False(t, h.done(-0.5, 5, 3)) // -1.5 >= -0.5·2 ? no
	require.True(t, h.done(-1, 5, 3))    // -1.5 >= -1·2
	// true: done as soon as num_beams hypotheses are finished
	h.earlyStopping = EarlyStoppingOn
	require.True(t, h.done(0, 4, 3))
}
