package tokenizer

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// benchText is the text of scripts/bench-tokenizers.sh (GOPEFT_TOKBENCH_TEXT)
// or, without it, the differential corpus.
func benchText(t testing.TB) string {
	if p := os.Getenv("GOPEFT_TOKBENCH_TEXT"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	return strings.Join(readDiff(t).Corpus, "\n")
}

// TestThroughput prints encode MB/s in the modes of
// scripts/bench-tokenizers.cjs; it runs only under
// scripts/bench-tokenizers.sh (GOPEFT_TOKBENCH=name,name,...).
func TestThroughput(t *testing.T) {
	names := os.Getenv("GOPEFT_TOKBENCH")
	if names == "" {
		t.Skip("set GOPEFT_TOKBENCH (scripts/bench-tokenizers.sh) to measure throughput")
	}
	text := benchText(t)
	lines := strings.Split(text, "\n")
	mb := float64(len(text)) / 1e6
	for _, name := range strings.Split(names, ",") {
		for _, mode := range []string{"lines", "batch", "whole"} {
			// A fresh tokenizer per mode, so pass 1 is cold.
			loadMu.Lock()
			delete(loaded, name)
			loadMu.Unlock()
			tk := diffTokenizer(t, name)
			var rates []string
			n := 0
			for pass := 0; pass < 2; pass++ {
				start := time.Now()
				n = 0
				switch mode {
				case "lines":
					for _, l := range lines {
						ids, err := tk.EncodeIDs(l, false)
						if err != nil {
							t.Fatal(err)
						}
						n += len(ids)
					}
				case "batch":
					for i := 0; i < len(lines); i += 1024 {
						encs, err := tk.EncodeBatch(lines[i:min(i+1024, len(lines))], false)
						if err != nil {
							t.Fatal(err)
						}
						for _, e := range encs {
							n += len(e.IDs)
						}
					}
				case "whole":
					ids, err := tk.EncodeIDs(text, false)
					if err != nil {
						t.Fatal(err)
					}
					n = len(ids)
				}
				rates = append(rates, fmt.Sprintf("%.2f", mb/time.Since(start).Seconds()))
			}
			fmt.Printf("go %s %s %s MB/s (%d tokens)\n", name, mode, strings.Join(rates, " "), n)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	text := benchText(b)
	lines := strings.Split(text, "\n")
	for _, name := range []string{"qwen3", "llama3", "llama2", "gemma3", "gpt2"} {
		tk := realTokenizer(b, name)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for i := 0; i < b.N; i++ {
				for _, l := range lines {
					if _, err := tk.EncodeIDs(l, false); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
