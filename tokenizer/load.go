package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// FieldError is a problem with one field of a tokenizer file: malformed,
// missing, or asking for something this package does not implement.
type FieldError struct {
	File  string // "tokenizer.json", "tokenizer_config.json", "encoder.json", "vocab.bpe"
	Field string // a JSON path such as "model.merges[3]" or "pre_tokenizer.pretokenizers[0].type"
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return "tokenizer: " + e.File + ": " + e.Msg
	}
	return "tokenizer: " + e.File + ": " + e.Field + ": " + e.Msg
}

func ferr(field, format string, args ...any) error {
	return &FieldError{File: "tokenizer.json", Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Load reads a tokenizer from path: a tokenizer.json file (with the
// tokenizer_config.json beside it, when there is one), a folder holding
// them, or GPT-2's encoder.json (or its folder) with vocab.bpe beside it.
func Load(path string) (*Tokenizer, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	dir, file := filepath.Dir(path), filepath.Base(path)
	if st.IsDir() {
		dir, file = path, "tokenizer.json"
		if _, err := os.Stat(filepath.Join(dir, file)); err != nil {
			if _, err2 := os.Stat(filepath.Join(dir, "encoder.json")); err2 == nil {
				return LoadGPT2(filepath.Join(dir, "encoder.json"), filepath.Join(dir, "vocab.bpe"))
			}
			return nil, fmt.Errorf("tokenizer: %s has neither tokenizer.json nor encoder.json + vocab.bpe", path)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if file == "encoder.json" || (!bytes.Contains(data, []byte(`"model"`)) && looksLikeEncoderJSON(data)) {
		return gpt2FromBytes(data, filepath.Join(dir, "vocab.bpe"))
	}
	t, err := FromJSON(data)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "tokenizer_config.json")
	if cfg, err := os.ReadFile(cfgPath); err == nil {
		if t.config, err = parseConfig(cfg); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return t, nil
}

func looksLikeEncoderJSON(data []byte) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(data, &m) != nil {
		return false
	}
	_, ok := m["!"]
	return ok
}

// obj is a JSON object being read, with its path for error messages.
type obj struct {
	path string
	m    map[string]json.RawMessage
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// parseObj reads raw as an object; nil when raw is absent or null.
func parseObj(path string, raw json.RawMessage) (*obj, error) {
	if isNull(raw) {
		return nil, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, ferr(path, "want an object: %v", jsonMsg(err))
	}
	return &obj{path, m}, nil
}

func jsonMsg(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return "found a JSON " + te.Value
	}
	return err.Error()
}

func (o *obj) f(key string) string {
	if o.path == "" {
		return key
	}
	return o.path + "." + key
}

func (o *obj) has(key string) bool { return !isNull(o.m[key]) }

func (o *obj) decode(key string, v any) error {
	if err := json.Unmarshal(o.m[key], v); err != nil {
		return ferr(o.f(key), "%s", jsonMsg(err))
	}
	return nil
}

func (o *obj) str(key, def string) (string, error) {
	if !o.has(key) {
		return def, nil
	}
	var s string
	if err := json.Unmarshal(o.m[key], &s); err != nil {
		return "", ferr(o.f(key), "want a string: %s", jsonMsg(err))
	}
	return s, nil
}

func (o *obj) reqStr(key string) (string, error) {
	if !o.has(key) {
		return "", ferr(o.f(key), "missing")
	}
	return o.str(key, "")
}

func (o *obj) boolean(key string, def bool) (bool, error) {
	if !o.has(key) {
		return def, nil
	}
	var b bool
	if err := json.Unmarshal(o.m[key], &b); err != nil {
		return false, ferr(o.f(key), "want true or false: %s", jsonMsg(err))
	}
	return b, nil
}

func (o *obj) integer(key string, def int) (int, error) {
	if !o.has(key) {
		return def, nil
	}
	var f float64
	if err := json.Unmarshal(o.m[key], &f); err != nil || f != math.Trunc(f) || f < 0 || f > math.MaxInt32 {
		return 0, ferr(o.f(key), "want a non-negative integer, found %s", truncRaw(o.m[key]))
	}
	return int(f), nil
}

func (o *obj) typ() (string, error) { return o.reqStr("type") }

func truncRaw(raw json.RawMessage) string {
	s := string(bytes.TrimSpace(raw))
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return s
}

// list reads key as a JSON array of raw elements.
func (o *obj) list(key string) ([]json.RawMessage, error) {
	if !o.has(key) {
		return nil, ferr(o.f(key), "missing")
	}
	var l []json.RawMessage
	if err := json.Unmarshal(o.m[key], &l); err != nil {
		return nil, ferr(o.f(key), "want an array: %s", jsonMsg(err))
	}
	return l, nil
}

// FromJSON builds a tokenizer from the contents of a tokenizer.json.
func FromJSON(data []byte) (*Tokenizer, error) {
	top, err := parseObj("", data)
	if err != nil {
		return nil, &FieldError{File: "tokenizer.json", Msg: "not a JSON object: " + err.(*FieldError).Msg}
	}
	if top == nil {
		return nil, &FieldError{File: "tokenizer.json", Msg: "empty (null)"}
	}
	if v, err := top.str("version", "1.0"); err != nil {
		return nil, err
	} else if v != "1.0" {
		return nil, ferr("version", "unknown tokenizer version %q (want \"1.0\")", v)
	}
	t := &Tokenizer{}
	if !top.has("model") {
		return nil, ferr("model", "missing")
	}
	if t.model, err = parseModel(top); err != nil {
		return nil, err
	}
	if t.normalizer, err = parseNormalizer("normalizer", top.m["normalizer"]); err != nil {
		return nil, err
	}
	if t.pre, err = parsePreTokenizer("pre_tokenizer", top.m["pre_tokenizer"]); err != nil {
		return nil, err
	}
	if t.post, err = parsePostProcessor("post_processor", top.m["post_processor"]); err != nil {
		return nil, err
	}
	if t.decoder, err = parseDecoder("decoder", top.m["decoder"]); err != nil {
		return nil, err
	}
	if t.truncation, err = parseTruncation(top); err != nil {
		return nil, err
	}
	if t.padding, err = parsePadding(top); err != nil {
		return nil, err
	}
	t.added = newAddedVocab()
	if top.has("added_tokens") {
		list, err := top.list("added_tokens")
		if err != nil {
			return nil, err
		}
		for i, raw := range list {
			tok, err := parseAddedToken(fmt.Sprintf("added_tokens[%d]", i), raw)
			if err != nil {
				return nil, err
			}
			t.added.add(tok, t.model)
		}
	}
	t.added.build(t.model, t.normalizer)
	if err := t.checkTemplateIDs(); err != nil {
		return nil, err
	}
	if b, ok := t.model.(*bpeModel); ok && usesByteLevel(t.pre) {
		b.prepareByteLevel()
	}
	return t, nil
}

func (t *Tokenizer) checkTemplateIDs() error {
	if t.post == nil {
		return nil
	}
	for _, x := range append(append([]tmplToken(nil), t.post.prefix...), t.post.suffix...) {
		if x.id < 0 {
			return ferr("post_processor", "special token %q has a negative id", x.token)
		}
	}
	return nil
}

func usesByteLevel(p preTokenizer) bool {
	switch p := p.(type) {
	case *byteLevelPre:
		return true
	case seqPre:
		for _, x := range p {
			if usesByteLevel(x) {
				return true
			}
		}
	}
	return false
}

func parseAddedToken(path string, raw json.RawMessage) (AddedToken, error) {
	o, err := parseObj(path, raw)
	if err != nil {
		return AddedToken{}, err
	}
	if o == nil {
		return AddedToken{}, ferr(path, "null")
	}
	var tok AddedToken
	if tok.ID, err = o.integer("id", -1); err != nil {
		return tok, err
	}
	if tok.Content, err = o.reqStr("content"); err != nil {
		return tok, err
	}
	if tok.Special, err = o.boolean("special", false); err != nil {
		return tok, err
	}
	if tok.LStrip, err = o.boolean("lstrip", false); err != nil {
		return tok, err
	}
	if tok.RStrip, err = o.boolean("rstrip", false); err != nil {
		return tok, err
	}
	if tok.SingleWord, err = o.boolean("single_word", false); err != nil {
		return tok, err
	}
	if tok.Normalized, err = o.boolean("normalized", !tok.Special); err != nil {
		return tok, err
	}
	return tok, nil
}

// ---- model -------------------------------------------------------------

func parseModel(top *obj) (model, error) {
	o, err := parseObj("model", top.m["model"])
	if err != nil {
		return nil, err
	}
	typ, err := o.str("type", "")
	if err != nil {
		return nil, err
	}
	if typ == "" { // HF infers the type from the fields
		switch {
		case o.has("merges"):
			typ = "BPE"
		case o.has("max_input_chars_per_word"):
			typ = "WordPiece"
		default:
			typ = "WordLevel"
		}
	}
	switch typ {
	case "BPE":
		return parseBPE(o)
	case "WordPiece":
		v, err := parseVocab(o)
		if err != nil {
			return nil, err
		}
		m := &wordPieceModel{vocabulary: v}
		if m.unkTok, err = o.str("unk_token", "[UNK]"); err != nil {
			return nil, err
		}
		if m.prefix, err = o.str("continuing_subword_prefix", "##"); err != nil {
			return nil, err
		}
		if m.maxChars, err = o.integer("max_input_chars_per_word", 100); err != nil {
			return nil, err
		}
		return m, nil
	case "WordLevel":
		v, err := parseVocab(o)
		if err != nil {
			return nil, err
		}
		m := &wordLevelModel{vocabulary: v}
		if m.unkTok, err = o.str("unk_token", "<unk>"); err != nil {
			return nil, err
		}
		return m, nil
	case "Unigram":
		return nil, ferr("model.type", "Unigram models are not supported (supported: BPE, WordPiece, WordLevel)")
	}
	return nil, ferr("model.type", "unknown model type %q (supported: BPE, WordPiece, WordLevel)", typ)
}

func parseVocab(o *obj) (*vocabulary, error) {
	if !o.has("vocab") {
		return nil, ferr(o.f("vocab"), "missing")
	}
	var raw map[string]float64
	if err := json.Unmarshal(o.m["vocab"], &raw); err != nil {
		return nil, ferr(o.f("vocab"), "want an object of token -> id: %s", jsonMsg(err))
	}
	m := make(map[string]int32, len(raw))
	for tok, f := range raw {
		if f != math.Trunc(f) || f < 0 || f >= math.MaxInt32 {
			return nil, ferr(o.f("vocab"), "token %q has id %v, want a non-negative integer below 2^31-1", tok, f)
		}
		m[tok] = int32(f)
	}
	return newVocabulary(m), nil
}

func parseBPE(o *obj) (*bpeModel, error) {
	v, err := parseVocab(o)
	if err != nil {
		return nil, err
	}
	m := newBPE(v)
	if o.has("dropout") {
		var d float64
		if err := o.decode("dropout", &d); err != nil {
			return nil, err
		}
		if d < 0 || d > 1 {
			return nil, ferr(o.f("dropout"), "want a number in [0, 1], found %v", d)
		}
		// Dropout only applies to training-time sampling; encoding here
		// is deterministic, as HF's is with dropout unset.
	}
	unk, err := o.str("unk_token", "")
	if err != nil {
		return nil, err
	}
	m.unkTok = unk
	if id, ok := v.ids[unk]; ok && unk != "" {
		m.unk = id
	}
	if m.fuseUnk, err = o.boolean("fuse_unk", false); err != nil {
		return nil, err
	}
	if m.byteFallback, err = o.boolean("byte_fallback", false); err != nil {
		return nil, err
	}
	if m.ignoreMerges, err = o.boolean("ignore_merges", false); err != nil {
		return nil, err
	}
	if m.prefix, err = o.str("continuing_subword_prefix", ""); err != nil {
		return nil, err
	}
	if m.suffix, err = o.str("end_of_word_suffix", ""); err != nil {
		return nil, err
	}
	if !o.has("merges") {
		return nil, ferr(o.f("merges"), "missing (a BPE model needs its merges)")
	}
	pairs, err := parseMerges(o.f("merges"), o.m["merges"])
	if err != nil {
		return nil, err
	}
	m.merges = make(map[uint64]uint64, len(pairs))
	for rank, p := range pairs {
		a, ok := v.ids[p[0]]
		if !ok {
			return nil, ferr(fmt.Sprintf("%s[%d]", o.f("merges"), rank), "token %q is not in model.vocab", p[0])
		}
		b, ok := v.ids[p[1]]
		if !ok {
			return nil, ferr(fmt.Sprintf("%s[%d]", o.f("merges"), rank), "token %q is not in model.vocab", p[1])
		}
		merged := p[0] + strings.TrimPrefix(p[1], m.prefix)
		if m.prefix == "" {
			merged = p[0] + p[1]
		}
		id, ok := v.ids[merged]
		if !ok {
			return nil, ferr(fmt.Sprintf("%s[%d]", o.f("merges"), rank), "merged token %q is not in model.vocab", merged)
		}
		k := pairKey(a, b)
		if _, dup := m.merges[k]; !dup { // HF keeps the first rank of a repeated pair
			m.merges[k] = uint64(rank)<<32 | uint64(uint32(id))
		}
	}
	return m, nil
}

// parseMerges reads merges in either layout: ["a b", ...] or
// [["a", "b"], ...].
func parseMerges(path string, raw json.RawMessage) ([][2]string, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || trimmed[0] != '[' {
		return nil, ferr(path, "want an array of merges")
	}
	rest := bytes.TrimSpace(trimmed[1:])
	if len(rest) > 0 && rest[0] == '[' {
		var pairs [][]string
		if err := json.Unmarshal(raw, &pairs); err != nil {
			return nil, ferr(path, "want [[\"a\", \"b\"], ...]: %s", jsonMsg(err))
		}
		out := make([][2]string, len(pairs))
		for i, p := range pairs {
			if len(p) != 2 {
				return nil, ferr(fmt.Sprintf("%s[%d]", path, i), "want a pair of two tokens, found %d", len(p))
			}
			out[i] = [2]string{p[0], p[1]}
		}
		return out, nil
	}
	var lines []string
	if err := json.Unmarshal(raw, &lines); err != nil {
		return nil, ferr(path, "want [\"a b\", ...] or [[\"a\", \"b\"], ...]: %s", jsonMsg(err))
	}
	out := make([][2]string, len(lines))
	for i, l := range lines {
		parts := strings.Split(l, " ")
		if len(parts) != 2 {
			return nil, ferr(fmt.Sprintf("%s[%d]", path, i), "want \"a b\" (two tokens and one space), found %q", l)
		}
		out[i] = [2]string{parts[0], parts[1]}
	}
	return out, nil
}

// ---- normalizers ---------------------------------------------------------

func parseNormalizer(path string, raw json.RawMessage) (normalizer, error) {
	o, err := parseObj(path, raw)
	if err != nil || o == nil {
		return nil, err
	}
	typ, err := o.typ()
	if err != nil {
		return nil, err
	}
	switch typ {
	case "NFC":
		return unicodeNorm{norm.NFC}, nil
	case "NFD":
		return unicodeNorm{norm.NFD}, nil
	case "NFKC":
		return unicodeNorm{norm.NFKC}, nil
	case "NFKD":
		return unicodeNorm{norm.NFKD}, nil
	case "Lowercase":
		return lowercaseNorm{}, nil
	case "StripAccents":
		return stripAccentsNorm{}, nil
	case "Strip":
		var n stripNorm
		if n.left, err = o.boolean("strip_left", true); err != nil {
			return nil, err
		}
		if n.right, err = o.boolean("strip_right", true); err != nil {
			return nil, err
		}
		return n, nil
	case "Prepend":
		s, err := o.reqStr("prepend")
		if err != nil {
			return nil, err
		}
		return prependNorm{s}, nil
	case "Replace":
		lit, re, err := parseReplacePattern(o)
		if err != nil {
			return nil, err
		}
		content, err := o.reqStr("content")
		if err != nil {
			return nil, err
		}
		if re != nil {
			g, ok := re.(goRegexPattern)
			if !ok {
				return nil, ferr(o.f("pattern"), "this regex is only supported in Split pre-tokenizers")
			}
			return replaceNorm{re: g.re, content: content}, nil
		}
		return replaceNorm{literal: lit, content: content}, nil
	case "BertNormalizer":
		var n bertNorm
		if n.cleanText, err = o.boolean("clean_text", true); err != nil {
			return nil, err
		}
		if n.chineseChars, err = o.boolean("handle_chinese_chars", true); err != nil {
			return nil, err
		}
		if n.lowercase, err = o.boolean("lowercase", true); err != nil {
			return nil, err
		}
		if n.stripAccents, err = o.boolean("strip_accents", n.lowercase); err != nil {
			return nil, err
		}
		return n, nil
	case "Sequence":
		list, err := o.list("normalizers")
		if err != nil {
			return nil, err
		}
		var seq seqNorm
		for i, r := range list {
			n, err := parseNormalizer(fmt.Sprintf("%s[%d]", o.f("normalizers"), i), r)
			if err != nil {
				return nil, err
			}
			if n == nil {
				return nil, ferr(fmt.Sprintf("%s[%d]", o.f("normalizers"), i), "null")
			}
			seq = append(seq, n)
		}
		return seq, nil
	case "Precompiled", "Nmt", "ByteLevel":
		return nil, ferr(o.f("type"), "normalizer %q is not supported", typ)
	}
	return nil, ferr(o.f("type"), "unknown normalizer type %q", typ)
}

// parseReplacePattern reads {"pattern": {"String": s}} or {"Regex": r}.
// It returns the literal, or a compiled regex pattern.
func parseReplacePattern(o *obj) (string, pattern, error) {
	p, err := parseObj(o.f("pattern"), o.m["pattern"])
	if err != nil {
		return "", nil, err
	}
	if p == nil {
		return "", nil, ferr(o.f("pattern"), "missing")
	}
	if p.has("String") {
		s, err := p.str("String", "")
		return s, nil, err
	}
	if p.has("Regex") {
		s, err := p.str("Regex", "")
		if err != nil {
			return "", nil, err
		}
		re, err := compileRegex(s)
		if err != nil {
			return "", nil, ferr(p.f("Regex"), "%v", err)
		}
		return "", re, nil
	}
	return "", nil, ferr(o.f("pattern"), "want {\"String\": ...} or {\"Regex\": ...}")
}

// ---- pre-tokenizers ------------------------------------------------------

func parsePreTokenizer(path string, raw json.RawMessage) (preTokenizer, error) {
	o, err := parseObj(path, raw)
	if err != nil || o == nil {
		return nil, err
	}
	typ, err := o.typ()
	if err != nil {
		return nil, err
	}
	switch typ {
	case "Split":
		lit, re, err := parseReplacePattern(o)
		if err != nil {
			return nil, err
		}
		bs, err := o.reqStr("behavior")
		if err != nil {
			return nil, err
		}
		b, ok := behaviors[bs]
		if !ok {
			return nil, ferr(o.f("behavior"), "unknown behavior %q (want Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)", bs)
		}
		invert, err := o.boolean("invert", false)
		if err != nil {
			return nil, err
		}
		t := &splitPre{behavior: b, pat: literalPattern(lit)}
		if re != nil {
			t.pat = re
			if fp, ok := re.(*familyPattern); ok && b == bIsolated && !invert {
				t.fam = &fp.f
			}
		}
		if invert {
			t.pat = invertPattern{t.pat}
		}
		return t, nil
	case "ByteLevel":
		t := &byteLevelPre{}
		if t.addPrefixSpace, err = o.boolean("add_prefix_space", true); err != nil {
			return nil, err
		}
		if t.useRegex, err = o.boolean("use_regex", true); err != nil {
			return nil, err
		}
		if _, err = o.boolean("trim_offsets", true); err != nil {
			return nil, err
		}
		return t, nil
	case "Metaspace":
		t := &metaspacePre{}
		if t.rep, t.scheme, err = parseMetaspace(o); err != nil {
			return nil, err
		}
		t.repStr = string(t.rep)
		if t.splitOn, err = o.boolean("split", true); err != nil {
			return nil, err
		}
		return t, nil
	case "Whitespace":
		return whitespacePre{}, nil
	case "WhitespaceSplit":
		return whitespaceSplitPre{}, nil
	case "BertPreTokenizer":
		return bertPre{}, nil
	case "Punctuation":
		bs, err := o.str("behavior", "Isolated")
		if err != nil {
			return nil, err
		}
		b, ok := behaviors[bs]
		if !ok {
			return nil, ferr(o.f("behavior"), "unknown behavior %q", bs)
		}
		return &charSplitPre{pred: isBertPunct, behavior: b}, nil
	case "Digits":
		ind, err := o.boolean("individual_digits", false)
		if err != nil {
			return nil, err
		}
		b := bContiguous
		if ind {
			b = bIsolated
		}
		return &charSplitPre{pred: isRustNumeric, behavior: b}, nil
	case "CharDelimiterSplit":
		d, err := o.reqStr("delimiter")
		if err != nil {
			return nil, err
		}
		if utf8.RuneCountInString(d) != 1 {
			return nil, ferr(o.f("delimiter"), "want one character, found %q", d)
		}
		r, _ := utf8.DecodeRuneInString(d)
		return &charSplitPre{pred: func(c rune) bool { return c == r }, behavior: bRemoved}, nil
	case "Sequence":
		list, err := o.list("pretokenizers")
		if err != nil {
			return nil, err
		}
		var seq seqPre
		for i, r := range list {
			p, err := parsePreTokenizer(fmt.Sprintf("%s[%d]", o.f("pretokenizers"), i), r)
			if err != nil {
				return nil, err
			}
			if p == nil {
				return nil, ferr(fmt.Sprintf("%s[%d]", o.f("pretokenizers"), i), "null")
			}
			seq = append(seq, p)
		}
		return seq, nil
	case "UnicodeScripts", "FixedLength":
		return nil, ferr(o.f("type"), "pre-tokenizer %q is not supported", typ)
	}
	return nil, ferr(o.f("type"), "unknown pre-tokenizer type %q", typ)
}

// parseMetaspace reads the replacement char and the prepend scheme, in the
// current layout (prepend_scheme) or the legacy one (add_prefix_space).
func parseMetaspace(o *obj) (rune, int, error) {
	rep, err := o.str("replacement", "\u2581")
	if err != nil {
		return 0, 0, err
	}
	if utf8.RuneCountInString(rep) != 1 {
		return 0, 0, ferr(o.f("replacement"), "want one character, found %q", rep)
	}
	r, _ := utf8.DecodeRuneInString(rep)
	scheme := prependAlways
	if o.has("prepend_scheme") {
		s, err := o.str("prepend_scheme", "")
		if err != nil {
			return 0, 0, err
		}
		switch s {
		case "always":
			scheme = prependAlways
		case "first":
			scheme = prependFirst
		case "never":
			scheme = prependNever
		default:
			return 0, 0, ferr(o.f("prepend_scheme"), "unknown scheme %q (want always, first or never)", s)
		}
	} else if o.has("add_prefix_space") {
		add, err := o.boolean("add_prefix_space", true)
		if err != nil {
			return 0, 0, err
		}
		if !add {
			scheme = prependNever
		}
	}
	return r, scheme, nil
}

// ---- post-processors -----------------------------------------------------

func parsePostProcessor(path string, raw json.RawMessage) (*template, error) {
	o, err := parseObj(path, raw)
	if err != nil || o == nil {
		return nil, err
	}
	typ, err := o.typ()
	if err != nil {
		return nil, err
	}
	switch typ {
	case "ByteLevel":
		return &template{}, nil
	case "BertProcessing", "RobertaProcessing":
		sep, err := parseTokenPair(o, "sep")
		if err != nil {
			return nil, err
		}
		cls, err := parseTokenPair(o, "cls")
		if err != nil {
			return nil, err
		}
		return &template{prefix: []tmplToken{cls}, suffix: []tmplToken{sep}}, nil
	case "TemplateProcessing":
		return parseTemplate(o)
	case "Sequence":
		list, err := o.list("processors")
		if err != nil {
			return nil, err
		}
		out := &template{}
		for i, r := range list {
			p, err := parsePostProcessor(fmt.Sprintf("%s[%d]", o.f("processors"), i), r)
			if err != nil {
				return nil, err
			}
			if p == nil {
				return nil, ferr(fmt.Sprintf("%s[%d]", o.f("processors"), i), "null")
			}
			out = p.wrap(out)
		}
		return out, nil
	}
	return nil, ferr(o.f("type"), "unknown post-processor type %q", typ)
}

// wrap applies t around the output of inner (HF's Sequence processor):
// t's special tokens go outside inner's, and when t sets the sequence's
// type ids it sets them on inner's special tokens too.
func (t *template) wrap(inner *template) *template {
	retype := func(l []tmplToken) []tmplToken {
		r := append([]tmplToken(nil), l...)
		if t.setType {
			for i := range r {
				r[i].typeID = t.seqType
			}
		}
		return r
	}
	out := &template{
		prefix:  append(append([]tmplToken(nil), t.prefix...), retype(inner.prefix)...),
		suffix:  append(retype(inner.suffix), t.suffix...),
		seqType: inner.seqType,
		setType: inner.setType,
	}
	if t.setType {
		out.seqType, out.setType = t.seqType, true
	}
	return out
}

func parseTokenPair(o *obj, key string) (tmplToken, error) {
	if !o.has(key) {
		return tmplToken{}, ferr(o.f(key), "missing")
	}
	var pair []json.RawMessage
	if err := o.decode(key, &pair); err != nil || len(pair) != 2 {
		return tmplToken{}, ferr(o.f(key), "want [token, id]")
	}
	var tok string
	var id float64
	if json.Unmarshal(pair[0], &tok) != nil || json.Unmarshal(pair[1], &id) != nil || id < 0 || id != math.Trunc(id) || id >= math.MaxInt32 {
		return tmplToken{}, ferr(o.f(key), "want [token, id]")
	}
	return tmplToken{id: int32(id), token: tok}, nil
}

func parseTemplate(o *obj) (*template, error) {
	// special_tokens: {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
	specials := map[string][]tmplToken{}
	if o.has("special_tokens") {
		so, err := parseObj(o.f("special_tokens"), o.m["special_tokens"])
		if err != nil {
			return nil, err
		}
		for name, raw := range so.m {
			path := so.f(name)
			var st struct {
				ID     string   `json:"id"`
				IDs    []int64  `json:"ids"`
				Tokens []string `json:"tokens"`
			}
			if err := json.Unmarshal(raw, &st); err != nil {
				return nil, ferr(path, "want {\"id\", \"ids\", \"tokens\"}: %s", jsonMsg(err))
			}
			if len(st.IDs) != len(st.Tokens) {
				return nil, ferr(path, "ids and tokens differ in length (%d, %d)", len(st.IDs), len(st.Tokens))
			}
			var l []tmplToken
			for i, id := range st.IDs {
				if id < 0 || id >= math.MaxInt32 {
					return nil, ferr(fmt.Sprintf("%s.ids[%d]", path, i), "id %d out of range", id)
				}
				l = append(l, tmplToken{id: int32(id), token: st.Tokens[i]})
			}
			specials[name] = l
		}
	}
	if !o.has("single") {
		return nil, ferr(o.f("single"), "missing")
	}
	pieces, err := parseTemplatePieces(o.f("single"), o.m["single"])
	if err != nil {
		return nil, err
	}
	t := &template{setType: true}
	seen := false
	for i, p := range pieces {
		path := fmt.Sprintf("%s[%d]", o.f("single"), i)
		if p.special == "" {
			if p.seq != "A" {
				return nil, ferr(path, "a single-sequence template can only use sequence A, found %q", p.seq)
			}
			if seen {
				return nil, ferr(path, "sequence A appears twice")
			}
			seen = true
			t.seqType = p.typeID
			continue
		}
		toks, ok := specials[p.special]
		if !ok {
			return nil, ferr(path, "special token %q is not in %s", p.special, o.f("special_tokens"))
		}
		for _, x := range toks {
			x.typeID = p.typeID
			if seen {
				t.suffix = append(t.suffix, x)
			} else {
				t.prefix = append(t.prefix, x)
			}
		}
	}
	if !seen {
		return nil, ferr(o.f("single"), "the template has no sequence ($A)")
	}
	return t, nil
}

type tmplPiece struct {
	special string // the special token's name, or "" for a sequence
	seq     string // "A" or "B"
	typeID  int32
}

// parseTemplatePieces reads a template as a list of
// {"SpecialToken": {"id", "type_id"}} / {"Sequence": {"id", "type_id"}},
// or as a string like "[CLS] $A [SEP]" / "$A:0 <s>:1".
func parseTemplatePieces(path string, raw json.RawMessage) ([]tmplPiece, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		var out []tmplPiece
		for _, f := range strings.Fields(s) {
			name, typ, _ := strings.Cut(f, ":")
			var tid int32
			if typ != "" {
				var n int
				if _, err := fmt.Sscanf(typ, "%d", &n); err != nil || n < 0 {
					return nil, ferr(path, "bad type id in %q", f)
				}
				tid = int32(n)
			}
			switch name {
			case "$", "$A", "$0":
				out = append(out, tmplPiece{seq: "A", typeID: tid})
			case "$B", "$1":
				out = append(out, tmplPiece{seq: "B", typeID: tid})
			default:
				if strings.HasPrefix(name, "$") {
					return nil, ferr(path, "bad sequence %q", f)
				}
				out = append(out, tmplPiece{special: name, typeID: tid})
			}
		}
		return out, nil
	}
	var list []map[string]struct {
		ID     string `json:"id"`
		TypeID int32  `json:"type_id"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, ferr(path, "want a list of {\"SpecialToken\"|\"Sequence\": {\"id\", \"type_id\"}}: %s", jsonMsg(err))
	}
	out := make([]tmplPiece, 0, len(list))
	for i, m := range list {
		if len(m) != 1 {
			return nil, ferr(fmt.Sprintf("%s[%d]", path, i), "want one key, SpecialToken or Sequence")
		}
		for k, v := range m {
			if v.TypeID < 0 {
				return nil, ferr(fmt.Sprintf("%s[%d].%s.type_id", path, i, k), "negative")
			}
			switch k {
			case "SpecialToken":
				if v.ID == "" {
					return nil, ferr(fmt.Sprintf("%s[%d].%s.id", path, i, k), "missing")
				}
				out = append(out, tmplPiece{special: v.ID, typeID: v.TypeID})
			case "Sequence":
				out = append(out, tmplPiece{seq: v.ID, typeID: v.TypeID})
			default:
				return nil, ferr(fmt.Sprintf("%s[%d]", path, i), "unknown piece %q (want SpecialToken or Sequence)", k)
			}
		}
	}
	return out, nil
}

// ---- decoders ------------------------------------------------------------

func parseDecoder(path string, raw json.RawMessage) (decoder, error) {
	o, err := parseObj(path, raw)
	if err != nil || o == nil {
		return nil, err
	}
	typ, err := o.typ()
	if err != nil {
		return nil, err
	}
	switch typ {
	case "ByteLevel":
		return byteLevelDec{}, nil
	case "Replace":
		lit, re, err := parseReplacePattern(o)
		if err != nil {
			return nil, err
		}
		content, err := o.reqStr("content")
		if err != nil {
			return nil, err
		}
		if re != nil {
			g, ok := re.(goRegexPattern)
			if !ok {
				return nil, ferr(o.f("pattern"), "this regex is only supported in Split pre-tokenizers")
			}
			return replaceDec{re: g.re, content: content}, nil
		}
		return replaceDec{literal: lit, content: content}, nil
	case "ByteFallback":
		return byteFallbackDec{}, nil
	case "Fuse":
		return fuseDec{}, nil
	case "Strip":
		c, err := o.reqStr("content")
		if err != nil {
			return nil, err
		}
		if utf8.RuneCountInString(c) != 1 {
			return nil, ferr(o.f("content"), "want one character, found %q", c)
		}
		d := stripDec{}
		d.content, _ = utf8.DecodeRuneInString(c)
		if d.start, err = o.integer("start", 0); err != nil {
			return nil, err
		}
		if d.stop, err = o.integer("stop", 0); err != nil {
			return nil, err
		}
		return d, nil
	case "Metaspace":
		r, scheme, err := parseMetaspace(o)
		if err != nil {
			return nil, err
		}
		return metaspaceDec{rep: r, prependAny: scheme != prependNever}, nil
	case "WordPiece":
		d := wordPieceDec{}
		if d.prefix, err = o.str("prefix", "##"); err != nil {
			return nil, err
		}
		if d.cleanup, err = o.boolean("cleanup", true); err != nil {
			return nil, err
		}
		return d, nil
	case "BPEDecoder":
		s, err := o.str("suffix", "</w>")
		if err != nil {
			return nil, err
		}
		return bpeDec{s}, nil
	case "CTC":
		d := ctcDec{}
		if d.pad, err = o.str("pad_token", "<pad>"); err != nil {
			return nil, err
		}
		if d.delimiter, err = o.str("word_delimiter_token", "|"); err != nil {
			return nil, err
		}
		if d.cleanup, err = o.boolean("cleanup", true); err != nil {
			return nil, err
		}
		return d, nil
	case "Sequence":
		list, err := o.list("decoders")
		if err != nil {
			return nil, err
		}
		var seq seqDec
		for i, r := range list {
			d, err := parseDecoder(fmt.Sprintf("%s[%d]", o.f("decoders"), i), r)
			if err != nil {
				return nil, err
			}
			if d == nil {
				return nil, ferr(fmt.Sprintf("%s[%d]", o.f("decoders"), i), "null")
			}
			seq = append(seq, d)
		}
		return seq, nil
	}
	return nil, ferr(o.f("type"), "unknown decoder type %q", typ)
}

// ---- truncation and padding ----------------------------------------------

func parseSide(o *obj, key string) (Side, error) {
	s, err := o.str(key, "Right")
	if err != nil {
		return Right, err
	}
	switch s {
	case "Right":
		return Right, nil
	case "Left":
		return Left, nil
	}
	return Right, ferr(o.f(key), "want Left or Right, found %q", s)
}

func parseTruncation(top *obj) (*Truncation, error) {
	o, err := parseObj("truncation", top.m["truncation"])
	if err != nil || o == nil {
		return nil, err
	}
	t := &Truncation{}
	if t.MaxLength, err = o.integer("max_length", 512); err != nil {
		return nil, err
	}
	if t.Direction, err = parseSide(o, "direction"); err != nil {
		return nil, err
	}
	return t, nil
}

// MaxPadLength bounds the fixed padding length and pad_to_multiple_of of
// a tokenizer.json (4Mi tokens, beyond any model's context window).
const MaxPadLength = 1 << 22

func parsePadding(top *obj) (*Padding, error) {
	o, err := parseObj("padding", top.m["padding"])
	if err != nil || o == nil {
		return nil, err
	}
	p := &Padding{}
	if o.has("strategy") {
		var s string
		if json.Unmarshal(o.m["strategy"], &s) == nil {
			if s != "BatchLongest" {
				return nil, ferr(o.f("strategy"), "want \"BatchLongest\" or {\"Fixed\": n}, found %q", s)
			}
		} else {
			so, err := parseObj(o.f("strategy"), o.m["strategy"])
			if err != nil {
				return nil, err
			}
			if p.Length, err = so.integer("Fixed", 0); err != nil {
				return nil, err
			}
			if p.Length == 0 {
				return nil, ferr(o.f("strategy"), "want \"BatchLongest\" or {\"Fixed\": n} with n > 0")
			}
		}
	}
	if p.Direction, err = parseSide(o, "direction"); err != nil {
		return nil, err
	}
	if p.PadToMultipleOf, err = o.integer("pad_to_multiple_of", 0); err != nil {
		return nil, err
	}
	// every encoding is padded to these lengths: a file may not make each
	// Encode allocate gigabytes
	if p.Length > MaxPadLength {
		return nil, ferr(o.f("strategy"), "padding to %d tokens is more than the %d this library allows", p.Length, MaxPadLength)
	}
	if p.PadToMultipleOf > MaxPadLength {
		return nil, ferr(o.f("pad_to_multiple_of"), "padding to a multiple of %d tokens is more than the %d this library allows", p.PadToMultipleOf, MaxPadLength)
	}
	if p.PadID, err = o.integer("pad_id", 0); err != nil {
		return nil, err
	}
	if p.PadTypeID, err = o.integer("pad_type_id", 0); err != nil {
		return nil, err
	}
	if p.PadToken, err = o.str("pad_token", "[PAD]"); err != nil {
		return nil, err
	}
	return p, nil
}
