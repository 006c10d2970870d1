package ia3_test

import (
	"math"
	"testing"

	"github.com/gopeft/peft/ia3"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// fixedLogits is a "model" that returns the same logits whatever the input.
type fixedLogits struct {
	v     []float32
	shape []int64
}

func (f fixedLogits) ForwardT(s *tensor.Scope, _ *models.Batch) *models.Output {
	return &models.Output{Logits: s.FromFloat32(f.v, f.shape...)}
}

// One example, input [2], choices [1] (right) and [2, 0] (wrong), vocabulary
// of 3. The logits are chosen so the probabilities are round:
//
//	row 0 (choice 0), position 0 → token 1: logits (0, ln2, 0)  p = 1/2
//	row 1 (choice 1), position 0 → token 2: logits (0, 0, ln2)  p = 1/2
//	row 1 (choice 1), position 1 → token 0: logits (ln3, 0, 0)  p = 3/5
//
// (every other position is ignored, so its logits are arbitrary).
func handExample(t *testing.T) (*ia3.ChoiceBatch, fixedLogits) {
	b, err := ia3.NewChoiceBatch([]ia3.MultipleChoice{{Input: []int64{2}, Choices: [][]int64{{1}, {2, 0}}, Label: 0}}, 0)
	require.NoError(t, err)
	require.Equal(t, []int64{2, 1, 0, 2, 2, 0}, b.InputIDs)
	require.Equal(t, []int64{1, 1, 0, 1, 1, 1}, b.AttentionMask)
	require.Equal(t, []int64{-100, 1, -100, -100, 2, 0}, b.Labels)
	ln2, ln3 := float32(math.Log(2)), float32(math.Log(3))
	v := []float32{
		0, ln2, 0, 9, 9, 9, 7, 7, 7, // row 0: positions 0, 1, 2
		0, 0, ln2, ln3, 0, 0, 5, 5, 5, // row 1
	}
	return b, fixedLogits{v, []int64{2, 3, 3}}
}

func TestTFewLossesByHand(t *testing.T) {
	b, model := handExample(t)
	s := tensor.NewScope()
	defer s.Close()
	l := ia3.TFewLoss(s, model, b)
	require.NoError(t, s.Err())

	// L_LM: the right answer's one token has p = 1/2
	lm := -math.Log(0.5)
	// L_UL: the wrong answer's tokens have p = 1/2 and 3/5
	ul := -(math.Log(1-0.5) + math.Log(1-0.6)) / 2
	// L_LN: β0 = log(1/2), β1 = (log(1/2) + log(3/5))/2; softmax CE with answer 0
	b0, b1 := math.Log(0.5), (math.Log(0.5)+math.Log(0.6))/2
	ln := -b0 + math.Log(math.Exp(b0)+math.Exp(b1))
	require.InDelta(t, lm, s.Item(l.LM), 1e-6)
	require.InDelta(t, ul, s.Item(l.Unlikelihood), 1e-6)
	require.InDelta(t, ln, s.Item(l.LengthNormalized), 1e-6)
	require.InDelta(t, lm+ul+ln, s.Item(l.Total), 1e-6)
	require.InDeltaSlice(t, []float64{b0, b1}, toF64(s.Float32s(l.Scores)), 1e-6)
	t.Logf("LM %.4f  UL %.4f  LN %.4f", lm, ul, ln)
}

// Rank classification normalizes by length: the two-token choice has the
// lower total log-probability (log 1/2 + log 3/5 < log 1/2) but the higher
// per-token average, so it wins.
func TestRankClassifyUsesLengthNormalization(t *testing.T) {
	_, model := handExample(t)
	ex := []ia3.MultipleChoice{{Input: []int64{2}, Choices: [][]int64{{1}, {2, 0}}}}
	pred, scores, err := ia3.RankClassify(model, ex, 0)
	require.NoError(t, err)
	require.Equal(t, []int{1}, pred)
	require.InDelta(t, math.Log(0.5), scores[0][0], 1e-6)
	require.InDelta(t, (math.Log(0.5)+math.Log(0.6))/2, scores[0][1], 1e-6)
	require.Less(t, math.Log(0.5)+math.Log(0.6), math.Log(0.5), "unnormalized, choice 0 would win")
}

// Two examples with the answer at different indices, and several wrong
// choices: every loss is a batch average as documented.
func TestTFewLossesBatchAverages(t *testing.T) {
	// vocabulary 2; every scored position has logits (0, ln3): p(0)=1/4, p(1)=3/4
	ex := []ia3.MultipleChoice{
		{Input: []int64{1}, Choices: [][]int64{{0}, {1}, {1, 1}}, Label: 1},
		{Input: []int64{0, 1}, Choices: [][]int64{{0, 0}, {1}, {0}}, Label: 0},
	}
	b, err := ia3.NewChoiceBatch(ex, 0)
	require.NoError(t, err)
	require.Equal(t, 4, b.Len)
	R := b.E * b.N
	v := make([]float32, R*b.Len*2)
	for i := 0; i < R*b.Len; i++ {
		v[2*i+1] = float32(math.Log(3))
	}
	s := tensor.NewScope()
	defer s.Close()
	l := ia3.TFewLossFromLogits(s, s.FromFloat32(v, int64(R), int64(b.Len), 2), b)
	require.NoError(t, s.Err())
	lp := func(tok int64) float64 {
		if tok == 0 {
			return math.Log(0.25)
		}
		return math.Log(0.75)
	}
	var lmSum, lmN, ulSum, ulN, lnSum float64
	for e, x := range ex {
		betas := make([]float64, len(x.Choices))
		for n, c := range x.Choices {
			var sum float64
			for _, tok := range c {
				sum += lp(tok)
				if n == x.Label {
					lmSum -= lp(tok)
					lmN++
				} else {
					ulSum -= math.Log(1 - math.Exp(lp(tok)))
					ulN++
				}
			}
			betas[n] = sum / float64(len(c))
		}
		var z float64
		for _, bb := range betas {
			z += math.Exp(bb)
		}
		lnSum += -betas[x.Label] + math.Log(z)
		_ = e
	}
	require.InDelta(t, lmSum/lmN, s.Item(l.LM), 1e-6)
	require.InDelta(t, ulSum/ulN, s.Item(l.Unlikelihood), 1e-6)
	require.InDelta(t, lnSum/2, s.Item(l.LengthNormalized), 1e-6)
}

func TestChoiceBatchErrors(t *testing.T) {
	_, err := ia3.NewChoiceBatch(nil, 0)
	require.ErrorContains(t, err, "no examples")
	_, err = ia3.NewChoiceBatch([]ia3.MultipleChoice{{Input: []int64{1}, Choices: [][]int64{{1}, {2}}}, {Input: []int64{1}, Choices: [][]int64{{1}}}}, 0)
	require.ErrorContains(t, err, "example 1 has 1 choices")
	_, err = ia3.NewChoiceBatch([]ia3.MultipleChoice{{Input: []int64{1}, Choices: [][]int64{{1}, {2}}, Label: 2}}, 0)
	require.ErrorContains(t, err, "label 2")
	_, err = ia3.NewChoiceBatch([]ia3.MultipleChoice{{Input: []int64{1}, Choices: [][]int64{{1}, {}}}}, 0)
	require.ErrorContains(t, err, "choice 1 is empty")
	_, err = ia3.NewChoiceBatch([]ia3.MultipleChoice{{Choices: [][]int64{{1}}}}, 0)
	require.ErrorContains(t, err, "empty input")
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// A prompt-learning model's logits start with its virtual tokens' positions
// (as in PEFT): rank classification scores only the real tokens' positions.
func TestRankClassifySkipsVirtualTokens(t *testing.T) {
	_, model := handExample(t)
	const virtual, vocab = 2, 3
	var v []float32
	for row := 0; row < 2; row++ {
		for i := 0; i < virtual*vocab; i++ {
			v = append(v, float32(100*(i%vocab))) // would dominate if scored
		}
		v = append(v, model.v[row*9:(row+1)*9]...)
	}
	prompted := fixedLogits{v, []int64{2, 3 + virtual, vocab}}
	ex := []ia3.MultipleChoice{{Input: []int64{2}, Choices: [][]int64{{1}, {2, 0}}}}
	_, want, err := ia3.RankClassify(model, ex, 0)
	require.NoError(t, err)
	_, got, err := ia3.RankClassify(prompted, ex, 0)
	require.NoError(t, err)
	require.InDeltaSlice(t, want[0], got[0], 1e-9)
}
