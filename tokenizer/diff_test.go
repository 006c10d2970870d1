package tokenizer

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testdata/diff.json.gz comes from scripts/gen-tokenizer-diff.sh: a corpus
// of tricky strings and, per tokenizer, a 32-bit FNV-1a hash of the
// reference's (HF Rust's; gpt-3-encoder's for gpt2) ids, ids with special
// tokens and both decodes of every string.
type diffData struct {
	Corpus []string          `json:"corpus"`
	Hashes map[string]string `json:"hashes"`
}

func readDiff(t testing.TB) *diffData {
	f, err := os.Open(filepath.Join("testdata", "diff.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var d diffData
	if err := json.NewDecoder(z).Decode(&d); err != nil {
		t.Fatal(err)
	}
	return &d
}

func joinInts(ids []int) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, id)
	}
	return b.String()
}

func diffHash(tk *Tokenizer, s string) (string, string, error) {
	ids, err := tk.EncodeIDs(s, false)
	if err != nil {
		return "", "", err
	}
	special, err := tk.EncodeIDs(s, true)
	if err != nil {
		return "", "", err
	}
	key := joinInts(ids) + "|" + joinInts(special) + "|" + tk.Decode(ids, false) + "|" + tk.Decode(ids, true)
	h := fnv.New32a()
	h.Write([]byte(key))
	return fmt.Sprintf("%08x", h.Sum32()), key, nil
}

// diffTokenizer loads a tokenizer of the differential test: the real
// ones and the variants scripts/tokenizer-variants.mjs derives.
func diffTokenizer(t testing.TB, name string) *Tokenizer {
	for _, f := range families {
		if f == name {
			return realTokenizer(t, name)
		}
	}
	loadMu.Lock()
	defer loadMu.Unlock()
	if tk, ok := loaded[name]; ok {
		return tk
	}
	path := filepath.Join(cacheDir(), name, "tokenizer.json")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: run `make setup` (scripts/fetch-tokenizers.sh): %v", path, err)
	}
	tk, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	loaded[name] = tk
	return tk
}

func TestDifferential(t *testing.T) {
	d := readDiff(t)
	if len(d.Hashes) < 14 || len(d.Corpus) < 10000 {
		t.Fatalf("diff data has %d tokenizers and %d strings", len(d.Hashes), len(d.Corpus))
	}
	names := make([]string, 0, len(d.Hashes))
	for name := range d.Hashes {
		names = append(names, name)
	}
	for _, name := range names {
		want := d.Hashes[name]
		t.Run(name, func(t *testing.T) {
			if len(want) != 8*len(d.Corpus) {
				t.Fatalf("%d hash digits for %d strings", len(want), len(d.Corpus))
			}
			tk := diffTokenizer(t, name)
			ok, shown := 0, 0
			for i, s := range d.Corpus {
				got, key, err := diffHash(tk, s)
				if err == nil && got == want[8*i:8*i+8] {
					ok++
					continue
				}
				if shown++; shown <= 5 {
					t.Errorf("string %d %q: %v\n got %s\n(scripts/gen-tokenizer-diff.sh --show %s %d prints the reference)", i, s, err, key, name, i)
				}
			}
			t.Logf("%s: %d/%d agree", name, ok, len(d.Corpus))
		})
	}
}
