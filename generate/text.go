package generate

import (
	"context"
	"fmt"
)

// Tokenizer is what Text needs of a tokenizer; *tokenizer.Tokenizer has it.
type Tokenizer interface {
	EncodeIDs(text string, addSpecialTokens bool) ([]int, error)
	Decode(ids []int, skipSpecialTokens bool) string
}

// Text encodes each prompt (with the tokenizer's special tokens, as HF's
// tokenizer(...) call does), generates, and decodes each row's new tokens
// without special tokens: NumReturnSequences answers per prompt, in order.
func Text(ctx context.Context, m Model, tok Tokenizer, prompts []string, cfg GenerationConfig) ([]string, error) {
	ids := make([][]int64, len(prompts))
	for i, p := range prompts {
		enc, err := tok.EncodeIDs(p, true)
		if err != nil {
			return nil, fmt.Errorf("generate: prompt %d: %w", i, err)
		}
		for _, id := range enc {
			ids[i] = append(ids[i], int64(id))
		}
	}
	var pad int64 // masked out, any id will do
	if cfg.PadTokenID != nil {
		pad = *cfg.PadTokenID
	} else if len(cfg.EOSTokenID) > 0 {
		pad = cfg.EOSTokenID[0]
	}
	out, err := Generate(ctx, m, LeftPad(ids, pad), cfg)
	if err != nil {
		return nil, err
	}
	texts := make([]string, len(out.Sequences))
	for i := range texts {
		gen := out.NewTokens(i)
		if n := len(gen); n > 0 && out.eos.Contains(gen[n-1]) {
			gen = gen[:n-1]
		}
		ints := make([]int, len(gen))
		for j, t := range gen {
			ints[j] = int(t)
		}
		texts[i] = tok.Decode(ints, true)
	}
	return texts, nil
}
