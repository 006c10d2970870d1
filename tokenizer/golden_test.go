package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
)

// The real tokenizer files are fetched by scripts/fetch-tokenizers.sh
// (run by `make setup`) into a git-ignored cache; the golden ids live in
// testdata/tokenizers. Both missing is a failure, not a skip.

func cacheDir() string {
	if d := os.Getenv("GOPEFT_TOKENIZERS"); d != "" {
		return d
	}
	if d := os.Getenv("GOPEFT_CACHE"); d != "" {
		return filepath.Join(d, "tokenizers")
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "gopeft", "tokenizers")
}

func fixturesDir() string {
	if d := os.Getenv("GOPEFT_TOKENIZER_FIXTURES"); d != "" {
		return d
	}
	return filepath.Join("..", "testdata", "tokenizers")
}

var families = []string{"qwen3", "llama3", "llama2", "gemma3", "gpt2"}

var (
	loadMu sync.Mutex
	loaded = map[string]*Tokenizer{}
)

// realTokenizer loads (once per test binary) the cached tokenizer of a
// family.
func realTokenizer(t testing.TB, name string) *Tokenizer {
	t.Helper()
	loadMu.Lock()
	defer loadMu.Unlock()
	if tk, ok := loaded[name]; ok {
		return tk
	}
	dir := filepath.Join(cacheDir(), name)
	path := filepath.Join(dir, "tokenizer.json")
	if name == "gpt2" {
		path = filepath.Join(dir, "encoder.json")
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: run `make setup` (scripts/fetch-tokenizers.sh) to fetch the tokenizer files: %v", path, err)
	}
	tk, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	loaded[name] = tk
	return tk
}

type goldenCase struct {
	Name           string   `json:"name"`
	Text           string   `json:"text"`
	IDs            []int    `json:"ids"`
	IDsWithSpecial []int    `json:"ids_with_special"`
	Tokens         []string `json:"tokens"`
	Decoded        *string  `json:"decoded"`
}

func readGolden(t testing.TB, name string) []goldenCase {
	t.Helper()
	path := filepath.Join(fixturesDir(), name+".json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden fixtures missing (testdata/tokenizers): %v", err)
	}
	var f struct {
		Cases []goldenCase `json:"cases"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(f.Cases) == 0 {
		t.Fatalf("%s: no cases", path)
	}
	return f.Cases
}

func nonNil(x []int) []int {
	if x == nil {
		return []int{}
	}
	return x
}

func TestGolden(t *testing.T) {
	for _, fam := range families {
		t.Run(fam, func(t *testing.T) {
			tk := realTokenizer(t, fam)
			cases := readGolden(t, fam)
			var okIDs, okSpecial, okTokens, okDecoded, nDecoded, nSpecial, nTokens int
			for _, c := range cases {
				ids, err := tk.EncodeIDs(c.Text, false)
				if err != nil {
					t.Errorf("%s: %v", c.Name, err)
					continue
				}
				if reflect.DeepEqual(nonNil(ids), nonNil(c.IDs)) {
					okIDs++
				} else {
					t.Errorf("%s %q:\n got %v\nwant %v", c.Name, c.Text, ids, c.IDs)
				}
				e, err := tk.Encode(c.Text, false)
				if err != nil || !reflect.DeepEqual(nonNil(e.IDs), nonNil(ids)) {
					t.Errorf("%s: Encode disagrees with EncodeIDs: %v %v", c.Name, err, e)
				}
				if c.IDsWithSpecial != nil {
					nSpecial++
					ids, err := tk.EncodeIDs(c.Text, true)
					if err == nil && reflect.DeepEqual(nonNil(ids), nonNil(c.IDsWithSpecial)) {
						okSpecial++
					} else {
						t.Errorf("%s with special tokens:\n got %v %v\nwant %v", c.Name, ids, err, c.IDsWithSpecial)
					}
				}
				if c.Tokens != nil {
					nTokens++
					var toks []string
					for _, id := range c.IDs {
						tok, _ := tk.IDToToken(id)
						toks = append(toks, tok)
					}
					if len(c.Tokens) == 0 && len(toks) == 0 || reflect.DeepEqual(toks, c.Tokens) {
						okTokens++
					} else {
						t.Errorf("%s tokens:\n got %q\nwant %q", c.Name, toks, c.Tokens)
					}
				}
				if c.Decoded != nil {
					nDecoded++
					if got := tk.Decode(c.IDs, false); got == *c.Decoded {
						okDecoded++
					} else {
						t.Errorf("%s decode:\n got %q\nwant %q", c.Name, got, *c.Decoded)
					}
				}
			}
			t.Logf("%s: ids %d/%d, with special %d/%d, tokens %d/%d, decoded %d/%d",
				fam, okIDs, len(cases), okSpecial, nSpecial, okTokens, nTokens, okDecoded, nDecoded)
		})
	}
}
