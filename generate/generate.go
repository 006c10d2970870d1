package generate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/tensor"
)

// Model is what generation runs: the library's internal forward pass, which
// every model has — base models (llama.Model, bloom.Model, …), merged
// models, and peft.Model with any adapter (LoRA merged or not, IA3,
// bottleneck adapters, prompt tuning, P-tuning, prefix tuning). RowAdapters
// makes a peft.Model run a different LoRA adapter on each prompt.
type Model interface {
	ForwardT(s *tensor.Scope, b *models.Batch) *models.Output
}

// Input is a batch of prompts of equal length S, left-padded as HF's
// decoder-only generate expects: AttentionMask is 0 on the padding at the
// start of a row and 1 on its tokens (nil: no padding). LeftPad builds one
// from prompts of different lengths.
//
// PositionIDs, when set, are the prompt's position ids (one row per
// prompt, as InputIDs): the prompt runs at them and each row's generated
// tokens continue from its last position + 1. nil: HF generate's
// cumsum(mask) - 1.
//
// Seeds, when set, holds one sampling seed per prompt (see
// GenerationConfig.Seed): prompt i samples with Seeds[i] whatever else is
// in the batch. nil: every prompt uses the config's Seed.
type Input struct {
	InputIDs      [][]int64
	AttentionMask [][]int64
	PositionIDs   [][]int64
	Seeds         []int64
	// TaskIDs, when set, is each prompt's task (PEFT's generate(...,
	// task_ids=...)), for methods that condition on it: multitask prompt
	// tuning. One per prompt; every returned sequence or beam of a prompt
	// has its task.
	TaskIDs []int64
}

// LeftPad pads prompts on the left with padID to the longest one's length.
func LeftPad(prompts [][]int64, padID int64) Input {
	width := 0
	for _, p := range prompts {
		width = max(width, len(p))
	}
	in := Input{InputIDs: make([][]int64, len(prompts)), AttentionMask: make([][]int64, len(prompts))}
	for i, p := range prompts {
		ids, mask := make([]int64, width), make([]int64, width)
		off := width - len(p)
		for j := range ids {
			if j < off {
				ids[j] = padID
			} else {
				ids[j], mask[j] = p[j-off], 1
			}
		}
		in.InputIDs[i], in.AttentionMask[i] = ids, mask
	}
	return in
}

// Step is what a streaming call delivers after each decoding step.
type Step struct {
	// Index counts steps from 0 (the first generated token).
	Index int
	// Tokens holds each row's new token (pad_token_id for rows that had
	// finished before this step). Rows are prompts × NumReturnSequences.
	Tokens []int64
	// Finished marks the rows that have produced an eos token, this step
	// included.
	Finished []bool
}

// Output is what generation returns, in HF's form.
type Output struct {
	// Sequences are the prompts with their continuations, [B·K][S+N]
	// (K = NumReturnSequences): the prompt's rows in order, each repeated K
	// times, padded with pad_token_id after an eos token. N is the number
	// of steps run: MaxNewTokens, or fewer when every row finished early.
	Sequences [][]int64
	// Scores, with OutputScores, are the processed scores each step chose
	// from, row-major [rows, N, vocab] (ScoresShape): the logits after the
	// processors (and, when sampling, the warpers); with beams, the
	// log-softmax after the processors of every beam row (rows = B·NumBeams).
	Scores      []float32
	ScoresShape [3]int
	// SequenceScores are beam search's final scores of the returned
	// sequences: summed log-probability / generated length^length_penalty.
	SequenceScores []float32
	// PromptLen is S, where the generated tokens start.
	PromptLen int

	eos TokenIDs
}

// NewTokens is row i's generated tokens, up to and including its first
// eos token (without the padding after it).
func (o *Output) NewTokens(i int) []int64 {
	row := o.Sequences[i][o.PromptLen:]
	for j, t := range row {
		if o.eos.Contains(t) {
			return append([]int64(nil), row[:j+1]...)
		}
	}
	return append([]int64(nil), row...)
}

// ScoresAt is the processed scores of row at step (with OutputScores).
func (o *Output) ScoresAt(row, step int) []float32 {
	v := o.ScoresShape[2]
	at := (row*o.ScoresShape[1] + step) * v
	return o.Scores[at : at+v]
}

// Generate continues every prompt of in with m, as HF's model.generate
// does with cfg: greedy decoding, sampling, beam search or beam sampling
// (see GenerationConfig), with the KV cache, generate()'s position ids
// (cumsum(mask)-1, padding at 1), and each row stopping at an eos token.
// Generation runs without autograd and frees each step's tensors.
// Cancelling ctx stops it between two steps.
func Generate(ctx context.Context, m Model, in Input, cfg GenerationConfig) (*Output, error) {
	return run(ctx, m, in, cfg, nil)
}

// Stream is Generate that calls fn after every step with the tokens just
// produced, for services that send tokens as they come. An error from fn
// stops generation and is returned. Beam search cannot stream (its beams
// change their past), as in HF.
func Stream(ctx context.Context, m Model, in Input, cfg GenerationConfig, fn func(Step) error) (*Output, error) {
	if fn == nil {
		return nil, errors.New("generate: Stream needs a callback")
	}
	return run(ctx, m, in, cfg, fn)
}

// StreamChan runs Stream in a new goroutine and delivers the steps on a
// channel, closed when generation ends; wait then returns its result. A
// consumer that stops reading early must cancel ctx.
func StreamChan(ctx context.Context, m Model, in Input, cfg GenerationConfig) (steps <-chan Step, wait func() (*Output, error)) {
	ch := make(chan Step)
	type result struct {
		out *Output
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer close(ch)
		out, err := Stream(ctx, m, in, cfg, func(st Step) error {
			select {
			case ch <- st:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		done <- result{out, err}
	}()
	var res *result
	return ch, func() (*Output, error) {
		if res == nil {
			for range ch { // drain what the caller did not read
			}
			r := <-done
			res = &r
		}
		return res.out, res.err
	}
}

// runner holds one generation call's state.
type runner struct {
	m      Model
	p      *plan
	procs  []processor
	batch  int // prompts
	rows   int // prompts × expansion
	seqs   [][]int64
	mask   [][]int64 // the prompt rows' masks (expanded)
	padded bool
	pos    []int64   // per row, the position of the next token
	prompt [][]int64 // the prompt rows' position ids when the input gave them (expanded)
	tasks  []int64   // per row, its task id when the input gave them (expanded)
	cache  *models.Cache
	steps  int
	vocab  int64
	scores [][]float32  // per row, every step's scores
	rngs   []*rand.Rand // sampling: per row (decode) or per prompt (beams)
}

func run(ctx context.Context, m Model, in Input, cfg GenerationConfig, fn func(Step) error) (*Output, error) {
	if m == nil {
		return nil, errors.New("generate: no model")
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if err := in.check(); err != nil {
		return nil, err
	}
	p, err := cfg.resolve(len(in.InputIDs[0]))
	if err != nil {
		return nil, err
	}
	if fn != nil && p.numBeams > 1 {
		return nil, fmt.Errorf("generate: streaming is not available for %s (beams rewrite their past)", p.mode)
	}
	r := newRunner(m, p, in)
	s := tensor.NoGradScope()
	defer s.Close()
	if h, ok := m.(holder); ok { // the model cannot change during the generation
		defer h.Hold(s)()
	}
	s.SetDevice(models.DeviceOf(m))   // ids and processor tensors beside the model
	defer func() { r.cache.Free() }() // the cache the run ends with
	var out *Output
	switch p.mode {
	case greedy, sample:
		out, err = r.decode(ctx, s, fn)
	default:
		out, err = r.beams(ctx, s)
	}
	if err != nil {
		return nil, err
	}
	out.PromptLen, out.eos = p.promptLen, p.eos
	if p.outputScores {
		out.ScoresShape = [3]int{r.rows, r.steps, int(r.vocab)}
		out.Scores = make([]float32, 0, r.rows*r.steps*int(r.vocab))
		for _, row := range r.scores {
			out.Scores = append(out.Scores, row...)
		}
	}
	return out, nil
}

// check validates the prompts: a rectangular batch, 0/1 masks, left padding
// only, no empty row.
func (in Input) check() error {
	if len(in.InputIDs) == 0 || len(in.InputIDs[0]) == 0 {
		return errors.New("generate: no prompt tokens")
	}
	S := len(in.InputIDs[0])
	for i, row := range in.InputIDs {
		if len(row) != S {
			return fmt.Errorf("generate: prompt %d has %d tokens, prompt 0 has %d: pad them to one length (LeftPad)", i, len(row), S)
		}
	}
	if in.Seeds != nil && len(in.Seeds) != len(in.InputIDs) {
		return fmt.Errorf("generate: %d seeds for %d prompts (want one per prompt)", len(in.Seeds), len(in.InputIDs))
	}
	if in.PositionIDs != nil {
		if len(in.PositionIDs) != len(in.InputIDs) {
			return fmt.Errorf("generate: %d position id rows for %d prompts", len(in.PositionIDs), len(in.InputIDs))
		}
		for i, row := range in.PositionIDs {
			if len(row) != S {
				return fmt.Errorf("generate: position id row %d has %d entries, want %d", i, len(row), S)
			}
			for j, v := range row {
				if v < 0 {
					return fmt.Errorf("generate: position id [%d][%d] = %d is negative", i, j, v)
				}
			}
		}
	}
	if in.TaskIDs != nil {
		if len(in.TaskIDs) != len(in.InputIDs) {
			return fmt.Errorf("generate: %d task ids for %d prompts", len(in.TaskIDs), len(in.InputIDs))
		}
		for i, v := range in.TaskIDs {
			if v < 0 {
				return fmt.Errorf("generate: task id %d = %d is negative", i, v)
			}
		}
	}
	if in.AttentionMask == nil {
		return nil
	}
	if len(in.AttentionMask) != len(in.InputIDs) {
		return fmt.Errorf("generate: %d attention mask rows for %d prompts", len(in.AttentionMask), len(in.InputIDs))
	}
	for i, row := range in.AttentionMask {
		if len(row) != S {
			return fmt.Errorf("generate: attention mask row %d has %d entries, want %d", i, len(row), S)
		}
		seen := false
		for j, v := range row {
			switch {
			case v != 0 && v != 1:
				return fmt.Errorf("generate: attention mask [%d][%d] = %d, want 0 or 1", i, j, v)
			case v == 1:
				seen = true
			case seen:
				return fmt.Errorf("generate: prompt %d is right-padded (mask 0 at %d after a 1); decoder-only generation needs left padding", i, j)
			}
		}
		if !seen {
			return fmt.Errorf("generate: prompt %d is all padding", i)
		}
	}
	return nil
}

func newRunner(m Model, p *plan, in Input) *runner {
	k := p.expand()
	B := len(in.InputIDs)
	r := &runner{m: m, p: p, procs: p.processors(), batch: B, rows: B * k, cache: &models.Cache{}}
	for i := 0; i < B; i++ {
		var mask []int64
		if in.AttentionMask != nil {
			mask = in.AttentionMask[i]
		} else {
			mask = make([]int64, len(in.InputIDs[i]))
			for j := range mask {
				mask[j] = 1
			}
		}
		var ones int64
		for _, v := range mask {
			ones += v
			if v == 0 {
				r.padded = true
			}
		}
		next := ones
		if in.PositionIDs != nil { // explicit positions go through the padded path
			r.padded = true
			next = in.PositionIDs[i][len(in.PositionIDs[i])-1] + 1
		}
		for j := 0; j < k; j++ { // repeat_interleave
			r.seqs = append(r.seqs, append([]int64(nil), in.InputIDs[i]...))
			r.mask = append(r.mask, mask)
			r.pos = append(r.pos, next)
			if in.PositionIDs != nil {
				r.prompt = append(r.prompt, in.PositionIDs[i])
			}
			if in.TaskIDs != nil {
				r.tasks = append(r.tasks, in.TaskIDs[i])
			}
		}
	}
	if p.outputScores {
		r.scores = make([][]float32, r.rows)
	}
	switch p.mode {
	case sample:
		for i := 0; i < B; i++ {
			for j := 0; j < k; j++ {
				r.rngs = append(r.rngs, newRNG(in.promptSeed(i, p.seed), j))
			}
		}
	case beamSample:
		for i := 0; i < B; i++ {
			r.rngs = append(r.rngs, newRNG(in.promptSeed(i, p.seed), 0))
		}
	}
	return r
}

// forward runs the model on the next tokens (the whole prompt first) and
// returns the last position's logits, [rows, vocab] float32.
func (r *runner) forward(s *tensor.Scope) *tensor.T {
	rows := int64(r.rows)
	first := r.steps == 0
	var ids []int64
	L := 1
	if first {
		L = len(r.seqs[0])
		for _, row := range r.seqs {
			ids = append(ids, row...)
		}
	} else {
		for _, row := range r.seqs {
			ids = append(ids, row[len(row)-1])
		}
	}
	b := &models.Batch{InputIDs: s.FromInt64(ids, rows, int64(L)), PastKeyValues: r.cache, UseCache: true,
		LastLogitsOnly: true} // only the last position's scores are used
	if r.tasks != nil {
		b.TaskIDs = s.FromInt64(r.tasks, rows)
	}
	if r.padded {
		// HF passes the whole mask every step, and generate()'s positions:
		// cumsum(mask)-1 with padded slots at 1.
		width := len(r.seqs[0])
		mask := make([]int64, 0, r.rows*width)
		pos := make([]int64, 0, r.rows*L)
		for i := range r.seqs {
			mask = append(mask, r.mask[i]...)
			for j := len(r.mask[i]); j < width; j++ {
				mask = append(mask, 1)
			}
			if first && r.prompt != nil {
				pos = append(pos, r.prompt[i]...)
			} else if first {
				var c int64
				for _, v := range r.mask[i] {
					c += v
					if v == 0 {
						pos = append(pos, 1)
					} else {
						pos = append(pos, c-1)
					}
				}
			} else {
				pos = append(pos, r.pos[i])
				r.pos[i]++
			}
		}
		b.AttentionMask = s.FromInt64(mask, rows, int64(width))
		b.PositionIDs = s.FromInt64(pos, rows, int64(L))
	}
	// Without padding the mask is all ones and the positions are
	// past..past+L-1, which is what the models do with neither.
	out := r.m.ForwardT(s, b)
	if s.Err() != nil || out == nil || out.Logits == nil {
		if s.Err() == nil {
			s.Failf("generate: the model returned no logits")
		}
		return nil
	}
	if out.PastKeyValues != nil && out.PastKeyValues != r.cache && r.cache.Len() == 0 {
		r.cache = out.PastKeyValues // a model that made its own cache
	}
	if first && r.cache.Len() == 0 {
		return s.Failf("generate: the model returned no key/value cache (generation needs ForwardT to honour UseCache)")
	}
	lg := out.Logits
	if lg.Dim() != 3 || lg.Size(0) != rows {
		return s.Failf("generate: logits of shape %v for %d rows, want [rows, seq, vocab]", lg.Shape(), rows)
	}
	last := s.Select(lg, 1, lg.Size(1)-1)
	if last != nil && last.DType() != tensor.Float32 {
		last = s.To(last, tensor.Float32)
	}
	r.vocab = lg.Size(2)
	return last
}

// process runs the processors over one step's scores and records them.
func (r *runner) process(s *tensor.Scope, scores *tensor.T) *tensor.T {
	for _, pr := range r.procs {
		scores = pr.process(s, r.seqs, scores)
	}
	if r.p.outputScores && s.Err() == nil {
		v := s.Float32s(scores)
		V := int(r.vocab)
		for i := range r.scores {
			r.scores[i] = append(r.scores[i], v[i*V:(i+1)*V]...)
		}
	}
	return scores
}

// decode is greedy decoding and sampling (HF's _greedy_search, _sample).
func (r *runner) decode(ctx context.Context, s *tensor.Scope, fn func(Step) error) (*Output, error) {
	p := r.p
	finished := make([]bool, r.rows)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		logits := r.forward(s)
		scores := r.process(s, logits)
		var next []int64
		if p.mode == greedy {
			next = s.Int64s(s.Argmax(scores, -1))
		} else if probs := s.Float32s(s.Softmax(scores, -1, tensor.Float32)); probs != nil {
			next = make([]int64, r.rows)
			V := int(r.vocab)
			for i := range next {
				tok, err := sampleOne(r.rngs[i], probs[i*V:(i+1)*V])
				if err != nil {
					return nil, fmt.Errorf("generate: row %d: %w", i, err)
				}
				next[i] = int64(tok)
			}
		}
		if err := s.Err(); err != nil {
			return nil, fmt.Errorf("generate: step %d: %w", r.steps, err)
		}
		s.FreeAll()
		all := len(p.eos) > 0
		for i, t := range next {
			if finished[i] {
				next[i] = p.pad
			} else if p.eos.Contains(t) {
				finished[i] = true
			}
			all = all && finished[i]
			r.seqs[i] = append(r.seqs[i], next[i])
		}
		r.steps++
		if fn != nil {
			if err := fn(Step{Index: r.steps - 1, Tokens: next, Finished: append([]bool(nil), finished...)}); err != nil {
				return nil, err
			}
		}
		if all || len(r.seqs[0]) >= p.maxLength {
			return &Output{Sequences: r.seqs}, nil
		}
	}
}

// beams is beam search and beam sampling (HF's _beam_search, _beam_sample).
func (r *runner) beams(ctx context.Context, s *tensor.Scope) (*Output, error) {
	p := r.p
	K := p.numBeams
	beamScores := make([]float32, r.rows) // beam 0 of each prompt starts alone
	for i := range beamScores {
		if i%K != 0 {
			beamScores[i] = -1e9
		}
	}
	scorer := newBeamScorer(p, r.batch)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		logits := r.forward(s)
		scores := r.process(s, s.LogSoftmax(logits, -1, tensor.Float32))
		V := r.vocab
		total := s.Reshape(s.Add(scores, s.FromFloat32(beamScores, int64(r.rows), 1)), int64(r.batch), int64(K)*V)
		nCand := min(int64(max(2, 1+len(p.eos))*K), int64(K)*V)
		candScores := make([][]float32, r.batch)
		cand := make([][]int64, r.batch)
		if p.mode == beamSearch {
			vals, idx := s.Topk(total, nCand, 1, true, true)
			v, ix := s.Float32s(vals), s.Int64s(idx)
			for i := 0; i < r.batch; i++ {
				candScores[i], cand[i] = v[int64(i)*nCand:int64(i+1)*nCand], ix[int64(i)*nCand:int64(i+1)*nCand]
			}
		} else {
			probs, tot := s.Float32s(s.Softmax(total, -1, tensor.Float32)), s.Float32s(total)
			W := int64(K) * V
			for i := 0; i < r.batch; i++ {
				picks, err := sampleMany(r.rngs[i], probs[int64(i)*W:int64(i+1)*W], int(nCand))
				if err != nil {
					return nil, fmt.Errorf("generate: prompt %d: %w", i, err)
				}
				row := tot[int64(i)*W : int64(i+1)*W]
				sort.SliceStable(picks, func(a, b int) bool { return row[picks[a]] > row[picks[b]] })
				for _, j := range picks {
					cand[i] = append(cand[i], int64(j))
					candScores[i] = append(candScores[i], row[j])
				}
			}
		}
		if err := s.Err(); err != nil {
			return nil, fmt.Errorf("generate: step %d: %w", r.steps, err)
		}
		s.FreeAll()
		candTokens, candBeams := make([][]int64, r.batch), make([][]int64, r.batch)
		for i := range cand {
			for _, c := range cand[i] {
				candBeams[i] = append(candBeams[i], c/V)
				candTokens[i] = append(candTokens[i], c%V)
			}
		}
		from, tokens, next, err := scorer.step(r.seqs, candScores, candTokens, candBeams)
		if err != nil {
			return nil, err
		}
		beamScores = next
		seqs := make([][]int64, r.rows)
		pos := make([]int64, r.rows)
		for i, f := range from {
			seqs[i] = append(append(make([]int64, 0, len(r.seqs[f])+1), r.seqs[f]...), tokens[i])
			pos[i] = r.pos[f]
		}
		r.seqs, r.pos = seqs, pos
		r.steps++
		if err := reorderCache(s, r.cache, from); err != nil {
			return nil, err
		}
		if scorer.allDone() || len(r.seqs[0]) >= p.maxLength {
			seqs, seqScores, err := scorer.finalize(r.seqs, beamScores)
			if err != nil {
				return nil, err
			}
			return &Output{Sequences: seqs, SequenceScores: seqScores}, nil
		}
	}
}

// reorderCache makes row i of every cached key/value tensor a copy of row
// from[i] (HF's _reorder_cache), unless nothing moves.
func reorderCache(s *tensor.Scope, c *models.Cache, from []int64) error {
	identity := true
	for i, f := range from {
		identity = identity && f == int64(i)
	}
	if identity || c == nil {
		return nil
	}
	idx := s.FromInt64(from, int64(len(from)))
	for l := range c.Layers {
		kv := &c.Layers[l]
		if kv.K == nil {
			continue
		}
		k, v := s.Keep(s.IndexSelect(kv.K, 0, idx)), s.Keep(s.IndexSelect(kv.V, 0, idx))
		if err := s.Err(); err != nil {
			return fmt.Errorf("generate: reorder cache: %w", err)
		}
		kv.Set(k, v)
	}
	s.FreeAll()
	return nil
}
