// Command quickstart is what `make demo` runs: it loads a HF-format LLaMA
// checkpoint (by default the tiny golden fixture in ../shared/fixtures/hf),
// prints its module tree and parameter count, then its top next-token
// predictions for a prompt and a short greedy continuation with the KV
// cache.
//
//	go run ./examples/quickstart [-model DIR] [-prompt 1,306,450] [-new 8]
//
// The fixture has no tokenizer in tokenizer.json form yet, so prompts and
// outputs are token ids.
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/gopeft/peft/internal/tensor"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
)

func main() {
	model := flag.String("model", "../shared/fixtures/hf/llama-tiny", "HF LLaMA folder")
	prompt := flag.String("prompt", "1,306,450,263,123,29", "comma-separated token ids")
	newTokens := flag.Int("new", 8, "tokens to generate greedily")
	flag.Parse()
	if err := run(*model, *prompt, *newTokens); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(dir, prompt string, newTokens int) error {
	m, err := llama.Load(dir)
	if err != nil {
		return err
	}
	defer m.Free()
	_, total := nn.CountParams(m)
	fmt.Printf("loaded %s: %d layers, hidden %d, vocab %d, %s params\n\n%s\n\n",
		dir, m.Config.NumHiddenLayers, m.Config.HiddenSize, m.Config.VocabSize, commas(total), nn.Format(m))

	ids, err := parseIDs(prompt, m.Config.VocabSize)
	if err != nil {
		return err
	}
	s := tensor.NoGradScope()
	defer s.Close()
	cache := &models.Cache{}
	defer cache.Free()
	out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, 1, int64(len(ids))), PastKeyValues: cache, UseCache: true})
	if err := s.Err(); err != nil {
		return err
	}
	last := lastRow(s, out.Logits)
	fmt.Printf("prompt ids %v\ntop-5 next tokens:\n", ids)
	for _, c := range topK(softmax(last), 5) {
		fmt.Printf("  id %4d  p=%.4f\n", c.id, c.p)
	}
	gen := []int64{}
	next := argmax(last)
	for i := 0; i < newTokens; i++ {
		gen = append(gen, next)
		out = m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64([]int64{next}, 1, 1), PastKeyValues: cache, UseCache: true})
		if err := s.Err(); err != nil {
			return err
		}
		next = argmax(lastRow(s, out.Logits))
		s.FreeAll()
	}
	fmt.Printf("greedy continuation (%d tokens, KV cache): %v\n", newTokens, gen)
	return s.Err()
}

func lastRow(s *tensor.Scope, logits *tensor.T) []float32 {
	l := logits.Size(1)
	return s.Float32s(s.Select(s.Select(logits, 0, 0), 0, l-1))
}

func parseIDs(text string, vocab int64) ([]int64, error) {
	var ids []int64
	for _, f := range strings.Split(text, ",") {
		v, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil || v < 0 || v >= vocab {
			return nil, fmt.Errorf("prompt: %q is not a token id in [0, %d)", f, vocab)
		}
		ids = append(ids, v)
	}
	return ids, nil
}

type cand struct {
	id int64
	p  float64
}

func softmax(x []float32) []float64 {
	mx := math.Inf(-1)
	for _, v := range x {
		mx = math.Max(mx, float64(v))
	}
	out := make([]float64, len(x))
	var z float64
	for i, v := range x {
		out[i] = math.Exp(float64(v) - mx)
		z += out[i]
	}
	for i := range out {
		out[i] /= z
	}
	return out
}

func topK(p []float64, k int) []cand {
	cs := make([]cand, len(p))
	for i, v := range p {
		cs[i] = cand{int64(i), v}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].p > cs[j].p })
	return cs[:k]
}

func argmax(x []float32) int64 {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return int64(best)
}

func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
