package data

import (
	"errors"
	"fmt"

	"github.com/gopeft/peft/models"
)

// Strategy is how a multi-turn conversation becomes training samples (the
// two ways of the seed notes).
type Strategy int

const (
	// AllTurns makes one sample per conversation, Q1A1Q2A2Q3A3, with the
	// loss on every answer.
	AllTurns Strategy = iota
	// PerTurn makes one sample per answer: Q1A1, Q1A1Q2A2, Q1A1Q2A2Q3A3,
	// each with the loss on its last answer only.
	PerTurn
)

// Truncation is what happens to a sample longer than MaxLength.
type Truncation int

const (
	// KeepAnswer drops the oldest exchanges of a conversation first (for
	// PerTurn, the earliest history), then shortens the remaining prompt
	// in the middle (keeping its head: BOS, system, the start of the
	// request; and its tail: the end of the request and the assistant
	// header). The answer keeps at least half of MaxLength (all of it if
	// it fits); an answer longer than that loses its end.
	KeepAnswer Truncation = iota
	// TruncateRight cuts the sample's tail, as a tokenizer's truncation
	// does; a sample whose prompt fills MaxLength has nothing left to learn
	// and is skipped.
	TruncateRight
)

// Options controls how records become samples.
type Options struct {
	// Template is the chat format (TemplateByName, a GoTemplate, a
	// ChatTemplate); nil means alpaca.
	Template Template
	// System is the system prompt of records that have none ("" keeps the
	// template's default).
	System string
	// MaxLength caps a sample's tokens (0: no cap); see Truncation.
	MaxLength  int
	Truncation Truncation
	MultiTurn  Strategy
	// Packing concatenates consecutive samples into blocks of at most
	// MaxLength tokens (fewer, shorter rows: less padding). Samples in a
	// block attend to each other and positions run on across them; labels
	// keep every sample's prompt masked.
	Packing bool
	// SkipInvalid skips records that are malformed or have nothing to
	// learn, counting them in Stats, instead of failing the build.
	SkipInvalid bool
}

// Sample is one training sequence: input_ids, labels (-100 where the loss
// does not look: prompts, and padding once collated) and attention_mask
// (all ones before padding).
type Sample struct {
	InputIDs      []int64
	Labels        []int64
	AttentionMask []int64
	// Source is the record the sample came from (the first one, packed).
	Source string
	// TaskID is the sample's task for methods that condition on one
	// (multitask prompt tuning: PEFT's task_ids column); nil: none. A
	// collated batch has task ids when every sample has one.
	TaskID *int64
}

// Targets is the number of positions the shifted causal-LM loss counts
// (labels[1:] that are not -100).
func (s *Sample) Targets() int {
	n := 0
	for i := 1; i < len(s.Labels); i++ {
		if s.Labels[i] != models.IgnoreIndex {
			n++
		}
	}
	return n
}

// Stats summarises a build.
type Stats struct {
	Records   int // records read
	Samples   int // samples made (before packing)
	Truncated int // samples shortened to MaxLength
	Skipped   int // records (or, PerTurn, turns) left out
	// SkipReasons counts skips by reason.
	SkipReasons map[string]int
	// Errors holds the first skipped records' errors (up to 10).
	Errors []error
}

// Dataset is a list of tokenized samples ready for collation.
type Dataset struct {
	Samples []Sample
	// PadID pads batches (see SpecialTokens.PadID).
	PadID int64
	Stats Stats
}

// Len is the number of samples.
func (d *Dataset) Len() int { return len(d.Samples) }

// Tokens is the total number of tokens over all samples.
func (d *Dataset) Tokens() int {
	n := 0
	for _, s := range d.Samples {
		n += len(s.InputIDs)
	}
	return n
}

// RecordError is a problem with one record, named by its source position.
type RecordError struct {
	Source string
	Err    error
}

func (e *RecordError) Error() string {
	if e.Source == "" {
		return "data: " + e.Err.Error()
	}
	return "data: " + e.Source + ": " + e.Err.Error()
}

func (e *RecordError) Unwrap() error { return e.Err }

// ErrNothingToLearn is the reason for a sample without a single target
// token (after truncation, or an empty answer).
var ErrNothingToLearn = errors.New("nothing left to learn: no answer token within max_length")

// Instructions builds a dataset from alpaca records: input_ids = prompt +
// answer + EOS (as the template lays them out), labels = -100 over the
// prompt, then the answer and EOS.
func Instructions(tok Tokenizer, recs []Instruction, opts Options) (*Dataset, error) {
	convs := make([]Conversation, len(recs))
	for i := range recs {
		convs[i] = recs[i].Conversation()
	}
	return Conversations(tok, convs, opts)
}

// Conversations builds a dataset from dialogues (see Strategy). User and
// system text is masked; every answer the strategy trains on, with its
// end-of-turn token, is in the labels.
func Conversations(tok Tokenizer, convs []Conversation, opts Options) (*Dataset, error) {
	if opts.Template == nil {
		opts.Template = alpacaTemplate{}
	}
	if opts.MaxLength < 0 {
		return nil, fmt.Errorf("data: MaxLength %d is negative", opts.MaxLength)
	}
	if opts.Packing && opts.MaxLength == 0 {
		return nil, errors.New("data: Packing needs MaxLength (the block size)")
	}
	ds := &Dataset{PadID: tok.SpecialTokens().PadID(), Stats: Stats{Records: len(convs), SkipReasons: map[string]int{}}}
	var bad []error
	skip := func(src string, reason string, err error) {
		re := &RecordError{Source: src, Err: err}
		bad = append(bad, re)
		ds.Stats.Skipped++
		ds.Stats.SkipReasons[reason]++
		if len(ds.Stats.Errors) < 10 {
			ds.Stats.Errors = append(ds.Stats.Errors, re)
		}
	}
	for i := range convs {
		c := convs[i]
		if c.System == "" {
			c.System = opts.System
		}
		if c.err == nil && len(c.Turns) == 0 {
			c.err = errors.New("empty conversation")
		}
		if c.err != nil {
			skip(c.Source, "invalid record", c.err)
			continue
		}
		last := []int{-1}
		if opts.MultiTurn == PerTurn {
			last = last[:0]
			for k := range c.Turns {
				last = append(last, k)
			}
		}
		for _, k := range last {
			turns, train := c.Turns, -1
			if k >= 0 {
				turns, train = c.Turns[:k+1], k
			}
			smp, truncated, err := encode(tok, opts, c.System, turns, train)
			switch {
			case errors.Is(err, ErrNothingToLearn):
				skip(c.Source, "nothing to learn", err)
				continue
			case err != nil:
				return nil, &RecordError{Source: c.Source, Err: err}
			}
			if truncated {
				ds.Stats.Truncated++
			}
			smp.Source = c.Source
			ds.Samples = append(ds.Samples, smp)
		}
	}
	ds.Stats.Samples = len(ds.Samples)
	if len(bad) > 0 && !opts.SkipInvalid {
		shown := bad
		if len(shown) > 10 {
			shown = shown[:10]
		}
		return nil, fmt.Errorf("%w\ndata: %d of %d records are invalid or have nothing to learn (Options.SkipInvalid skips and counts them)",
			errors.Join(shown...), len(bad), len(convs))
	}
	if opts.Packing {
		ds.Samples = Pack(ds.Samples, opts.MaxLength)
	}
	return ds, nil
}

// encode renders and tokenizes one sample: the system prompt and turns,
// training on turn train's answer (every answer when train < 0), fitted
// to opts.MaxLength.
func encode(tok Tokenizer, opts Options, system string, turns []Turn, train int) (Sample, bool, error) {
	truncated := false
	for {
		ids, labels, err := tokenize(tok, opts.Template, &Conversation{System: system, Turns: turns}, train)
		if err != nil {
			return Sample{}, false, err
		}
		max := opts.MaxLength
		if max > 0 && len(ids) > max {
			truncated = true
			if opts.Truncation == KeepAnswer && len(turns) > 1 {
				turns = turns[1:] // drop the oldest exchange
				if train > 0 {
					train--
				}
				continue
			}
			if opts.Truncation == KeepAnswer {
				ids, labels = keepAnswer(ids, labels, max)
			} else {
				ids, labels = ids[:max], labels[:max]
			}
		}
		s := Sample{InputIDs: ids, Labels: labels, AttentionMask: ones(len(ids))}
		if s.Targets() == 0 {
			return Sample{}, false, ErrNothingToLearn
		}
		return s, truncated, nil
	}
}

// keepAnswer fits one exchange into max tokens: the answer (from the first
// label that is not -100) keeps max − min(len(prompt), max/2) tokens or
// all it has, cut at its end; the prompt keeps the rest, half from its
// head and half from its tail (the odd token to the head).
func keepAnswer(ids, labels []int64, max int) ([]int64, []int64) {
	split := len(labels)
	for i, l := range labels {
		if l != models.IgnoreIndex {
			split = i
			break
		}
	}
	p, a := split, len(ids)-split
	keepA := min(a, max-min(p, max/2))
	keepP := max - keepA
	head := (keepP + 1) / 2
	tail := keepP - head
	cut := func(x []int64) []int64 {
		out := make([]int64, 0, max)
		out = append(out, x[:head]...)
		out = append(out, x[split-tail:split]...)
		return append(out, x[split:split+keepA]...)
	}
	return cut(ids), cut(labels)
}

// tokenize renders c and encodes its segments one by one.
func tokenize(tok Tokenizer, tmpl Template, c *Conversation, train int) (ids, labels []int64, err error) {
	segs, err := tmpl.Render(c)
	if err != nil {
		return nil, nil, err
	}
	sp := tok.SpecialTokens()
	for _, sg := range segs {
		var part []int
		switch sg.Special {
		case BOS:
			if sp.BOS >= 0 {
				part = []int{sp.BOS}
			}
		case EOS:
			if sp.EOS < 0 {
				return nil, nil, errors.New("the template ends answers with EOS, and the tokenizer has no EOS token")
			}
			part = []int{sp.EOS}
		default:
			if sg.Text == "" {
				continue
			}
			part, err = tok.Encode(sg.Text, false)
			if err != nil {
				return nil, nil, fmt.Errorf("tokenize: %w", err)
			}
		}
		learn := sg.Answer && (train < 0 || sg.Turn == train)
		for _, id := range part {
			ids = append(ids, int64(id))
			if learn {
				labels = append(labels, int64(id))
			} else {
				labels = append(labels, models.IgnoreIndex)
			}
		}
	}
	return ids, labels, nil
}

func ones(n int) []int64 {
	m := make([]int64, n)
	for i := range m {
		m[i] = 1
	}
	return m
}

// Prompt renders and tokenizes a conversation for generation: every turn
// in full except the last one's answer, so the ids end where the model's
// reply starts (with the assistant header). The last turn's Assistant is
// ignored.
func Prompt(tok Tokenizer, tmpl Template, c Conversation) ([]int64, error) {
	if tmpl == nil {
		tmpl = alpacaTemplate{}
	}
	if len(c.Turns) == 0 {
		return nil, errors.New("data: prompt: no turns")
	}
	last := len(c.Turns) - 1
	segs, err := tmpl.Render(&c)
	if err != nil {
		return nil, err
	}
	var keep []Segment
	for _, sg := range segs {
		if sg.Turn == last && sg.Answer {
			continue
		}
		keep = append(keep, sg)
	}
	ids, _, err := tokenize(tok, fixed(keep), &c, -1)
	return ids, err
}

// fixed is a Template that returns given segments.
type fixed []Segment

func (f fixed) Render(*Conversation) ([]Segment, error) { return f, nil }

// Pack concatenates consecutive samples into blocks of at most max tokens,
// in order (a sample that does not fit in the current block starts the
// next). Labels, masks and sources are carried along; a block keeps a
// task id when all its samples have the same one.
func Pack(samples []Sample, max int) []Sample {
	var out []Sample
	var cur Sample
	flush := func() {
		if len(cur.InputIDs) > 0 {
			out = append(out, cur)
		}
		cur = Sample{}
	}
	for _, s := range samples {
		if len(cur.InputIDs) > 0 && len(cur.InputIDs)+len(s.InputIDs) > max {
			flush()
		}
		if len(cur.InputIDs) == 0 {
			cur.Source, cur.TaskID = s.Source, s.TaskID
		} else if cur.TaskID != nil && (s.TaskID == nil || *s.TaskID != *cur.TaskID) {
			cur.TaskID = nil // samples of different tasks: the block has none
		}
		cur.InputIDs = append(cur.InputIDs, s.InputIDs...)
		cur.Labels = append(cur.Labels, s.Labels...)
		cur.AttentionMask = append(cur.AttentionMask, s.AttentionMask...)
	}
	flush()
	return out
}
