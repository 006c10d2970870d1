package tokenizer

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Tokenizer encodes text to ids and decodes ids to text. It is immutable
// and safe for concurrent use; WithPadding and WithTruncation return
// adjusted copies that share the vocabulary.
type Tokenizer struct {
	model      model
	normalizer normalizer
	pre        preTokenizer
	post       *template // nil: no post-processor
	decoder    decoder
	added      *addedVocab
	truncation *Truncation
	padding    *Padding
	config     Config
}

// Side is where truncation cuts or padding goes.
type Side int

const (
	Right Side = iota
	Left
)

// Truncation limits the length of encoded sequences (HF's
// TruncationParams for single sequences; overflowing tokens are dropped).
type Truncation struct {
	MaxLength int
	Direction Side
}

// Padding pads encoded sequences (HF's PaddingParams).
type Padding struct {
	// Length pads to this fixed length; 0 pads to the longest sequence of
	// the batch.
	Length          int
	Direction       Side
	PadToMultipleOf int
	PadID           int
	PadTypeID       int
	PadToken        string
}

// Encoding is one encoded sequence.
type Encoding struct {
	IDs               []int
	TypeIDs           []int
	Tokens            []string
	AttentionMask     []int // 1 for tokens, 0 for padding
	SpecialTokensMask []int // 1 for tokens the post-processor or padding added
}

// template is a post-processor reduced to what it does to one sequence:
// tokens before and after it, and the type id it gives the sequence.
type template struct {
	prefix, suffix []tmplToken
	seqType        int32
	setType        bool // the sequence's type ids are set even without special tokens
}

type tmplToken struct {
	id, typeID int32
	token      string
}

func (t *template) added() int {
	if t == nil {
		return 0
	}
	return len(t.prefix) + len(t.suffix)
}

// scratch holds the per-call buffers; pooled so that encoding does not
// allocate in steady state.
type scratch struct {
	ids    []int32
	spans  []span
	pieces [][]piece
	sym    []int32
	ranks  []int32
	newIDs []int32
	prev   []int32
	next   []int32
	alive  []bool
	heap   []mergeItem
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func (sc *scratch) getPieces() []piece {
	if n := len(sc.pieces); n > 0 {
		p := sc.pieces[n-1]
		sc.pieces = sc.pieces[:n-1]
		return p[:0]
	}
	return make([]piece, 0, 16)
}

func (sc *scratch) putPieces(p []piece) { sc.pieces = append(sc.pieces, p[:0]) }

// encodeRaw runs everything before post-processing and leaves the ids in
// sc.ids.
func (t *Tokenizer) encodeRaw(text string, sc *scratch) error {
	sc.ids = sc.ids[:0]
	if !utf8.ValidString(text) {
		text = lossyUTF8([]byte(text))
	}
	return t.added.split(text, t.added.raw, func(start, end int, id int32) error {
		if id >= 0 {
			sc.ids = append(sc.ids, id)
			return nil
		}
		return t.encodeSegment(text[start:end], start == 0, sc)
	})
}

func (t *Tokenizer) encodeSegment(seg string, first bool, sc *scratch) error {
	if t.normalizer != nil {
		seg = t.normalizer.normalize(seg)
	}
	if t.added.norm.empty() {
		return t.preTokenizeAndModel(seg, first, sc)
	}
	return t.added.split(seg, t.added.norm, func(start, end int, id int32) error {
		if id >= 0 {
			sc.ids = append(sc.ids, id)
			return nil
		}
		return t.preTokenizeAndModel(seg[start:end], first && start == 0, sc)
	})
}

func (t *Tokenizer) preTokenizeAndModel(s string, first bool, sc *scratch) error {
	if s == "" {
		return nil
	}
	p := piece{s: s, first: first}
	if t.pre == nil {
		var err error
		sc.ids, err = t.model.tokenize(p, sc.ids, sc)
		return err
	}
	pieces := t.pre.split(p, sc.getPieces(), sc)
	var err error
	for _, q := range pieces {
		if q.s == "" {
			continue
		}
		if sc.ids, err = t.model.tokenize(q, sc.ids, sc); err != nil {
			break
		}
	}
	sc.putPieces(pieces)
	return err
}

// EncodeIDs encodes text and returns its ids: the same as Encode(...).IDs,
// without building the rest of the Encoding.
func (t *Tokenizer) EncodeIDs(text string, addSpecialTokens bool) ([]int, error) {
	if t.truncation != nil || t.padding != nil {
		e, err := t.Encode(text, addSpecialTokens)
		if err != nil {
			return nil, err
		}
		return e.IDs, nil
	}
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	if err := t.encodeRaw(text, sc); err != nil {
		return nil, err
	}
	n := len(sc.ids)
	if addSpecialTokens {
		n += t.post.added()
	}
	out := make([]int, 0, n)
	if addSpecialTokens && t.post != nil {
		for _, x := range t.post.prefix {
			out = append(out, int(x.id))
		}
	}
	for _, id := range sc.ids {
		out = append(out, int(id))
	}
	if addSpecialTokens && t.post != nil {
		for _, x := range t.post.suffix {
			out = append(out, int(x.id))
		}
	}
	return out, nil
}

// Encode encodes text: added tokens, normalizer, pre-tokenizer, model,
// then truncation, the post-processor (special tokens when
// addSpecialTokens) and padding, as configured.
func (t *Tokenizer) Encode(text string, addSpecialTokens bool) (*Encoding, error) {
	e, err := t.encodeOne(text, addSpecialTokens)
	if err != nil {
		return nil, err
	}
	if t.padding != nil {
		t.pad([]*Encoding{e})
	}
	return e, nil
}

func (t *Tokenizer) encodeOne(text string, addSpecialTokens bool) (*Encoding, error) {
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	if err := t.encodeRaw(text, sc); err != nil {
		return nil, err
	}
	ids := sc.ids
	if t.truncation != nil {
		max := t.truncation.MaxLength
		if addSpecialTokens {
			max -= t.post.added()
		}
		if max < 0 {
			return nil, fmt.Errorf("tokenizer: truncation max_length %d is shorter than the %d special tokens added", t.truncation.MaxLength, t.post.added())
		}
		if len(ids) > max {
			if t.truncation.Direction == Left {
				ids = ids[len(ids)-max:]
			} else {
				ids = ids[:max]
			}
		}
	}
	n := len(ids) + t.post.added()
	e := &Encoding{
		IDs:               make([]int, 0, n),
		TypeIDs:           make([]int, 0, n),
		Tokens:            make([]string, 0, n),
		AttentionMask:     make([]int, 0, n),
		SpecialTokensMask: make([]int, 0, n),
	}
	add := func(id, typeID int32, tok string, special int) {
		e.IDs = append(e.IDs, int(id))
		e.TypeIDs = append(e.TypeIDs, int(typeID))
		e.Tokens = append(e.Tokens, tok)
		e.AttentionMask = append(e.AttentionMask, 1)
		e.SpecialTokensMask = append(e.SpecialTokensMask, special)
	}
	seqType := int32(0)
	if t.post != nil && t.post.setType {
		seqType = t.post.seqType
	}
	if addSpecialTokens && t.post != nil {
		for _, x := range t.post.prefix {
			add(x.id, x.typeID, x.token, 1)
		}
	}
	for _, id := range ids {
		tok, _ := t.idToToken(id)
		add(id, seqType, tok, 0)
	}
	if addSpecialTokens && t.post != nil {
		for _, x := range t.post.suffix {
			add(x.id, x.typeID, x.token, 1)
		}
	}
	return e, nil
}

// EncodeBatch encodes texts in parallel, then pads them together when
// padding is configured.
func (t *Tokenizer) EncodeBatch(texts []string, addSpecialTokens bool) ([]*Encoding, error) {
	out := make([]*Encoding, len(texts))
	errs := make([]error, len(texts))
	workers := runtime.GOMAXPROCS(0)
	if workers > len(texts) {
		workers = len(texts)
	}
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(texts) {
					return
				}
				out[i], errs[i] = t.encodeOne(texts[i], addSpecialTokens)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if t.padding != nil {
		t.pad(out)
	}
	return out, nil
}

func (t *Tokenizer) pad(encs []*Encoding) {
	p := t.padding
	length := p.Length
	if length == 0 {
		for _, e := range encs {
			if len(e.IDs) > length {
				length = len(e.IDs)
			}
		}
	}
	if m := p.PadToMultipleOf; m > 0 && length%m != 0 {
		length += m - length%m
	}
	for _, e := range encs {
		n := length - len(e.IDs)
		if n <= 0 {
			continue
		}
		padInts := func(s []int, v int) []int {
			fill := make([]int, n)
			for i := range fill {
				fill[i] = v
			}
			if p.Direction == Left {
				return append(fill, s...)
			}
			return append(s, fill...)
		}
		toks := make([]string, n)
		for i := range toks {
			toks[i] = p.PadToken
		}
		e.IDs = padInts(e.IDs, p.PadID)
		e.TypeIDs = padInts(e.TypeIDs, p.PadTypeID)
		e.AttentionMask = padInts(e.AttentionMask, 0)
		e.SpecialTokensMask = padInts(e.SpecialTokensMask, 1)
		if p.Direction == Left {
			e.Tokens = append(toks, e.Tokens...)
		} else {
			e.Tokens = append(e.Tokens, toks...)
		}
	}
}

// WithTruncation returns a copy of t that truncates to tr (nil: no
// truncation).
func (t *Tokenizer) WithTruncation(tr *Truncation) *Tokenizer {
	c := *t
	if tr != nil {
		x := *tr
		tr = &x
	}
	c.truncation = tr
	return &c
}

// WithPadding returns a copy of t that pads as p says (nil: no padding).
func (t *Tokenizer) WithPadding(p *Padding) *Tokenizer {
	c := *t
	if p != nil {
		x := *p
		p = &x
	}
	c.padding = p
	return &c
}

// Truncation returns the truncation in effect, or nil.
func (t *Tokenizer) Truncation() *Truncation {
	if t.truncation == nil {
		return nil
	}
	x := *t.truncation
	return &x
}

// Padding returns the padding in effect, or nil.
func (t *Tokenizer) Padding() *Padding {
	if t.padding == nil {
		return nil
	}
	x := *t.padding
	return &x
}

func (t *Tokenizer) idToToken(id int32) (string, bool) {
	if tok, ok := t.added.byID[id]; ok {
		return tok.Content, true
	}
	return t.model.idToToken(id)
}

// IDToToken returns the token of id (added tokens included).
func (t *Tokenizer) IDToToken(id int) (string, bool) {
	if id < 0 || id > 1<<31-1 {
		return "", false
	}
	return t.idToToken(int32(id))
}

// TokenToID returns the id of a token (added tokens included).
func (t *Tokenizer) TokenToID(token string) (int, bool) {
	id, ok := t.added.tokenToID(token, t.model)
	return int(id), ok
}

// VocabSize is the size of the model's vocabulary, with the added tokens
// that are not in it when withAdded.
func (t *Tokenizer) VocabSize(withAdded bool) int {
	n := t.model.size()
	if withAdded {
		for _, id := range t.added.byContent {
			if _, ok := t.model.idToToken(id); !ok {
				n++
			}
		}
	}
	return n
}

// AddedTokens returns the added tokens, ordered by id.
func (t *Tokenizer) AddedTokens() []AddedToken {
	out := make([]AddedToken, 0, len(t.added.byID))
	for _, tok := range t.added.byID {
		out = append(out, tok)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].ID < out[j-1].ID; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// IsSpecial reports whether id is a special added token.
func (t *Tokenizer) IsSpecial(id int) bool {
	tok, ok := t.IDToToken(id)
	return ok && t.added.specialSet[tok]
}

// Config is what tokenizer_config.json says, when one was loaded.
func (t *Tokenizer) Config() Config { return t.config }

// Decode turns ids back into text. Unknown ids are skipped, as HF does;
// with skipSpecialTokens, so are special added tokens.
func (t *Tokenizer) Decode(ids []int, skipSpecialTokens bool) string {
	tokens := make([]string, 0, len(ids))
	for _, id := range ids {
		tok, ok := t.IDToToken(id)
		if !ok || (skipSpecialTokens && t.added.specialSet[tok]) {
			continue
		}
		tokens = append(tokens, tok)
	}
	if t.decoder == nil {
		return strings.Join(tokens, " ")
	}
	return strings.Join(t.decoder.decodeChain(tokens), "")
}

// DecodeStream decodes ids one at a time for streaming output: Step
// returns the text that the new id completes, holding back bytes of a
// character that is not complete yet.
type DecodeStream struct {
	t       *Tokenizer
	skip    bool
	ids     []int
	nPrefix int    // ids[:nPrefix] were already returned
	prefix  string // Decode(ids[:nPrefix])
}

// NewDecodeStream starts a streaming decode.
func (t *Tokenizer) NewDecodeStream(skipSpecialTokens bool) *DecodeStream {
	return &DecodeStream{t: t, skip: skipSpecialTokens}
}

// Step adds one id and returns the new text, or "" and false when the id
// does not complete any text yet.
func (d *DecodeStream) Step(id int) (string, bool) {
	d.ids = append(d.ids, id)
	s := d.t.Decode(d.ids, d.skip)
	if len(s) <= len(d.prefix) || strings.HasSuffix(s, "\uFFFD") {
		return "", false
	}
	var out string
	if strings.HasPrefix(s, d.prefix) {
		out = s[len(d.prefix):]
	} else {
		// The decoder changed earlier text (e.g. a stripped space);
		// return what follows the same number of bytes, on a rune
		// boundary.
		k := len(d.prefix)
		for k < len(s) && !utf8.RuneStart(s[k]) {
			k++
		}
		out = s[k:]
	}
	// Keep the ids just returned as context for the next step.
	d.ids = append(d.ids[:0], d.ids[d.nPrefix:]...)
	d.nPrefix = len(d.ids)
	d.prefix = d.t.Decode(d.ids, d.skip)
	return out, true
}
