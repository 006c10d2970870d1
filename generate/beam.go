package generate

import (
	"fmt"
	"math"
	"sort"
)

// Beam search bookkeeping, as transformers 4.39's BeamSearchScorer and
// BeamHypotheses: per prompt, a list of the NumBeams best finished
// hypotheses scored by summed log-probability / generated_length^length_penalty.

type hypothesis struct {
	score float64
	seq   []int64
}

// hypotheses is one prompt's n-best list of finished sequences.
type hypotheses struct {
	numBeams      int
	lengthPenalty float64
	earlyStopping EarlyStopping
	maxLength     int
	beams         []hypothesis
	worst         float64
}

func newHypotheses(p *plan) *hypotheses {
	return &hypotheses{numBeams: p.numBeams, lengthPenalty: p.lengthPenalty,
		earlyStopping: p.earlyStopping, maxLength: p.maxLength, worst: 1e9}
}

// add offers a finished sequence whose summed log-probability is sumLogprobs
// and whose generated part (eos included) is generatedLen tokens long.
func (h *hypotheses) add(seq []int64, sumLogprobs float64, generatedLen int) {
	score := sumLogprobs / math.Pow(float64(generatedLen), h.lengthPenalty)
	if len(h.beams) < h.numBeams || score > h.worst {
		h.beams = append(h.beams, hypothesis{score: score, seq: append([]int64(nil), seq...)})
		if len(h.beams) > h.numBeams {
			// drop the worst; the new worst is the second worst
			order := make([]int, len(h.beams))
			for i := range order {
				order[i] = i
			}
			sort.SliceStable(order, func(a, b int) bool { return h.beams[order[a]].score < h.beams[order[b]].score })
			h.worst = h.beams[order[1]].score
			drop := order[0]
			h.beams = append(h.beams[:drop], h.beams[drop+1:]...)
		} else {
			h.worst = math.Min(score, h.worst)
		}
	}
}

// done reports whether no running beam can still enter the list.
// bestSumLogprobs is the best candidate score of this step, curLen the
// length the candidates have (prompt included).
func (h *hypotheses) done(bestSumLogprobs float64, curLen, promptLen int) bool {
	if len(h.beams) < h.numBeams {
		return false
	}
	switch h.earlyStopping {
	case EarlyStoppingOn:
		return true
	case EarlyStoppingHeuristic:
		return h.worst >= bestSumLogprobs/math.Pow(float64(curLen-promptLen), h.lengthPenalty)
	}
	// never: the best score reachable at any length up to max_length
	var highest float64
	if h.lengthPenalty > 0 {
		highest = bestSumLogprobs / math.Pow(float64(h.maxLength-promptLen), h.lengthPenalty)
	} else {
		highest = bestSumLogprobs / math.Pow(float64(curLen-promptLen), h.lengthPenalty)
	}
	return h.worst >= highest
}

// beamScorer runs beam search for a batch of prompts.
type beamScorer struct {
	p         *plan
	batch     int
	hyps      []*hypotheses
	finished  []bool
	promptLen int
}

func newBeamScorer(p *plan, batch int) *beamScorer {
	b := &beamScorer{p: p, batch: batch, finished: make([]bool, batch), promptLen: p.promptLen}
	for i := 0; i < batch; i++ {
		b.hyps = append(b.hyps, newHypotheses(p))
	}
	return b
}

func (b *beamScorer) allDone() bool {
	for _, d := range b.finished {
		if !d {
			return false
		}
	}
	return true
}

// step turns one step's candidates into the next beams. For prompt i,
// candScores/candTokens/candBeams[i] hold its candidates in descending
// score order: a summed log-probability, a token, and the beam (0..K-1)
// it extends. seqs are the current rows (prompt i's beams at rows
// i·K..i·K+K-1). It returns, per row of the next step, the row it
// continues, the token it appends and its score.
func (b *beamScorer) step(seqs [][]int64, candScores [][]float32, candTokens, candBeams [][]int64) (rows, tokens []int64, scores []float32, err error) {
	K := b.p.numBeams
	curLen := len(seqs[0]) + 1 // the length the candidates' scores are for
	rows = make([]int64, b.batch*K)
	tokens = make([]int64, b.batch*K)
	scores = make([]float32, b.batch*K)
	for i := 0; i < b.batch; i++ {
		if b.finished[i] {
			if len(b.p.eos) == 0 || !b.p.hasPad {
				return nil, nil, nil, fmt.Errorf("generate: beam search: finished prompts need eos_token_id and pad_token_id")
			}
			for j := 0; j < K; j++ {
				rows[i*K+j], tokens[i*K+j], scores[i*K+j] = int64(i*K), b.p.pad, 0
			}
			continue
		}
		n := 0
		for rank := range candTokens[i] {
			tok, sc, beam := candTokens[i][rank], candScores[i][rank], candBeams[i][rank]
			row := int64(i*K) + beam
			if b.p.eos.Contains(tok) {
				if rank >= K { // not among the K best candidates
					continue
				}
				b.hyps[i].add(seqs[row], float64(sc), curLen-b.promptLen)
			} else {
				rows[i*K+n], tokens[i*K+n], scores[i*K+n] = row, tok, sc
				n++
			}
			if n == K {
				break
			}
		}
		if n < K {
			return nil, nil, nil, fmt.Errorf("generate: beam search: prompt %d has fewer than %d non-eos candidates", i, K)
		}
		best := float64(candScores[i][0])
		for _, v := range candScores[i] {
			best = math.Max(best, float64(v))
		}
		b.finished[i] = b.finished[i] || b.hyps[i].done(best, curLen, b.promptLen)
	}
	return rows, tokens, scores, nil
}

// finalize adds the running beams of unfinished prompts and returns the
// NumReturnSequences best sequences per prompt (best first), each padded
// with pad_token_id to a common length, with the first eos token appended
// to the sequences that ended on one when it fits (HF's finalize), and
// their scores.
func (b *beamScorer) finalize(seqs [][]int64, beamScores []float32) ([][]int64, []float32, error) {
	K, R := b.p.numBeams, b.p.numReturnSequences
	for i := 0; i < b.batch; i++ {
		if b.finished[i] {
			continue
		}
		for j := 0; j < K; j++ {
			row := i*K + j
			b.hyps[i].add(seqs[row], float64(beamScores[row]), len(seqs[row])-b.promptLen)
		}
	}
	var best [][]int64
	var bestScores []float32
	for i := 0; i < b.batch; i++ {
		// ascending, then taken from the end: HF's sorted(...) and pop()
		hs := append([]hypothesis(nil), b.hyps[i].beams...)
		sort.SliceStable(hs, func(a, c int) bool { return hs[a].score < hs[c].score })
		for j := 0; j < R && j < len(hs); j++ {
			h := hs[len(hs)-1-j]
			best = append(best, h.seq)
			bestScores = append(bestScores, float32(h.score))
		}
	}
	longest, shortest := 0, math.MaxInt
	for _, s := range best {
		longest, shortest = max(longest, len(s)), min(shortest, len(s))
	}
	width := min(longest+1, b.p.maxLength)
	if shortest != longest && !b.p.hasPad {
		return nil, nil, fmt.Errorf("generate: beam search: sequences of different lengths need pad_token_id")
	}
	out := make([][]int64, len(best))
	for i, s := range best {
		row := make([]int64, width)
		for j := range row {
			row[j] = b.p.pad
		}
		copy(row, s)
		if len(s) < width && len(b.p.eos) > 0 {
			row[len(s)] = b.p.eos[0]
		}
		out[i] = row
	}
	return out, bestScores, nil
}
