package main

import (
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/gopeft/peft/tokenizer"
)

// Special tokens of the character vocabulary, at ids 0–3.
var specials = []string{"<pad>", "<s>", "</s>", "<unk>"}

// CharTokenizerJSON renders a HF tokenizer.json whose tokens are single
// characters: a BPE model without merges (so every character is its own
// token, unknown ones become <unk>), no normalizer or pre-tokenizer, and the
// Fuse decoder (tokens join without spaces). Python's tokenizers library
// loads it too.
func CharTokenizerJSON(chars []string) ([]byte, error) {
	vocab := map[string]int{}
	var added []map[string]any
	for i, s := range specials {
		vocab[s] = i
		added = append(added, map[string]any{"id": i, "content": s, "single_word": false,
			"lstrip": false, "rstrip": false, "normalized": false, "special": true})
	}
	for _, c := range chars {
		if _, ok := vocab[c]; !ok {
			vocab[c] = len(vocab)
		}
	}
	return json.MarshalIndent(map[string]any{
		"version":        "1.0",
		"truncation":     nil,
		"padding":        nil,
		"added_tokens":   added,
		"normalizer":     nil,
		"pre_tokenizer":  nil,
		"post_processor": nil,
		"decoder":        map[string]any{"type": "Fuse"},
		"model": map[string]any{"type": "BPE", "dropout": nil, "unk_token": "<unk>",
			"continuing_subword_prefix": nil, "end_of_word_suffix": nil, "fuse_unk": false,
			"byte_fallback": false, "vocab": vocab, "merges": []string{}},
	}, "", " ")
}

// WriteCharTokenizer writes tokenizer.json and tokenizer_config.json into
// dir and loads them back through the tokenizer package.
func WriteCharTokenizer(dir string, chars []string) (*tokenizer.Tokenizer, error) {
	tj, err := CharTokenizerJSON(chars)
	if err != nil {
		return nil, err
	}
	cfg, err := json.MarshalIndent(map[string]any{"bos_token": "<s>", "eos_token": "</s>",
		"pad_token": "<pad>", "unk_token": "<unk>", "tokenizer_class": "PreTrainedTokenizerFast",
		"model_max_length": 256}, "", " ")
	if err != nil {
		return nil, err
	}
	for name, b := range map[string][]byte{"tokenizer.json": tj, "tokenizer_config.json": cfg} {
		if err := writeAtomic(filepath.Join(dir, name), b); err != nil {
			return nil, err
		}
	}
	return tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
