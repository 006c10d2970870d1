package generate

import (
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/gopeft/peft/tensor"
)

// Decoder is the token choice of one sequence, step by step, for callers
// that run the model themselves (a continuous-batching server such as
// package engine): cfg's processors and warpers over the sequence so far,
// then greedy argmax or sampling with the sequence's own generator (seeded
// as Generate seeds a prompt, see GenerationConfig.Seed). Fed the logits a
// lone Generate call computes, it picks the tokens that call picks.
//
// A Decoder is not safe for concurrent use (one per sequence).
type Decoder struct {
	p     *plan
	procs []processor
	rng   *rand.Rand
	seq   []int64 // prompt and generated tokens
	steps int
}

// NewDecoder starts decoding after prompt with cfg (greedy decoding or
// sampling: beam search and several return sequences are refused). seed
// overrides cfg.Seed when not nil.
func NewDecoder(cfg GenerationConfig, prompt []int64, seed *int64) (*Decoder, error) {
	if len(prompt) == 0 {
		return nil, errors.New("generate: no prompt tokens")
	}
	p, err := cfg.resolve(len(prompt))
	if err != nil {
		return nil, err
	}
	switch {
	case p.numBeams > 1:
		return nil, fmt.Errorf("generate: a decoder runs greedy decoding or sampling, not %s (num_beams %d)", p.mode, p.numBeams)
	case p.numReturnSequences > 1:
		return nil, fmt.Errorf("generate: a decoder runs one sequence, not num_return_sequences=%d", p.numReturnSequences)
	}
	if seed == nil {
		seed = cfg.Seed
	}
	d := &Decoder{p: p, procs: p.processors(), seq: append([]int64(nil), prompt...)}
	if p.mode == sample {
		d.rng = newRNG(seed, 0)
	}
	return d, nil
}

// MaxNewTokens is how many tokens the sequence may generate
// (max_new_tokens, or max_length minus the prompt).
func (d *Decoder) MaxNewTokens() int { return d.p.maxLength - d.p.promptLen }

// IsEOS reports whether tok is one of the config's eos tokens.
func (d *Decoder) IsEOS(tok int64) bool { return d.p.eos.Contains(tok) }

// Generated is the tokens chosen so far.
func (d *Decoder) Generated() []int64 { return d.seq[d.p.promptLen:] }

// Next chooses the next token from logits, the model's scores at the
// sequence's last position ([vocab] or [1, vocab], any float dtype), and
// appends it to the sequence.
func (d *Decoder) Next(s *tensor.Scope, logits *tensor.T) (int64, error) {
	if s.Err() != nil {
		return 0, s.Err()
	}
	scores := logits
	if scores.Dim() == 1 {
		scores = s.Unsqueeze(scores, 0)
	}
	if scores.Dim() != 2 || scores.Size(0) != 1 {
		return 0, fmt.Errorf("generate: decoder: logits of shape %v, want [vocab] or [1, vocab]", logits.Shape())
	}
	if scores.DType() != tensor.Float32 {
		scores = s.To(scores, tensor.Float32)
	}
	seqs := [][]int64{d.seq}
	for _, pr := range d.procs {
		scores = pr.process(s, seqs, scores)
	}
	var tok int64
	if d.p.mode == greedy {
		ids := s.Int64s(s.Argmax(scores, -1))
		if len(ids) == 1 {
			tok = ids[0]
		}
	} else if probs := s.Float32s(s.Softmax(scores, -1, tensor.Float32)); probs != nil {
		i, err := sampleOne(d.rng, probs)
		if err != nil {
			return 0, fmt.Errorf("generate: %w", err)
		}
		tok = int64(i)
	}
	if err := s.Err(); err != nil {
		return 0, fmt.Errorf("generate: step %d: %w", d.steps, err)
	}
	d.seq = append(d.seq, tok)
	d.steps++
	return tok, nil
}
