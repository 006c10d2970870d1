package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// tokenizerCache is where scripts/fetch-tokenizers.sh (make setup) puts
// the real tokenizer files.
func tokenizerCache() string {
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

// The CLI contract on the golden ids of testdata/tokenizers:
// every case, with and without special tokens, in one run each.
func TestTokenizeCommandGolden(t *testing.T) {
	for _, fam := range []string{"qwen3", "llama3", "llama2", "gemma3", "gpt2"} {
		t.Run(fam, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "tokenizers", fam+".json"))
			require.NoError(t, err, "golden fixtures expected at testdata/tokenizers")
			var f struct {
				Cases []struct {
					Text           string `json:"text"`
					IDs            []int  `json:"ids"`
					IDsWithSpecial []int  `json:"ids_with_special"`
				} `json:"cases"`
			}
			require.NoError(t, json.Unmarshal(data, &f))
			path := filepath.Join(tokenizerCache(), fam, "tokenizer.json")
			if fam == "gpt2" {
				path = filepath.Join(tokenizerCache(), fam, "encoder.json")
			}
			_, err = os.Stat(path)
			require.NoError(t, err, "run `make setup` to fetch the tokenizer files")

			var in bytes.Buffer
			for _, c := range f.Cases {
				b, _ := json.Marshal(c.Text)
				in.Write(b)
				in.WriteByte('\n')
			}
			for _, special := range []bool{false, true} {
				if special && fam == "gpt2" {
					continue // gpt2.json has no ids_with_special
				}
				args := []string{"--tokenizer", path}
				if special {
					args = append(args, "--add-special-tokens")
				}
				var out, stderr bytes.Buffer
				require.NoError(t, tokenize(args, &out, bytes.NewReader(in.Bytes()), &stderr), stderr.String())
				lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
				require.Len(t, lines, len(f.Cases))
				for i, c := range f.Cases {
					want := c.IDs
					if special {
						want = c.IDsWithSpecial
					}
					if want == nil {
						want = []int{}
					}
					wantLine, _ := json.Marshal(want)
					require.Equal(t, string(wantLine), lines[i], "case %d %q (special %v)", i, c.Text, special)
				}
			}
		})
	}
}

func TestTokenizeCommandErrors(t *testing.T) {
	var out, stderr bytes.Buffer
	err := tokenize(nil, &out, strings.NewReader(""), &stderr)
	require.ErrorContains(t, err, "--tokenizer is required")

	err = tokenize([]string{"--tokenizer", filepath.Join(t.TempDir(), "missing.json")}, &out, strings.NewReader(""), &stderr)
	require.Error(t, err)

	dir := t.TempDir()
	bad := filepath.Join(dir, "tokenizer.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"model": {"type": "Unigram", "vocab": []}}`), 0o644))
	err = tokenize([]string{"--tokenizer", bad}, &out, strings.NewReader(""), &stderr)
	require.ErrorContains(t, err, "model.type")

	good := filepath.Join(dir, "good", "tokenizer.json")
	require.NoError(t, os.MkdirAll(filepath.Dir(good), 0o755))
	require.NoError(t, os.WriteFile(good, []byte(`{"model": {"type": "WordLevel", "vocab": {"a": 0, "b": 1, "<unk>": 2}, "unk_token": "<unk>"},
		"pre_tokenizer": {"type": "WhitespaceSplit"}}`), 0o644))
	out.Reset()
	require.NoError(t, tokenize([]string{"--tokenizer", good}, &out, strings.NewReader("\"a b c\"\n\"\"\r\n\"b\""), &stderr))
	require.Equal(t, "[0,1,2]\n[]\n[1]\n", out.String())

	err = tokenize([]string{"--tokenizer", good}, &out, strings.NewReader("\"a\"\nnot json\n"), &stderr)
	require.ErrorContains(t, err, "line 2")
	err = tokenize([]string{"--tokenizer", good, "extra"}, &out, strings.NewReader(""), &stderr)
	require.ErrorContains(t, err, "unexpected argument")
}

func TestUsageListsTokenize(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run([]string{"help"}, &out, &bytes.Buffer{}))
	require.Contains(t, out.String(), "tokenize --tokenizer")
}
