package tokenizer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// byteBPEJSON is a small byte-level BPE (every byte is in the vocab) with
// a few merges and added tokens: enough to exercise the pipeline without
// the fetched files.
func byteBPEJSON(extra string) string {
	var vocab []string
	for b := 0; b < 256; b++ {
		vocab = append(vocab, fmt.Sprintf("%q: %d", byteToStr[b], b))
	}
	merges := [][2]string{{"Ġ", "t"}, {"h", "e"}, {"Ġt", "he"}, {"i", "n"}, {"Ġ", "Ġ"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}}
	id := 256
	var ms []string
	for _, m := range merges {
		vocab = append(vocab, fmt.Sprintf("%q: %d", m[0]+m[1], id))
		ms = append(ms, fmt.Sprintf("%q", m[0]+" "+m[1]))
		id++
	}
	vocab = append(vocab, `"<|end|>": 264`)
	return `{"version": "1.0", "added_tokens": [
	  {"id": 264, "content": "<|end|>", "special": true, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false},
	  {"id": 265, "content": "<tool>", "special": false, "single_word": false, "lstrip": true, "rstrip": true, "normalized": false}],
	 "normalizer": {"type": "NFC"},
	 "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
	 "post_processor": {"type": "TemplateProcessing",
	   "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|end|>", "type_id": 0}}],
	   "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
	   "special_tokens": {"<|end|>": {"id": "<|end|>", "ids": [264], "tokens": ["<|end|>"]}}},
	 "decoder": {"type": "ByteLevel"},
	 "model": {"type": "BPE", "vocab": {` + strings.Join(vocab, ", ") + `}, "merges": [` + strings.Join(ms, ", ") + `]` + extra + `}}`
}

func smallTokenizer(t testing.TB) *Tokenizer {
	t.Helper()
	tk, err := FromJSON([]byte(byteBPEJSON("")))
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestSmallTokenizer(t *testing.T) {
	tk := smallTokenizer(t)
	ids, err := tk.EncodeIDs("hello the<|end|>  in <tool>  x", true)
	if err != nil {
		t.Fatal(err)
	}
	toks := make([]string, len(ids))
	for i, id := range ids {
		toks[i], _ = tk.IDToToken(id)
	}
	want := []string{"hello", "Ġthe", "<|end|>", "Ġ", "Ġ", "in", "<tool>", "x", "<|end|>"}
	if !reflect.DeepEqual(toks, want) {
		t.Fatalf("got %q, want %q", toks, want)
	}
	// <tool> took the spaces around it (lstrip, rstrip); decode gives them back
	// only as the token's content.
	if got := tk.Decode(ids, true); got != "hello the  in<tool>x" {
		t.Fatalf("decode: %q", got)
	}
	if tk.VocabSize(false) != 265 || tk.VocabSize(true) != 266 {
		t.Fatalf("vocab sizes %d %d", tk.VocabSize(false), tk.VocabSize(true))
	}
	if id, ok := tk.TokenToID("<tool>"); !ok || id != 265 {
		t.Fatalf("TokenToID(<tool>) = %d %v", id, ok)
	}
	if !tk.IsSpecial(264) || tk.IsSpecial(265) {
		t.Fatal("IsSpecial")
	}
	if got := tk.AddedTokens(); len(got) != 2 || got[0].Content != "<|end|>" || !got[1].LStrip {
		t.Fatalf("AddedTokens: %+v", got)
	}
}

// Every valid UTF-8 string survives a byte-level encode and decode.
func TestByteLevelRoundTrip(t *testing.T) {
	tk := smallTokenizer(t)
	for _, s := range readDiff(t).Corpus {
		if strings.Contains(s, "<|end|>") || strings.Contains(s, "<tool>") {
			continue
		}
		s = strings.ToValidUTF8(s, "\uFFFD")
		ids, err := tk.EncodeIDs(s, false)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := tk.Decode(ids, false), nfc(s); got != want {
			t.Fatalf("round trip of %q: %q", want, got)
		}
	}
}

func nfc(s string) string { return unicodeNormNFC.normalize(s) }

var unicodeNormNFC = func() normalizer {
	n, _ := parseNormalizer("n", []byte(`{"type": "NFC"}`))
	return n
}()

func TestTruncationAndPadding(t *testing.T) {
	tk := smallTokenizer(t)
	text := "hello the in x"
	full, _ := tk.EncodeIDs(text, false) // hello Ġthe Ġ in Ġ x
	if len(full) != 6 {
		t.Fatalf("setup: %v", full)
	}
	tr := tk.WithTruncation(&Truncation{MaxLength: 4})
	e, err := tr.Encode(text, true)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(append([]int{}, full[:3]...), 264); !reflect.DeepEqual(e.IDs, want) {
		t.Fatalf("right truncation: %v, want %v", e.IDs, want)
	}
	e, _ = tk.WithTruncation(&Truncation{MaxLength: 3, Direction: Left}).Encode(text, false)
	if !reflect.DeepEqual(e.IDs, full[3:]) {
		t.Fatalf("left truncation: %v", e.IDs)
	}
	if _, err := tk.WithTruncation(&Truncation{MaxLength: 0}).Encode(text, true); err == nil {
		t.Fatal("max_length below the special tokens: no error")
	}
	if tk.Truncation() != nil || tr.Truncation().MaxLength != 4 {
		t.Fatal("WithTruncation changed the original")
	}

	p := tk.WithPadding(&Padding{Direction: Left, PadID: 7, PadTypeID: 1, PadToken: "<pad>", PadToMultipleOf: 4})
	batch, err := p.EncodeBatch([]string{"hello", text, ""}, true)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range batch {
		if len(e.IDs) != 8 || len(e.AttentionMask) != 8 || len(e.TypeIDs) != 8 || len(e.Tokens) != 8 || len(e.SpecialTokensMask) != 8 {
			t.Fatalf("row %d not padded to 8: %+v", i, e)
		}
	}
	if !reflect.DeepEqual(batch[0].IDs, []int{7, 7, 7, 7, 7, 7, 262 + 1, 264}) && batch[0].IDs[7] != 264 {
		t.Fatalf("row 0: %v", batch[0].IDs)
	}
	if !reflect.DeepEqual(batch[0].AttentionMask, []int{0, 0, 0, 0, 0, 0, 1, 1}) ||
		!reflect.DeepEqual(batch[0].SpecialTokensMask, []int{1, 1, 1, 1, 1, 1, 0, 1}) ||
		batch[0].Tokens[0] != "<pad>" || batch[0].TypeIDs[0] != 1 {
		t.Fatalf("row 0: %+v", batch[0])
	}
	if !reflect.DeepEqual(batch[2].IDs, []int{7, 7, 7, 7, 7, 7, 7, 264}) {
		t.Fatalf("empty row: %v", batch[2].IDs)
	}
	fixed, _ := tk.WithPadding(&Padding{Length: 10, PadID: 1}).EncodeIDs("hello", false)
	if len(fixed) != 10 || fixed[9] != 1 {
		t.Fatalf("fixed padding: %v", fixed)
	}
}

func TestDecodeStream(t *testing.T) {
	for _, name := range []string{"qwen3", "llama2", "gemma3", "gpt2"} {
		tk := realTokenizer(t, name)
		for _, s := range readDiff(t).Corpus[:2000] {
			ids, err := tk.EncodeIDs(s, true)
			if err != nil {
				t.Fatal(err)
			}
			full := tk.Decode(ids, false)
			st := tk.NewDecodeStream(false)
			var got strings.Builder
			for _, id := range ids {
				if part, ok := st.Step(id); ok {
					if !utf8.ValidString(part) {
						t.Fatalf("%s: invalid UTF-8 chunk %q", name, part)
					}
					got.WriteString(part)
				}
			}
			// The stream holds back only an unfinished character.
			if g := got.String(); g != full && !(strings.HasPrefix(full, g) && strings.HasSuffix(full, "\uFFFD")) {
				t.Fatalf("%s: stream of %q gave %q, Decode %q", name, s, g, full)
			}
		}
	}
}

func TestLossyUTF8(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"abc", "abc"},
		{"\xe2\x82", "\uFFFD"},                 // truncated 3-byte sequence: one replacement
		{"\xe2\x82x", "\uFFFDx"},               // ... followed by ASCII
		{"\xff\xfe", "\uFFFD\uFFFD"},           // bytes that never start a sequence
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, // surrogate: ED then A0 is out of range
		{"\xf0\x9f\x98", "\uFFFD"},             // truncated emoji
		{"\xf0\x9f\x98\x80", "😀"},
		{"\xc0\xaf", "\uFFFD\uFFFD"}, // overlong
		{"a\x80b", "a\uFFFDb"},
	} {
		if got := lossyUTF8([]byte(c.in)); got != c.want {
			t.Errorf("lossyUTF8(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	// Single partial tokens decode to U+FFFD, as HF's do.
	tk := realTokenizer(t, "qwen3")
	ids, _ := tk.EncodeIDs("\U0002A6D6", false) // a rare CJK char: several byte tokens
	if len(ids) < 2 {
		t.Fatalf("U+2A6D6 is one token: %v", ids)
	}
	if got := tk.Decode(ids[:1], false); got != "\uFFFD" {
		t.Fatalf("partial token decodes to %q", got)
	}
}

// The pieces of the hand-written regex scanners cover the input exactly.
func TestScannerCoversInput(t *testing.T) {
	fams := []regexFamily{{}, {js: true}, {cl100k: true, digits: 3, fold: true}, {cl100k: true, digits: 1, fold: true}}
	for _, s := range readDiff(t).Corpus {
		for _, f := range fams {
			ends := f.split(s, nil)
			prev := 0
			for _, e := range ends {
				if e <= prev {
					t.Fatalf("%+v on %q: empty piece at %d", f, s, prev)
				}
				prev = e
			}
			if prev != len(s) {
				t.Fatalf("%+v on %q: pieces end at %d of %d", f, s, prev, len(s))
			}
		}
	}
}

func TestKnownRegexesRecognized(t *testing.T) {
	for _, name := range []string{"qwen3", "llama3"} {
		tk := realTokenizer(t, name)
		seq, ok := tk.pre.(seqPre)
		if !ok {
			t.Fatalf("%s: pre_tokenizer %T", name, tk.pre)
		}
		sp, ok := seq[0].(*splitPre)
		if !ok || sp.fam == nil {
			t.Fatalf("%s: the Split regex is not matched by the hand-written scanner", name)
		}
	}
}

// Encoding from many goroutines at once gives the same ids as one at a
// time (run with -race).
func TestConcurrentUse(t *testing.T) {
	tk := smallTokenizer(t)
	corpus := readDiff(t).Corpus[:400]
	want := make([][]int, len(corpus))
	for i, s := range corpus {
		want[i], _ = tk.EncodeIDs(s, true)
	}
	fresh := smallTokenizer(t) // empty caches: the goroutines fill them together
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for k := range corpus {
				i := (k + g*50) % len(corpus)
				ids, err := fresh.EncodeIDs(corpus[i], true)
				if err != nil || !reflect.DeepEqual(ids, want[i]) {
					errs <- fmt.Errorf("goroutine %d, string %d: %v %v, want %v", g, i, ids, err, want[i])
					return
				}
				_ = fresh.Decode(ids, false)
			}
		}(g)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		encs, err := fresh.WithPadding(&Padding{}).EncodeBatch(corpus, true)
		if err != nil || len(encs) != len(corpus) {
			errs <- fmt.Errorf("EncodeBatch: %v", err)
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestConfig(t *testing.T) {
	tk := realTokenizer(t, "gemma3")
	c := tk.Config()
	if c.BOSToken != "<bos>" || c.EOSToken != "<end_of_turn>" || c.PadToken != "<pad>" || c.PaddingSide != "left" ||
		c.ModelMaxLength != 32768 || c.AddBOSToken == nil || !*c.AddBOSToken || c.ChatTemplate == "" {
		t.Fatalf("gemma3 config: %+v", c)
	}
	if c := realTokenizer(t, "llama3").Config(); c.ModelMaxLength <= 1<<40 {
		t.Fatalf("llama3 model_max_length (1e30) should clamp to the largest int: %d", c.ModelMaxLength)
	}
	if c := realTokenizer(t, "qwen3").Config(); c.BOSToken != "" || c.EOSToken != "<|im_end|>" {
		t.Fatalf("qwen3 config: %+v", c)
	}
}

func TestLoadPaths(t *testing.T) {
	dir := filepath.Join(cacheDir(), "llama2")
	a, err := Load(dir) // the folder
	if err != nil {
		t.Fatal(err)
	}
	b := realTokenizer(t, "llama2")
	x, _ := a.EncodeIDs("Hello world", true)
	y, _ := b.EncodeIDs("Hello world", true)
	if !reflect.DeepEqual(x, y) {
		t.Fatal("folder and file load differ")
	}
	if _, err := Load(filepath.Join(cacheDir(), "gpt2")); err != nil {
		t.Fatalf("GPT-2 folder: %v", err)
	}
	if _, err := Load(t.TempDir()); err == nil {
		t.Fatal("an empty folder loaded")
	}
}

// Malformed or unsupported files are refused with an error that names the
// field.
func TestMalformed(t *testing.T) {
	bpe := func(model string) string { return `{"model": ` + model + `}` }
	okModel := `{"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}`
	with := func(field, v string) string { return `{"model": ` + okModel + `, "` + field + `": ` + v + `}` }
	cases := []struct{ json, field string }{
		{`not json`, "not a JSON object"},
		{`[1, 2]`, "not a JSON object"},
		{`null`, "empty"},
		{`{}`, "model: missing"},
		{`{"version": "2.0", "model": ` + okModel + `}`, "version"},
		{bpe(`{"type": "Foo"}`), "model.type"},
		{bpe(`{"type": "Unigram", "vocab": [["a", 0.0]]}`), "model.type"},
		{bpe(`{"type": "BPE", "vocab": {"a": 0}}`), "model.merges"},
		{bpe(`{"type": "BPE", "merges": []}`), "model.vocab"},
		{bpe(`{"type": "BPE", "vocab": [1, 2], "merges": []}`), "model.vocab"},
		{bpe(`{"type": "BPE", "vocab": {"a": -1}, "merges": []}`), "model.vocab"},
		{bpe(`{"type": "BPE", "vocab": {"a": 1.5}, "merges": []}`), "model.vocab"},
		{bpe(`{"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}`), "model.merges[0]"},
		{bpe(`{"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}`), "model.merges[0]"},
		{bpe(`{"type": "BPE", "vocab": {"a": 0}, "merges": ["a"]}`), "model.merges[0]"},
		{bpe(`{"type": "BPE", "vocab": {"a": 0}, "merges": [["a"]]}`), "model.merges[0]"},
		{bpe(`{"type": "BPE", "vocab": {"a": 0}, "merges": [[1, 2]]}`), "model.merges"},
		{bpe(`{"type": "BPE", "vocab": {"a": 0}, "merges": {}}`), "model.merges"},
		{bpe(`{"type": "BPE", "vocab": {"a": 0}, "merges": [], "byte_fallback": "yes"}`), "model.byte_fallback"},
		{bpe(`{"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 2}`), "model.dropout"},
		{bpe(`{"type": "WordPiece", "vocab": {"a": 0}, "max_input_chars_per_word": -1}`), "model.max_input_chars_per_word"},
		{bpe(`"BPE"`), "model"},
		{with("normalizer", `{"type": "Precompiled", "precompiled_charsmap": ""}`), "normalizer.type"},
		{with("normalizer", `{"kind": "NFC"}`), "normalizer.type"},
		{with("normalizer", `{"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Nope"}]}`), "normalizer.normalizers[1].type"},
		{with("normalizer", `{"type": "Sequence"}`), "normalizer.normalizers"},
		{with("normalizer", `{"type": "Prepend"}`), "normalizer.prepend"},
		{with("normalizer", `{"type": "Replace", "pattern": {"Regex": "(?<=a)b"}, "content": ""}`), "normalizer.pattern.Regex"},
		{with("normalizer", `{"type": "Replace", "pattern": {"Glob": "*"}, "content": ""}`), "normalizer.pattern"},
		{with("pre_tokenizer", `{"type": "Split", "pattern": {"Regex": "(?=a)"}, "behavior": "Isolated", "invert": false}`), "pre_tokenizer.pattern.Regex"},
		{with("pre_tokenizer", `{"type": "Split", "pattern": {"Regex": "\\s+(?!\\S)"}, "behavior": "Isolated", "invert": false}`), "pre_tokenizer.pattern.Regex"},
		{with("pre_tokenizer", `{"type": "Split", "pattern": {"Regex": "a++"}, "behavior": "Isolated"}`), "pre_tokenizer.pattern.Regex"},
		{with("pre_tokenizer", `{"type": "Split", "pattern": {"Regex": "[a"}, "behavior": "Isolated"}`), "pre_tokenizer.pattern.Regex"},
		{with("pre_tokenizer", `{"type": "Split", "pattern": {"String": " "}}`), "pre_tokenizer.behavior"},
		{with("pre_tokenizer", `{"type": "Split", "pattern": {"String": " "}, "behavior": "Sideways"}`), "pre_tokenizer.behavior"},
		{with("pre_tokenizer", `{"type": "Sequence", "pretokenizers": [{"type": "ByteLevel", "use_regex": "yes"}]}`), "pre_tokenizer.pretokenizers[0].use_regex"},
		{with("pre_tokenizer", `{"type": "Sequence", "pretokenizers": [null]}`), "pre_tokenizer.pretokenizers[0]"},
		{with("pre_tokenizer", `{"type": "Metaspace", "replacement": "ab"}`), "pre_tokenizer.replacement"},
		{with("pre_tokenizer", `{"type": "Metaspace", "prepend_scheme": "sometimes"}`), "pre_tokenizer.prepend_scheme"},
		{with("pre_tokenizer", `{"type": "UnicodeScripts"}`), "pre_tokenizer.type"},
		{with("pre_tokenizer", `{"type": "CharDelimiterSplit", "delimiter": ""}`), "pre_tokenizer.delimiter"},
		{with("post_processor", `{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {}}`), "post_processor.single[0]"},
		{with("post_processor", `{"type": "TemplateProcessing", "special_tokens": {}}`), "post_processor.single"},
		{with("post_processor", `{"type": "TemplateProcessing", "single": [{"Sequence": {"id": "B", "type_id": 0}}]}`), "post_processor.single[0]"},
		{with("post_processor", `{"type": "TemplateProcessing", "single": [{"Other": {"id": "A"}}]}`), "post_processor.single[0]"},
		{with("post_processor", `{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}`), "post_processor.single"},
		{with("post_processor", `{"type": "TemplateProcessing", "single": "$A <s>", "special_tokens": {"<s>": {"id": "<s>", "ids": [1, 2], "tokens": ["<s>"]}}}`), "post_processor.special_tokens.<s>"},
		{with("post_processor", `{"type": "BertProcessing", "sep": ["[SEP]"], "cls": ["[CLS]", 1]}`), "post_processor.sep"},
		{with("post_processor", `{"type": "Sequence", "processors": [{"type": "Nope"}]}`), "post_processor.processors[0].type"},
		{with("decoder", `{"type": "Nope"}`), "decoder.type"},
		{with("decoder", `{"type": "Strip", "content": "ab", "start": 1, "stop": 0}`), "decoder.content"},
		{with("decoder", `{"type": "Strip", "content": " ", "start": -1, "stop": 0}`), "decoder.start"},
		{with("decoder", `{"type": "Sequence", "decoders": [{"type": "Fuse"}, 3]}`), "decoder.decoders[1]"},
		{with("added_tokens", `{}`), "added_tokens"},
		{with("added_tokens", `[{"id": 5}]`), "added_tokens[0].content"},
		{with("added_tokens", `[{"id": 5, "content": "x", "special": "no"}]`), "added_tokens[0].special"},
		{with("added_tokens", `[3]`), "added_tokens[0]"},
		{with("truncation", `{"max_length": "x"}`), "truncation.max_length"},
		{with("truncation", `{"max_length": 5, "direction": "Up"}`), "truncation.direction"},
		{with("padding", `{"strategy": "Longest"}`), "padding.strategy"},
		{with("padding", `{"strategy": {"Fixed": 0}}`), "padding.strategy"},
	}
	for _, c := range cases {
		_, err := FromJSON([]byte(c.json))
		var fe *FieldError
		if err == nil {
			t.Errorf("%s: loaded", c.json)
			continue
		}
		if !errors.As(err, &fe) {
			t.Errorf("%s: error %T %v is not a *FieldError", c.json, err, err)
		}
		if !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s:\n error %q does not name %q", c.json, err, c.field)
		}
	}

	// tokenizer_config.json and GPT-2's files.
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tj := write("tokenizer.json", with("normalizer", "null"))
	for _, c := range []struct{ cfg, field string }{
		{`{"model_max_length": "big"}`, "model_max_length"},
		{`{"bos_token": 3}`, "bos_token"},
		{`{"padding_side": "up"}`, "padding_side"},
		{`{"add_bos_token": "yes"}`, "add_bos_token"},
		{`{"chat_template": 5}`, "chat_template"},
		{`[]`, "tokenizer_config.json"},
	} {
		write("tokenizer_config.json", c.cfg)
		if _, err := Load(tj); err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("config %s: error %v does not name %q", c.cfg, err, c.field)
		}
	}
	for _, c := range []struct{ enc, bpe, field string }{
		{`[]`, "#version: 0.2\n", "encoder.json"},
		{`{"a": -1}`, "#version: 0.2\n", "encoder.json"},
		{`{"a": 0, "b": 1}`, "#version: 0.2\na b c\n", "vocab.bpe: line 2"},
		{`{"a": 0, "b": 1}`, "#version: 0.2\na b\n", "vocab.bpe: line 2"},
	} {
		if _, err := GPT2FromBytes([]byte(c.enc), []byte(c.bpe)); err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("gpt2 %s / %q: error %v does not name %q", c.enc, c.bpe, err, c.field)
		}
	}
}

// An unk that is needed but not in the vocabulary is an encode error, not
// a panic or a silent drop.
func TestEncodeErrors(t *testing.T) {
	tk, err := FromJSON([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk.EncodeIDs("ab", false); err == nil {
		t.Fatal("no unk_token: no error")
	}
	tk, err = FromJSON([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "<unk>"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk.EncodeIDs("ab", false); err == nil || !strings.Contains(err.Error(), "<unk>") {
		t.Fatalf("unk_token outside the vocabulary: %v", err)
	}
	if _, err := tk.EncodeBatch([]string{"a", "ab"}, false); err == nil {
		t.Fatal("EncodeBatch: no error")
	}
	if got := tk.Decode([]int{0, -1, 99, 1 << 40}, false); got != "a" {
		t.Fatalf("unknown ids: %q", got)
	}
}

func FuzzFromJSON(f *testing.F) {
	f.Add(byteBPEJSON(""))
	f.Add(`{"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 1, "##b": 2}}, "normalizer": {"type": "BertNormalizer"}, "pre_tokenizer": {"type": "BertPreTokenizer"}, "decoder": {"type": "WordPiece"}}`)
	f.Add(`{"model": {"type": "BPE", "vocab": {"<unk>": 0, "<0x41>": 1, "▁": 2}, "merges": [], "unk_token": "<unk>", "byte_fallback": true, "fuse_unk": true}, "pre_tokenizer": {"type": "Metaspace", "prepend_scheme": "first"}, "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Metaspace"}, {"type": "Strip", "content": " ", "start": 2, "stop": 2}]}}`)
	f.Add(`{"model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\w+|\\s"}, "behavior": "MergedWithNext", "invert": true}, "truncation": {"max_length": 2}, "padding": {"strategy": {"Fixed": 4}}}`)
	f.Fuzz(func(t *testing.T, js string) {
		tk, err := FromJSON([]byte(js))
		if err != nil || slowPadding(tk) {
			return
		}
		for _, s := range []string{"", "a", "hello world", "<|end|> x\u00a0 y\n\n", "ab\xff"} {
			ids, err := tk.EncodeIDs(s, true)
			if err != nil {
				continue
			}
			tk.Decode(ids, false)
			tk.Decode(ids, true)
			if _, err := tk.Encode(s, false); err != nil {
				t.Fatalf("Encode failed where EncodeIDs did not: %v", err)
			}
		}
	})
}

func FuzzEncode(f *testing.F) {
	for _, s := range []string{"", "hello world", "  x\n\n y", "<|end|><tool>", "'s 'S ſ", "\xff\xfe", "😀👍🏽"} {
		f.Add(s)
	}
	tk := smallTokenizer(f)
	fams := []regexFamily{{}, {js: true}, {cl100k: true, digits: 3, fold: true}}
	f.Fuzz(func(t *testing.T, s string) {
		for _, fam := range fams {
			ends := fam.split(s, nil)
			if len(s) > 0 && (len(ends) == 0 || ends[len(ends)-1] != len(s)) {
				t.Fatalf("scanner %+v does not cover %q: %v", fam, s, ends)
			}
		}
		ids, err := tk.EncodeIDs(s, false)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(s, "<|end|>") || strings.Contains(s, "<tool>") || !utf8.ValidString(s) {
			return
		}
		if got := tk.Decode(ids, false); got != nfc(s) {
			t.Fatalf("round trip of %q: %q", s, got)
		}
	})
}

// Truncation (left) and padding (left, multiple of 4, type id 1) on real
// tokenizers, against what HF's Rust tokenizers (npm tokenizers 0.23.2)
// returned for the same settings.
func TestPaddingMatchesHF(t *testing.T) {
	want := map[string][][5]any{
		"gemma3": {
			{[]int{0, 0, 0, 2, 1217, 659, 611, 3124}, []int{1, 1, 1, 0, 0, 0, 0, 0}, []int{0, 0, 0, 1, 1, 1, 1, 1}, []int{1, 1, 1, 1, 0, 0, 0, 0}, []string{"<pad>", "<pad>", "<pad>", "<bos>", "▁how", "▁are", "▁you", "▁today"}},
			{[]int{0, 0, 0, 0, 0, 0, 2, 2202}, []int{1, 1, 1, 1, 1, 1, 0, 0}, []int{0, 0, 0, 0, 0, 0, 1, 1}, []int{1, 1, 1, 1, 1, 1, 1, 0}, []string{"<pad>", "<pad>", "<pad>", "<pad>", "<pad>", "<pad>", "<bos>", "hi"}},
			{[]int{0, 0, 0, 0, 0, 0, 0, 2}, []int{1, 1, 1, 1, 1, 1, 1, 0}, []int{0, 0, 0, 0, 0, 0, 0, 1}, []int{1, 1, 1, 1, 1, 1, 1, 1}, []string{"<pad>", "<pad>", "<pad>", "<pad>", "<pad>", "<pad>", "<pad>", "<bos>"}},
		},
		"bert": {
			{[]int{0, 0, 0, 101, 2024, 2017, 2651, 102}, []int{1, 1, 1, 0, 0, 0, 0, 0}, []int{0, 0, 0, 1, 1, 1, 1, 1}, []int{1, 1, 1, 1, 0, 0, 0, 1}, []string{"<pad>", "<pad>", "<pad>", "[CLS]", "are", "you", "today", "[SEP]"}},
			{[]int{0, 0, 0, 0, 0, 101, 7632, 102}, []int{1, 1, 1, 1, 1, 0, 0, 0}, []int{0, 0, 0, 0, 0, 1, 1, 1}, []int{1, 1, 1, 1, 1, 1, 0, 1}, []string{"<pad>", "<pad>", "<pad>", "<pad>", "<pad>", "[CLS]", "hi", "[SEP]"}},
			{[]int{0, 0, 0, 0, 0, 0, 101, 102}, []int{1, 1, 1, 1, 1, 1, 0, 0}, []int{0, 0, 0, 0, 0, 0, 1, 1}, []int{1, 1, 1, 1, 1, 1, 1, 1}, []string{"<pad>", "<pad>", "<pad>", "<pad>", "<pad>", "<pad>", "[CLS]", "[SEP]"}},
		},
	}
	for name, rows := range want {
		tk := diffTokenizer(t, name).
			WithTruncation(&Truncation{MaxLength: 5, Direction: Left}).
			WithPadding(&Padding{Direction: Left, PadToken: "<pad>", PadToMultipleOf: 4, PadTypeID: 1})
		encs, err := tk.EncodeBatch([]string{"hello world how are you today", "hi", ""}, true)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range encs {
			got := [5]any{e.IDs, e.TypeIDs, e.AttentionMask, e.SpecialTokensMask, e.Tokens}
			if !reflect.DeepEqual(got, rows[i]) {
				t.Errorf("%s row %d:\n got %v\nwant %v", name, i, got, rows[i])
			}
		}
	}
}
