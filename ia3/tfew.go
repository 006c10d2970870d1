package ia3

import (
	"fmt"
	"math"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/tensor"
)

// MultipleChoice is one multiple-choice example as token ids: the input
// (the prompt the choices continue) and the candidate answers; Label is the
// index of the right answer (unused by RankClassify).
type MultipleChoice struct {
	Input   []int64
	Choices [][]int64
	Label   int
}

// ChoiceBatch is a batch of E examples with N choices each, laid out for a
// decoder-only model as E·N rows "input ++ choice", right-padded: row
// e·N+n is example e's choice n.
type ChoiceBatch struct {
	InputIDs      []int64 // [E·N, L]
	AttentionMask []int64 // [E·N, L]: 1 on tokens, 0 on padding
	// Labels are the choice tokens' ids and -100 elsewhere (input and
	// padding), so only the choices are scored.
	Labels     []int64 // [E·N, L]
	Answers    []int64 // [E]: the right choice of each example
	E, N, Len  int
	PadTokenID int64
}

// NewChoiceBatch lays out examples that all have the same number (≥ 1) of
// non-empty choices; padding uses padID.
func NewChoiceBatch(examples []MultipleChoice, padID int64) (*ChoiceBatch, error) {
	if len(examples) == 0 {
		return nil, fmt.Errorf("ia3: no examples")
	}
	n := len(examples[0].Choices)
	L := 0
	for i, ex := range examples {
		if len(ex.Choices) != n || n == 0 {
			return nil, fmt.Errorf("ia3: example %d has %d choices, example 0 has %d (a batch needs the same non-zero number)", i, len(ex.Choices), n)
		}
		if len(ex.Input) == 0 {
			return nil, fmt.Errorf("ia3: example %d has an empty input (the first choice token needs a token before it)", i)
		}
		if ex.Label < 0 || ex.Label >= n {
			return nil, fmt.Errorf("ia3: example %d: label %d is not a choice index in [0, %d)", i, ex.Label, n)
		}
		for j, c := range ex.Choices {
			if len(c) == 0 {
				return nil, fmt.Errorf("ia3: example %d: choice %d is empty", i, j)
			}
			if l := len(ex.Input) + len(c); l > L {
				L = l
			}
		}
	}
	b := &ChoiceBatch{E: len(examples), N: n, Len: L, PadTokenID: padID}
	for _, ex := range examples {
		b.Answers = append(b.Answers, int64(ex.Label))
		for _, c := range ex.Choices {
			for i := 0; i < L; i++ {
				switch {
				case i < len(ex.Input):
					b.InputIDs = append(b.InputIDs, ex.Input[i])
					b.AttentionMask = append(b.AttentionMask, 1)
					b.Labels = append(b.Labels, models.IgnoreIndex)
				case i < len(ex.Input)+len(c):
					tok := c[i-len(ex.Input)]
					b.InputIDs = append(b.InputIDs, tok)
					b.AttentionMask = append(b.AttentionMask, 1)
					b.Labels = append(b.Labels, tok)
				default:
					b.InputIDs = append(b.InputIDs, padID)
					b.AttentionMask = append(b.AttentionMask, 0)
					b.Labels = append(b.Labels, models.IgnoreIndex)
				}
			}
		}
	}
	return b, nil
}

// TFewLosses are T-Few's three training losses (Liu et al. 2022, §3.2) and
// their sum, scalars in the scope they were computed in.
//
//   - LM: the language-model loss on the right answer, −(1/T)·Σₜ log p(yₜ | x, y<ₜ),
//     averaged over every right-answer token of the batch;
//   - Unlikelihood: −Σₙ Σₜ log(1 − p(ŷⁿₜ | x, ŷⁿ<ₜ)) / Σₙ T(ŷⁿ) over every
//     wrong choice's tokens (zero with a single choice); 1 − p is clamped
//     at 1e-12 so a certain token gives a large finite loss;
//   - LengthNormalized: softmax cross-entropy over the choices' scores
//     β(x, y) = (1/T(y))·Σₜ log p(yₜ | x, y<ₜ), averaged over the examples;
//   - Total: LM + Unlikelihood + LengthNormalized (T-Few adds them with unit
//     weights).
type TFewLosses struct {
	LM, Unlikelihood, LengthNormalized, Total *tensor.T
	// Scores are β per choice, [E, N] (what RankClassify ranks).
	Scores *tensor.T
}

// TFewLoss runs the model on the batch and returns T-Few's losses.
func TFewLoss(s *tensor.Scope, model interface {
	ForwardT(*tensor.Scope, *models.Batch) *models.Output
}, b *ChoiceBatch) *TFewLosses {
	R, L := int64(b.E*b.N), int64(b.Len)
	out := model.ForwardT(s, &models.Batch{
		InputIDs:      s.FromInt64(b.InputIDs, R, L),
		AttentionMask: s.FromInt64(b.AttentionMask, R, L),
	})
	if s.Err() != nil {
		return &TFewLosses{}
	}
	return TFewLossFromLogits(s, out.Logits, b)
}

// TFewLossFromLogits computes T-Few's losses from the logits [E·N, L, V]
// of a ChoiceBatch.
func TFewLossFromLogits(s *tensor.Scope, logits *tensor.T, b *ChoiceBatch) *TFewLosses {
	sumLp, length := choiceLogProbs(s, logits, b, false)
	tokUL, _ := choiceLogProbs(s, logits, b, true)
	if s.Err() != nil {
		return &TFewLosses{}
	}
	R := b.E * b.N
	right := make([]float32, R)
	wrong := make([]float32, R)
	var rightTokens, wrongTokens float64
	for e := 0; e < b.E; e++ {
		for n := 0; n < b.N; n++ {
			r := e*b.N + n
			toks := 0.0
			for i := 0; i < b.Len; i++ {
				if b.Labels[r*b.Len+i] != models.IgnoreIndex {
					toks++
				}
			}
			if int64(n) == b.Answers[e] {
				right[r] = 1
				rightTokens += toks
			} else {
				wrong[r] = 1
				wrongTokens += toks
			}
		}
	}
	rightT := s.FromFloat32(right, int64(R))
	wrongT := s.FromFloat32(wrong, int64(R))
	lm := s.DivScalar(s.Neg(s.Sum(s.Mul(sumLp, rightT), false)), rightTokens)
	var ul *tensor.T
	if wrongTokens > 0 {
		ul = s.DivScalar(s.Neg(s.Sum(s.Mul(tokUL, wrongT), false)), wrongTokens)
	} else {
		ul = s.Zeros(tensor.Float32)
	}
	scores := s.View(s.Div(sumLp, length), int64(b.E), int64(b.N))
	ln := s.CrossEntropy(scores, s.FromInt64(b.Answers, int64(b.E)), models.IgnoreIndex)
	total := s.Add(s.Add(lm, ul), ln)
	return &TFewLosses{LM: lm, Unlikelihood: ul, LengthNormalized: ln, Total: total, Scores: scores}
}

// choiceLogProbs sums, per row, log p of every choice token (or, with
// unlikely, log(1 − p) clamped at 1e-12), and counts the tokens: [E·N] each.
func choiceLogProbs(s *tensor.Scope, logits *tensor.T, b *ChoiceBatch, unlikely bool) (sum, length *tensor.T) {
	R, L := int64(b.E*b.N), int64(b.Len)
	if sh := logits.Shape(); len(sh) == 3 && sh[0] == R && sh[1] > L {
		// prompt tuning / P-tuning: the virtual tokens' logits come first
		logits = s.Narrow(logits, 1, sh[1]-L, L)
	}
	if sh := logits.Shape(); len(sh) != 3 || sh[0] != R || sh[1] != L {
		return s.Failf("ia3: logits of shape %v for a choice batch of %d rows of %d tokens", logits.Shape(), R, L), nil
	}
	labels := s.FromInt64(b.Labels, R, L)
	tg := s.Narrow(labels, 1, 1, L-1)
	valid := s.To(s.GtScalar(tg, -1), tensor.Float32) // labels ≥ 0
	safe := s.Mul(tg, s.To(valid, tensor.Int64))      // -100 → 0 for gather
	lsm := s.LogSoftmax(s.Narrow(logits, 1, 0, L-1), -1, tensor.Float32)
	lp := s.Squeeze(s.Gather(lsm, 2, s.Unsqueeze(safe, 2)), 2) // [R, L-1]
	if unlikely {
		lp = s.Log(s.ClampMin(s.Neg(s.AddScalar(s.Exp(lp), -1)), 1e-12))
	}
	lp = s.Mul(lp, valid)
	return s.Sum(lp, false, 1), s.Sum(valid, false, 1)
}

// RankClassify scores every choice of every example by its
// length-normalized log-probability β = (1/T)·Σₜ log p(yₜ | x, y<ₜ) and
// returns the best choice per example (T-Few's rank classification) with
// the scores [E][N]. It runs under no-grad.
func RankClassify(model interface {
	ForwardT(*tensor.Scope, *models.Batch) *models.Output
}, examples []MultipleChoice, padID int64) ([]int, [][]float64, error) {
	b, err := NewChoiceBatch(examples, padID)
	if err != nil {
		return nil, nil, err
	}
	s := tensor.NoGradScope()
	defer s.Close()
	R, L := int64(b.E*b.N), int64(b.Len)
	out := model.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(b.InputIDs, R, L), AttentionMask: s.FromInt64(b.AttentionMask, R, L)})
	if err := s.Err(); err != nil {
		return nil, nil, fmt.Errorf("ia3: rank classification: %w", err)
	}
	sum, length := choiceLogProbs(s, out.Logits, b, false)
	vals := s.Float32s(s.Div(sum, length))
	if err := s.Err(); err != nil {
		return nil, nil, fmt.Errorf("ia3: rank classification: %w", err)
	}
	preds := make([]int, b.E)
	scores := make([][]float64, b.E)
	for e := range scores {
		scores[e] = make([]float64, b.N)
		best := math.Inf(-1)
		for n := range scores[e] {
			v := float64(vals[e*b.N+n])
			scores[e][n] = v
			if v > best {
				best, preds[e] = v, n
			}
		}
	}
	return preds, scores, nil
}
