package data

// Tokenizer is what the data package needs of a tokenizer: text to ids
// and the ids of its special tokens. The library's tokenizer package
// provides one through FromTokenizer; tests use small fakes.
type Tokenizer interface {
	// Encode returns the token ids of text. addSpecialTokens asks for the
	// tokenizer's post-processing (a BOS in front, …); the data package
	// always passes false and places BOS/EOS itself, as templates say.
	Encode(text string, addSpecialTokens bool) ([]int, error)
	// SpecialTokens reports the BOS, EOS and PAD ids (-1 for none).
	SpecialTokens() SpecialTokens
}

// SpecialTokens are a tokenizer's special ids; -1 means the tokenizer has
// no such token.
type SpecialTokens struct {
	BOS, EOS, PAD int
}

// PadID is the id that pads batches: PAD, else EOS (HF's usual
// pad_token = eos_token), else 0. Padded positions have attention mask 0
// and label -100, so its value never reaches the loss.
func (t SpecialTokens) PadID() int64 {
	switch {
	case t.PAD >= 0:
		return int64(t.PAD)
	case t.EOS >= 0:
		return int64(t.EOS)
	}
	return 0
}

// ChatTemplater is implemented by tokenizers that render their own chat
// template (HF's apply_chat_template). The "tokenizer" template uses it.
type ChatTemplater interface {
	// ApplyChatTemplate renders msgs (roles "system", "user",
	// "assistant"); addGenerationPrompt appends the assistant header that
	// starts a reply.
	ApplyChatTemplate(msgs []Message, addGenerationPrompt bool) (string, error)
}

// Message is one message of a chat (OpenAI's layout).
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}
