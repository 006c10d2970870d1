package generate

import (
	"math"

	"github.com/gopeft/peft/tensor"
)

// The logits processors and warpers of transformers 4.39, as tensor ops on
// the scores of one step, [rows, vocab]. They run in HF's order:
// repetition penalty, minimum length, minimum new tokens; then, only when
// sampling, temperature, top-k, top-p.

// processor changes one step's scores. seqs are the rows' tokens so far
// (prompt and padding included).
type processor interface {
	process(s *tensor.Scope, seqs [][]int64, scores *tensor.T) *tensor.T
}

// processors lists the processors and warpers p asks for, in HF's order.
func (p *plan) processors() []processor {
	var list []processor
	if p.repetitionPenalty != 1 {
		list = append(list, repetitionPenalty{p.repetitionPenalty})
	}
	if p.minLength > 0 && len(p.eos) > 0 {
		list = append(list, minLength{minLength: p.minLength, eos: p.eos})
	}
	if p.minNewTokens > 0 && len(p.eos) > 0 {
		list = append(list, minLength{minLength: p.promptLen + p.minNewTokens, eos: p.eos})
	}
	if p.mode == sample || p.mode == beamSample {
		if p.temperature != 1 {
			list = append(list, temperature{p.temperature})
		}
		if p.topK != 0 {
			list = append(list, topK{k: max(p.topK, p.minTokensToKeep())})
		}
		if p.topP < 1 {
			list = append(list, topP{p: p.topP, minKeep: p.minTokensToKeep()})
		}
	}
	return list
}

// repetitionPenalty divides the positive and multiplies the negative score
// of every token that occurs in the row (HF's RepetitionPenaltyLogitsProcessor).
type repetitionPenalty struct{ penalty float64 }

func (r repetitionPenalty) process(s *tensor.Scope, seqs [][]int64, scores *tensor.T) *tensor.T {
	rows, width := len(seqs), len(seqs[0])
	flat := make([]int64, 0, rows*width)
	for _, row := range seqs {
		flat = append(flat, row...)
	}
	ids := s.FromInt64(flat, int64(rows), int64(width))
	seen := s.Gather(scores, 1, ids)
	penalised := s.Where(s.LtScalar(seen, 0), s.MulScalar(seen, r.penalty), s.DivScalar(seen, r.penalty))
	return s.Scatter(scores, 1, ids, penalised)
}

// minLength sets the eos tokens' scores to -inf while the rows are shorter
// than minLength (HF's MinLengthLogitsProcessor, and with minLength =
// prompt + min_new_tokens its MinNewTokensLengthLogitsProcessor).
type minLength struct {
	minLength int
	eos       TokenIDs
}

func (m minLength) process(s *tensor.Scope, seqs [][]int64, scores *tensor.T) *tensor.T {
	if len(seqs[0]) >= m.minLength {
		return scores
	}
	vocab := scores.Size(-1)
	var ids []int64
	for _, e := range m.eos {
		if e >= 0 && e < vocab {
			ids = append(ids, e)
		}
	}
	if len(ids) == 0 {
		return scores
	}
	return s.IndexFill(scores, 1, s.FromInt64(ids, int64(len(ids))), math.Inf(-1))
}

// temperature divides the scores (HF's TemperatureLogitsWarper).
type temperature struct{ t float64 }

func (t temperature) process(s *tensor.Scope, _ [][]int64, scores *tensor.T) *tensor.T {
	return s.DivScalar(scores, t.t)
}

// topK sets every score below the k-th largest to -inf (HF's
// TopKLogitsWarper: ties with the k-th survive).
type topK struct{ k int }

func (t topK) process(s *tensor.Scope, _ [][]int64, scores *tensor.T) *tensor.T {
	k := min(int64(t.k), scores.Size(-1))
	vals, _ := s.Topk(scores, k, -1, true, true)
	kth := s.Narrow(vals, -1, k-1, 1)
	return s.MaskedFill(scores, s.Lt(scores, kth), math.Inf(-1))
}

// topP keeps the most likely tokens whose probabilities add up to p, and
// at least minKeep of them (HF's TopPLogitsWarper: sort ascending, remove
// the tokens whose cumulative probability is <= 1-p).
type topP struct {
	p       float64
	minKeep int
}

func (t topP) process(s *tensor.Scope, _ [][]int64, scores *tensor.T) *tensor.T {
	vocab := scores.Size(-1)
	sorted, idx := s.Sort(scores, -1, false)
	cum := s.Cumsum(s.Softmax(sorted, -1, tensor.Float32), -1)
	remove := s.LeScalar(cum, 1-t.p)
	keep := min(int64(t.minKeep), vocab)
	last := make([]int64, keep)
	for i := range last {
		last[i] = vocab - keep + int64(i)
	}
	remove = s.IndexFill(remove, 1, s.FromInt64(last, keep), 0)
	remove = s.Scatter(remove, 1, idx, remove)
	return s.MaskedFill(scores, remove, math.Inf(-1))
}
