package data_test

import (
	"fmt"

	"github.com/gopeft/peft/data"
)

// words is a toy tokenizer: one id per known word, BOS 1, EOS 2, PAD 0.
type words map[string]int

func (w words) Encode(text string, _ bool) ([]int, error) {
	var ids []int
	for _, f := range splitWords(text) {
		id, ok := w[f]
		if !ok {
			return nil, fmt.Errorf("unknown word %q", f)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func (words) SpecialTokens() data.SpecialTokens { return data.SpecialTokens{BOS: 1, EOS: 2, PAD: 0} }

func splitWords(s string) []string {
	var out []string
	cur := ""
	for _, r := range s {
		if r == ' ' || r == '\n' {
			if cur != "" {
				out = append(out, cur)
			}
			cur = ""
			continue
		}
		cur += string(r)
	}
	if cur != "" {
		out = append(out, cur)
	}
	return out
}

// An alpaca record becomes input_ids = prompt + answer + eos with the
// prompt masked in the labels; a collated batch pads on the right.
func ExampleInstructions() {
	tok := words{"Q:": 10, "A:": 11, "2+2?": 12, "4": 13, "1+1?": 14, "equals": 15, "2": 16}
	tmpl, _ := data.NewGoTemplate(data.GoTemplate{User: "Q: {{.User}} A: ", BOS: true, EOS: true})
	recs := []data.Instruction{
		{Instruction: "2+2?", Output: "4"},
		{Instruction: "1+1?", Output: "equals 2"},
	}
	ds, err := data.Instructions(tok, recs, data.Options{Template: tmpl})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range ds.Samples {
		fmt.Println("input_ids", s.InputIDs, "labels", s.Labels)
	}
	b := data.Collator{PadID: ds.PadID}.Collate(ds.Samples)
	fmt.Println("batch", b.Size, "x", b.Len)
	fmt.Println("input_ids     ", b.InputIDs)
	fmt.Println("attention_mask", b.AttentionMask)
	fmt.Println("labels        ", b.Labels)
	// Output:
	// input_ids [1 10 12 11 13 2] labels [-100 -100 -100 -100 13 2]
	// input_ids [1 10 14 11 15 16 2] labels [-100 -100 -100 -100 15 16 2]
	// batch 2 x 7
	// input_ids      [1 10 12 11 13 2 0 1 10 14 11 15 16 2]
	// attention_mask [1 1 1 1 1 1 0 1 1 1 1 1 1 1]
	// labels         [-100 -100 -100 -100 13 2 -100 -100 -100 -100 -100 15 16 2]
}

// The two multi-turn strategies on one ChatML (Qwen) dialogue, with one
// token per byte: AllTurns learns both answers ("hello<|im_end|>",
// "ciao<|im_end|>": 15 + 14 tokens) in one sample; PerTurn makes a sample
// per answer and learns only that one.
func ExampleConversations() {
	c, _ := data.FromMessages([]data.Message{
		{Role: "user", Content: "hi"}, {Role: "assistant", Content: "hello"},
		{Role: "user", Content: "bye"}, {Role: "assistant", Content: "ciao"},
	})
	chars := charTok{}
	tmpl, _ := data.TemplateByName("chatml")
	for _, st := range []data.Strategy{data.AllTurns, data.PerTurn} {
		ds, _ := data.Conversations(chars, []data.Conversation{c}, data.Options{Template: tmpl, MultiTurn: st})
		for _, s := range ds.Samples {
			fmt.Printf("strategy %d: %d tokens, %d learned\n", st, len(s.InputIDs), s.Targets())
		}
	}
	// Output:
	// strategy 0: 135 tokens, 29 learned
	// strategy 1: 67 tokens, 15 learned
	// strategy 1: 135 tokens, 14 learned
}

// charTok is one id per byte.
type charTok struct{}

func (charTok) Encode(text string, _ bool) ([]int, error) {
	ids := make([]int, len(text))
	for i := range ids {
		ids[i] = int(text[i])
	}
	return ids, nil
}

func (charTok) SpecialTokens() data.SpecialTokens { return data.SpecialTokens{BOS: -1, EOS: 2, PAD: 0} }
