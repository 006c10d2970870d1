package data

import "github.com/gopeft/peft/tokenizer"

// hfTokenizer adapts the library's tokenizer (a HF tokenizer.json) to
// Tokenizer.
type hfTokenizer struct {
	t  *tokenizer.Tokenizer
	sp SpecialTokens
}

// FromTokenizer adapts a loaded HF tokenizer: Encode is its EncodeIDs, and
// the special ids are those of tokenizer_config.json's bos_token,
// eos_token and pad_token (-1 when absent or unknown).
func FromTokenizer(t *tokenizer.Tokenizer) Tokenizer {
	cfg := t.Config()
	id := func(tok string) int {
		if tok == "" {
			return -1
		}
		if i, ok := t.TokenToID(tok); ok {
			return i
		}
		return -1
	}
	return &hfTokenizer{t: t, sp: SpecialTokens{BOS: id(cfg.BOSToken), EOS: id(cfg.EOSToken), PAD: id(cfg.PadToken)}}
}

func (h *hfTokenizer) Encode(text string, addSpecialTokens bool) ([]int, error) {
	return h.t.EncodeIDs(text, addSpecialTokens)
}

func (h *hfTokenizer) SpecialTokens() SpecialTokens { return h.sp }
