package data

import (
	"strings"
)

// fakeTok is a byte-level tokenizer for tests: every byte b is id 100+b,
// except the added tokens below, which are split out first (as HF's
// added_tokens are). BOS 1, EOS 2, PAD 0 unless changed.
type fakeTok struct {
	sp    SpecialTokens
	calls int
}

var added = map[string]int{
	"<|im_start|>": 3, "<|im_end|>": 4, "<|start_header_id|>": 5, "<|end_header_id|>": 6, "<|eot_id|>": 7,
}

func newFake() *fakeTok { return &fakeTok{sp: SpecialTokens{BOS: 1, EOS: 2, PAD: 0}} }

func (f *fakeTok) Encode(text string, addSpecial bool) ([]int, error) {
	f.calls++
	var out []int
	if addSpecial && f.sp.BOS >= 0 {
		out = append(out, f.sp.BOS)
	}
	for len(text) > 0 {
		matched := false
		for tok, id := range added {
			if strings.HasPrefix(text, tok) {
				out = append(out, id)
				text = text[len(tok):]
				matched = true
				break
			}
		}
		if !matched {
			out = append(out, 100+int(text[0]))
			text = text[1:]
		}
	}
	return out, nil
}

func (f *fakeTok) SpecialTokens() SpecialTokens { return f.sp }

// b is the fake tokenizer's ids of plain text (no added tokens), built
// independently of it: 100 + each byte.
func b(s string) []int64 {
	out := make([]int64, len(s))
	for i := 0; i < len(s); i++ {
		out[i] = 100 + int64(s[i])
	}
	return out
}

// cat concatenates id lists (ints or []int64).
func cat(parts ...any) []int64 {
	var out []int64
	for _, p := range parts {
		switch v := p.(type) {
		case int:
			out = append(out, int64(v))
		case []int64:
			out = append(out, v...)
		default:
			panic("cat: bad part")
		}
	}
	return out
}

// masked is n labels of -100.
func masked(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = -100
	}
	return out
}

func onesN(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = 1
	}
	return out
}
