package tokenizer_test

import (
	"fmt"

	"github.com/gopeft/peft/tokenizer"
)

// A real tokenizer.json comes from a model folder (tokenizer.Load); this
// one is small enough to write inline. HF's tokenizers gives the same ids.
const tinyJSON = `{
  "version": "1.0",
  "added_tokens": [{"id": 0, "content": "<s>", "special": true, "single_word": false,
                    "lstrip": false, "rstrip": false, "normalized": false}],
  "pre_tokenizer": {"type": "Whitespace"},
  "post_processor": {
    "type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
             {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}
  },
  "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
  "model": {
    "type": "BPE",
    "vocab": {"<s>": 0, "h": 1, "e": 2, "l": 3, "o": 4, "w": 5, "r": 6, "d": 7, "!": 8,
              "he": 9, "ll": 10, "hell": 11, "hello": 12, "or": 13, "wor": 14, "worl": 15, "world": 16},
    "merges": ["h e", "l l", "he ll", "hell o", "o r", "w or", "wor l", "worl d"]
  }
}`

func Example() {
	tk, err := tokenizer.FromJSON([]byte(tinyJSON))
	if err != nil {
		panic(err)
	}
	ids, err := tk.EncodeIDs("hello world!", true)
	if err != nil {
		panic(err)
	}
	fmt.Println(ids)
	fmt.Println(tk.Decode(ids, false))
	fmt.Println(tk.Decode(ids, true))

	// Batches: padded to the longest, with attention masks.
	batch, err := tk.WithPadding(&tokenizer.Padding{PadID: 0, PadToken: "<s>"}).EncodeBatch([]string{"hello", "hello world"}, true)
	if err != nil {
		panic(err)
	}
	for _, e := range batch {
		fmt.Println(e.IDs, e.AttentionMask)
	}
	// Output:
	// [0 12 16 8]
	// <s> hello world!
	// hello world!
	// [0 12 0] [1 1 0]
	// [0 12 16] [1 1 1]
}

func ExampleDecodeStream() {
	tk, err := tokenizer.FromJSON([]byte(tinyJSON))
	if err != nil {
		panic(err)
	}
	s := tk.NewDecodeStream(true)
	for _, id := range []int{0, 12, 16, 8} {
		if text, ok := s.Step(id); ok {
			fmt.Printf("%q\n", text)
		}
	}
	// Output:
	// "hello"
	// " world"
	// "!"
}
