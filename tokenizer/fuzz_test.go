package tokenizer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const fuzzTinyJSON = `{"version": "1.0",
  "added_tokens": [{"id": 0, "content": "<s>", "special": true, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false}],
  "pre_tokenizer": {"type": "Whitespace"},
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}},
  "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
  "model": {"type": "BPE", "vocab": {"<s>": 0, "h": 1, "e": 2, "l": 3, "o": 4, "he": 5, "ll": 6, "hell": 7, "hello": 8},
    "merges": ["h e", "l l", "he ll", "hell o"]}}`

// FuzzTokenizerJSON (beside FuzzFromJSON, which encodes fixed strings): any bytes as tokenizer.json load without a panic; a
// tokenizer that loads encodes any text to ids it knows, the same ids
// every time, and decodes them without a panic.
func FuzzTokenizerJSON(f *testing.F) {
	f.Add([]byte(byteBPEJSON("")), "Hello, world! héllo  \n\t<s>")
	f.Add([]byte(fuzzTinyJSON), "hello <s> hell")
	for _, name := range []string{"bert-misc", "bert-ws"} { // WordPiece files under 1 MB, when fetched
		if b, err := os.ReadFile(filepath.Join(cacheDir(), name, "tokenizer.json")); err == nil && len(b) < 1<<20 {
			f.Add(b, "Hello, World! ünïcödé 123")
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, text string) {
		tk, err := FromJSON(data)
		if err != nil {
			return
		}
		if slowPadding(tk) {
			return
		}
		for _, special := range []bool{false, true} {
			ids, err := tk.EncodeIDs(text, special)
			if err != nil {
				continue
			}
			again, _ := tk.EncodeIDs(text, special)
			if len(again) != len(ids) {
				t.Fatalf("encoding %q twice: %v, then %v", text, ids, again)
			}
			for i, id := range ids {
				if again[i] != id {
					t.Fatalf("encoding %q twice: %v, then %v", text, ids, again)
				}
				if _, ok := tk.IDToToken(id); !ok {
					t.Fatalf("encoding %q gave id %d, which has no token", text, id)
				}
			}
			_ = tk.Decode(ids, special)
		}
	})
}

// A padding length from tokenizer.json is bounded (MaxPadLength): 4·10^8
// made every Encode allocate gigabytes (found by fuzzing, issue #19).
func TestPaddingLengthBounded(t *testing.T) {
	for _, js := range []string{
		`{"model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}, "padding": {"strategy": {"Fixed": 400000000}}}`,
		`{"model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}, "padding": {"strategy": "BatchLongest", "pad_to_multiple_of": 400000000}}`,
	} {
		_, err := FromJSON([]byte(js))
		if err == nil || !strings.Contains(err.Error(), "padding") {
			t.Fatalf("%s: %v", js, err)
		}
	}
}

// slowPadding: padding every encoding to thousands of tokens (allowed up
// to MaxPadLength) is correct but makes each fuzz run take seconds.
func slowPadding(tk *Tokenizer) bool {
	p := tk.Padding()
	return p != nil && (p.Length > 4096 || p.PadToMultipleOf > 4096)
}
