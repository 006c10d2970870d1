package data

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

func build(t *testing.T, tok Tokenizer, convs []Conversation, opts Options) *Dataset {
	t.Helper()
	ds, err := Conversations(tok, convs, opts)
	require.NoError(t, err)
	return ds
}

func tmpl(t *testing.T, name string) Template {
	tp, err := TemplateByName(name)
	require.NoError(t, err)
	return tp
}

// Alpaca: <bos> + system + instruction/input/response headers, the answer,
// <eos>; labels -100 over everything before the answer.
func TestAlpacaInstruction(t *testing.T) {
	recs := []Instruction{
		{Instruction: "Add.", Input: "2+2", Output: "4"},
		{Instruction: "Say hi.", Output: "hi"},
	}
	ds, err := Instructions(newFake(), recs, Options{})
	require.NoError(t, err)
	require.Len(t, ds.Samples, 2)

	p0 := cat(1, b(AlpacaInputSystem+"\n\n"+"### Instruction:\nAdd.\n\n### Input:\n2+2\n\n### Response:\n"))
	s := ds.Samples[0]
	require.Equal(t, cat(p0, b("4"), 2), s.InputIDs)
	require.Equal(t, cat(masked(len(p0)), b("4"), 2), s.Labels)
	require.Equal(t, onesN(len(p0)+2), s.AttentionMask)

	p1 := cat(1, b(AlpacaSystem+"\n\n"+"### Instruction:\nSay hi.\n\n### Response:\n"))
	s = ds.Samples[1]
	require.Equal(t, cat(p1, b("hi"), 2), s.InputIDs)
	require.Equal(t, cat(masked(len(p1)), b("hi"), 2), s.Labels)
	require.Equal(t, 3, s.Targets())
}

// An alpaca record's system and history become a system prompt and
// earlier turns; with ChatML the input is appended to the instruction.
func TestAlpacaHistoryWithChatML(t *testing.T) {
	recs := []Instruction{{System: "S", History: [][2]string{{"q1", "a1"}}, Instruction: "q2", Input: "in", Output: "a2"}}
	ds, err := Instructions(newFake(), recs, Options{Template: tmpl(t, "chatml")})
	require.NoError(t, err)
	sys := cat(3, b("system\nS"), 4, b("\n"))
	u1 := cat(3, b("user\nq1"), 4, b("\n"), 3, b("assistant\n"))
	a1 := cat(b("a1"), 4)
	u2 := cat(b("\n"), 3, b("user\nq2\nin"), 4, b("\n"), 3, b("assistant\n"))
	a2 := cat(b("a2"), 4)
	s := ds.Samples[0]
	require.Equal(t, cat(sys, u1, a1, u2, a2), s.InputIDs)
	require.Equal(t, cat(masked(len(sys)+len(u1)), a1, masked(len(u2)), a2), s.Labels)
}

func dialogue() Conversation {
	c, err := FromMessages([]Message{
		{Role: "system", Content: "Be brief."},
		{Role: "user", Content: "Hi"}, {Role: "assistant", Content: "Hello"},
		{Role: "user", Content: "Bye"}, {Role: "assistant", Content: "Ciao"},
	})
	if err != nil {
		panic(err)
	}
	return c
}

// The two multi-turn strategies of the seed notes on a Qwen (ChatML)
// dialogue: one sample with both answers learned, or one sample per
// answer with only that answer learned.
func TestMultiTurnStrategies(t *testing.T) {
	sys := cat(3, b("system\nBe brief."), 4, b("\n"))
	u1 := cat(3, b("user\nHi"), 4, b("\n"), 3, b("assistant\n"))
	a1 := cat(b("Hello"), 4)
	u2 := cat(b("\n"), 3, b("user\nBye"), 4, b("\n"), 3, b("assistant\n"))
	a2 := cat(b("Ciao"), 4)

	all := build(t, newFake(), []Conversation{dialogue()}, Options{Template: tmpl(t, "chatml")})
	require.Len(t, all.Samples, 1)
	require.Equal(t, cat(sys, u1, a1, u2, a2), all.Samples[0].InputIDs)
	require.Equal(t, cat(masked(len(sys)+len(u1)), a1, masked(len(u2)), a2), all.Samples[0].Labels)

	per := build(t, newFake(), []Conversation{dialogue()}, Options{Template: tmpl(t, "chatml"), MultiTurn: PerTurn})
	require.Len(t, per.Samples, 2)
	require.Equal(t, cat(sys, u1, a1), per.Samples[0].InputIDs)
	require.Equal(t, cat(masked(len(sys)+len(u1)), a1), per.Samples[0].Labels)
	require.Equal(t, cat(sys, u1, a1, u2, a2), per.Samples[1].InputIDs)
	require.Equal(t, cat(masked(len(sys)+len(u1)+len(a1)+len(u2)), a2), per.Samples[1].Labels)
}

func TestQwenDefaultSystem(t *testing.T) {
	c := Conversation{Turns: []Turn{{User: "Hi", Assistant: "Yo"}}}
	ds := build(t, newFake(), []Conversation{c}, Options{Template: tmpl(t, "qwen")})
	sys := cat(3, b("system\n"+QwenSystem), 4, b("\n"))
	u := cat(3, b("user\nHi"), 4, b("\n"), 3, b("assistant\n"))
	require.Equal(t, cat(sys, u, b("Yo"), 4), ds.Samples[0].InputIDs)
	// Options.System replaces the default for records without one
	ds = build(t, newFake(), []Conversation{c}, Options{Template: tmpl(t, "qwen"), System: "X"})
	require.Equal(t, cat(3, b("system\nX"), 4, b("\n"), u, b("Yo"), 4), ds.Samples[0].InputIDs)
}

func TestLlama3Template(t *testing.T) {
	ds := build(t, newFake(), []Conversation{dialogue()}, Options{Template: tmpl(t, "llama3")})
	hdr := func(role string) []int64 { return cat(5, b(role), 6, b("\n\n")) }
	p1 := cat(1, hdr("system"), b("Be brief."), 7, hdr("user"), b("Hi"), 7, hdr("assistant"))
	a1 := cat(b("Hello"), 7)
	p2 := cat(hdr("user"), b("Bye"), 7, hdr("assistant"))
	a2 := cat(b("Ciao"), 7)
	require.Equal(t, cat(p1, a1, p2, a2), ds.Samples[0].InputIDs)
	require.Equal(t, cat(masked(len(p1)), a1, masked(len(p2)), a2), ds.Samples[0].Labels)
}

func TestLlama2Template(t *testing.T) {
	ds := build(t, newFake(), []Conversation{dialogue()}, Options{Template: tmpl(t, "llama2")})
	p1 := cat(1, b("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]"))
	a1 := cat(b("Hello"), 2)
	p2 := cat(1, b("[INST] Bye [/INST]"))
	a2 := cat(b("Ciao"), 2)
	require.Equal(t, cat(p1, a1, p2, a2), ds.Samples[0].InputIDs)
	require.Equal(t, cat(masked(len(p1)), a1, masked(len(p2)), a2), ds.Samples[0].Labels)
}

func TestGoTemplate(t *testing.T) {
	gt, err := NewGoTemplate(GoTemplate{
		System: "<<{{.System}}>>",
		User:   "Q{{.Index}}: {{.User}}{{if .Input}} ({{.Input}}){{end}}\nA: ",
		BOS:    true, EOS: true,
	})
	require.NoError(t, err)
	recs := []Instruction{{System: "s", Instruction: "x", Input: "y", Output: "z"}}
	ds, err := Instructions(newFake(), recs, Options{Template: gt})
	require.NoError(t, err)
	p := cat(1, b("<<s>>"), b("Q0: x (y)\nA: "))
	require.Equal(t, cat(p, b("z"), 2), ds.Samples[0].InputIDs)
	require.Equal(t, cat(masked(len(p)), b("z"), 2), ds.Samples[0].Labels)

	_, err = NewGoTemplate(GoTemplate{User: "{{.Nope"})
	require.ErrorContains(t, err, "GoTemplate User")
	_, err = Instructions(newFake(), recs, Options{Template: &GoTemplate{User: "{{.Missing}}"}})
	require.ErrorContains(t, err, "Missing")
}

// A tokenizer that renders its own chat template: segments come from
// rendering growing prefixes of the conversation.
type chatMLRenderer struct{ *fakeTok }

func (chatMLRenderer) ApplyChatTemplate(msgs []Message, gen bool) (string, error) {
	var sb strings.Builder
	for _, m := range msgs {
		sb.WriteString("<|im_start|>" + m.Role + "\n" + m.Content + "<|im_end|>\n")
	}
	if gen {
		sb.WriteString("<|im_start|>assistant\n")
	}
	return sb.String(), nil
}

func TestTokenizerChatTemplate(t *testing.T) {
	tok := chatMLRenderer{newFake()}
	ds := build(t, tok, []Conversation{dialogue()}, Options{Template: ChatTemplate{T: tok}})
	p1 := cat(3, b("system\nBe brief."), 4, b("\n"), 3, b("user\nHi"), 4, b("\n"), 3, b("assistant\n"))
	a1 := cat(b("Hello"), 4, b("\n")) // the renderer's newline after <|im_end|> is part of the answer
	p2 := cat(3, b("user\nBye"), 4, b("\n"), 3, b("assistant\n"))
	a2 := cat(b("Ciao"), 4, b("\n"))
	require.Equal(t, cat(p1, a1, p2, a2), ds.Samples[0].InputIDs)
	require.Equal(t, cat(masked(len(p1)), a1, masked(len(p2)), a2), ds.Samples[0].Labels)
}

// The generation prompt ends with the assistant header of the last turn.
func TestPromptForGeneration(t *testing.T) {
	c := dialogue()
	ids, err := Prompt(newFake(), tmpl(t, "chatml"), c)
	require.NoError(t, err)
	want := cat(3, b("system\nBe brief."), 4, b("\n"), 3, b("user\nHi"), 4, b("\n"), 3, b("assistant\n"),
		b("Hello"), 4, b("\n"), 3, b("user\nBye"), 4, b("\n"), 3, b("assistant\n"))
	require.Equal(t, want, ids)
}

// raw template: <bos> user answer <eos>, so lengths are easy to count.
func raw(user, ans string) Conversation {
	return Conversation{Turns: []Turn{{User: user, Assistant: ans}}}
}

// KeepAnswer: the answer stays whole when it fits in MaxLength minus at
// most half for the prompt; the prompt keeps its head and its tail.
func TestTruncationKeepsTheAnswer(t *testing.T) {
	opts := Options{Template: tmpl(t, "raw"), MaxLength: 8}
	// prompt = <bos> abcdefghi (10), answer = xyz <eos> (4): 4 + 4
	ds := build(t, newFake(), []Conversation{raw("abcdefghi", "xyz")}, opts)
	s := ds.Samples[0]
	require.Equal(t, cat(1, b("a"), b("hi"), b("xyz"), 2), s.InputIDs)
	require.Equal(t, cat(masked(4), b("xyz"), 2), s.Labels)
	require.Equal(t, 1, ds.Stats.Truncated)

	// an answer longer than MaxLength/2 gives the prompt half and loses its end
	ds = build(t, newFake(), []Conversation{raw("abcdefghi", "0123456789")}, opts)
	require.Equal(t, cat(1, b("a"), b("hi"), b("0123")), ds.Samples[0].InputIDs)
	require.Equal(t, cat(masked(4), b("0123")), ds.Samples[0].Labels)

	// a short prompt leaves the answer the rest: prompt 3, answer 5 of 11
	ds = build(t, newFake(), []Conversation{raw("ab", "0123456789")}, opts)
	require.Equal(t, cat(1, b("ab"), b("01234")), ds.Samples[0].InputIDs)

	// samples within MaxLength are untouched
	ds = build(t, newFake(), []Conversation{raw("ab", "xy")}, opts)
	require.Equal(t, cat(1, b("ab"), b("xy"), 2), ds.Samples[0].InputIDs)
	require.Equal(t, 0, ds.Stats.Truncated)
}

// KeepAnswer drops the oldest exchanges of a long conversation first.
func TestTruncationDropsOldestTurns(t *testing.T) {
	c := Conversation{Turns: []Turn{{User: "aaaa", Assistant: "bbbb"}, {User: "cc", Assistant: "dd"}}}
	ds := build(t, newFake(), []Conversation{c}, Options{Template: tmpl(t, "raw"), MaxLength: 10})
	require.Equal(t, cat(1, b("cc"), b("dd"), 2), ds.Samples[0].InputIDs)
	require.Equal(t, cat(masked(3), b("dd"), 2), ds.Samples[0].Labels)
	// PerTurn: the second sample keeps its own answer as the one learned
	ds = build(t, newFake(), []Conversation{c}, Options{Template: tmpl(t, "raw"), MaxLength: 10, MultiTurn: PerTurn})
	require.Len(t, ds.Samples, 2)
	require.Equal(t, cat(1, b("aaaa"), b("bbbb"), 2), ds.Samples[0].InputIDs)
	require.Equal(t, cat(masked(3), b("dd"), 2), ds.Samples[1].Labels)
}

func TestTruncateRight(t *testing.T) {
	opts := Options{Template: tmpl(t, "raw"), MaxLength: 6, Truncation: TruncateRight}
	ds := build(t, newFake(), []Conversation{raw("ab", "wxyz")}, opts)
	require.Equal(t, cat(1, b("ab"), b("wxy")), ds.Samples[0].InputIDs)
	require.Equal(t, cat(masked(3), b("wxy")), ds.Samples[0].Labels)

	// the prompt fills MaxLength: nothing left to learn
	bad := raw("abcdefgh", "z")
	bad.Source = "train.jsonl:3"
	_, err := Conversations(newFake(), []Conversation{raw("ab", "c"), bad}, opts)
	require.ErrorIs(t, err, ErrNothingToLearn)
	require.ErrorContains(t, err, "train.jsonl:3: nothing left to learn")
	require.ErrorContains(t, err, "1 of 2 records")

	opts.SkipInvalid = true
	ds = build(t, newFake(), []Conversation{raw("ab", "c"), bad}, opts)
	require.Len(t, ds.Samples, 1)
	require.Equal(t, 1, ds.Stats.Skipped)
	require.Equal(t, map[string]int{"nothing to learn": 1}, ds.Stats.SkipReasons)
}

func writeFile(t *testing.T, name, content string) string {
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

// Bad records: per-record errors naming file and line, or counted skips.
func TestBadRecords(t *testing.T) {
	p := writeFile(t, "alpaca.jsonl", `{"instruction": "a", "output": "b"}

{"instruction": "c"}
{"instruction": "d", "output": ""}
{"instruction": "e", "input": "f", "output": "g"}
`)
	recs, err := ReadInstructions(p)
	require.NoError(t, err)
	require.Len(t, recs, 4)
	_, err = Instructions(newFake(), recs, Options{})
	require.ErrorContains(t, err, `alpaca.jsonl:3: missing "output"`)
	require.ErrorContains(t, err, `alpaca.jsonl:4: empty "output"`)
	var re *RecordError
	require.True(t, errors.As(err, &re))
	require.Equal(t, "alpaca.jsonl:3", re.Source)

	ds, err := Instructions(newFake(), recs, Options{SkipInvalid: true})
	require.NoError(t, err)
	require.Len(t, ds.Samples, 2)
	require.Equal(t, Stats{Records: 4, Samples: 2, Skipped: 2, SkipReasons: map[string]int{"invalid record": 2}, Errors: ds.Stats.Errors}, ds.Stats)
	require.Len(t, ds.Stats.Errors, 2)

	// malformed JSON fails the read with the line
	_, err = ReadInstructions(writeFile(t, "x.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n{oops}\n"))
	require.ErrorContains(t, err, "x.jsonl:2")
	_, err = ReadInstructions(writeFile(t, "y.json", `[{"instruction": 3, "output": "b"}]`))
	require.ErrorContains(t, err, `y.json[0]: field "instruction": want a string`)

	convs, err := ReadConversations(writeFile(t, "chat.jsonl", `{"conversations": []}
{"messages": [{"role": "assistant", "content": "x"}]}
{"messages": [{"role": "user", "content": "x"}]}
{"conversations": [{"from": "bot", "value": "x"}]}
{"something": 1}
{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
`))
	require.NoError(t, err)
	_, err = Conversations(newFake(), convs, Options{})
	for _, want := range []string{
		"chat.jsonl:1: empty conversation",
		`chat.jsonl:2: message 0: role "assistant" where a user message was expected`,
		"chat.jsonl:3: message 0: the conversation ends with a user message",
		`chat.jsonl:4: conversations[0]: unknown "from" "bot"`,
		`chat.jsonl:5: neither "conversations" (ShareGPT) nor "messages" (OpenAI)`,
		"5 of 6 records",
	} {
		require.ErrorContains(t, err, want)
	}
	ds, err = Conversations(newFake(), convs, Options{SkipInvalid: true})
	require.NoError(t, err)
	require.Len(t, ds.Samples, 1)
	require.Equal(t, 5, ds.Stats.SkipReasons["invalid record"])
}

// ShareGPT and OpenAI layouts, JSON array and JSONL, read to the same
// conversation.
func TestConversationLayouts(t *testing.T) {
	share := writeFile(t, "sharegpt.json", `[{"system": "Be brief.", "conversations": [
		{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
		{"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Ciao"}]}]`)
	openai := writeFile(t, "openai.jsonl", `{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ciao"}]}`+"\n")
	a, err := ReadConversations(share)
	require.NoError(t, err)
	o, err := ReadConversations(openai)
	require.NoError(t, err)
	want := dialogue()
	require.Equal(t, want.System, a[0].System)
	require.Equal(t, want.Turns, a[0].Turns)
	require.Equal(t, want.Turns, o[0].Turns)
	require.Equal(t, "sharegpt.json[0]", a[0].Source)
	require.Equal(t, "openai.jsonl:1", o[0].Source)
	require.NoError(t, a[0].Err())
}

func TestTokenizerWithoutEOS(t *testing.T) {
	tok := newFake()
	tok.sp = SpecialTokens{BOS: -1, EOS: -1, PAD: -1}
	_, err := Conversations(tok, []Conversation{raw("a", "b")}, Options{Template: tmpl(t, "raw")})
	require.ErrorContains(t, err, "no EOS token")
	// ChatML ends answers with <|im_end|> text and needs neither
	ds := build(t, tok, []Conversation{raw("a", "b")}, Options{Template: tmpl(t, "chatml")})
	require.Equal(t, int64(0), ds.PadID)
	_, err = TemplateByName("vicuna")
	require.ErrorContains(t, err, `unknown template "vicuna"`)
}

// Collation pads right for training (mask 0, label -100 on padding) and
// left for generation.
func TestCollator(t *testing.T) {
	s1 := Sample{InputIDs: []int64{1, 10, 11, 12}, Labels: []int64{-100, -100, 11, 12}, AttentionMask: onesN(4)}
	s2 := Sample{InputIDs: []int64{1, 20}, Labels: []int64{-100, 20}, AttentionMask: onesN(2)}
	right := Collator{PadID: 0}.Collate([]Sample{s1, s2})
	require.Equal(t, 2, right.Size)
	require.Equal(t, 4, right.Len)
	require.Equal(t, []int64{1, 10, 11, 12, 1, 20, 0, 0}, right.InputIDs)
	require.Equal(t, []int64{1, 1, 1, 1, 1, 1, 0, 0}, right.AttentionMask)
	require.Equal(t, []int64{-100, -100, 11, 12, -100, 20, -100, -100}, right.Labels)
	require.Equal(t, 6, right.Tokens)
	require.Equal(t, 3, right.Targets)

	left := Collator{PadID: 9, Side: PadLeft, PadToMultipleOf: 3}.Collate([]Sample{s1, s2})
	require.Equal(t, 6, left.Len)
	require.Equal(t, []int64{9, 9, 1, 10, 11, 12, 9, 9, 9, 9, 1, 20}, left.InputIDs)
	require.Equal(t, []int64{0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1}, left.AttentionMask)
	require.Equal(t, []int64{-100, -100, -100, -100, 11, 12, -100, -100, -100, -100, -100, 20}, left.Labels)

	// prompts for generation have no labels
	gen := Collator{Side: PadLeft}.Collate([]Sample{{InputIDs: []int64{5}}, {InputIDs: []int64{6, 7}}})
	require.Nil(t, gen.Labels)
	require.Equal(t, []int64{0, 5, 6, 7}, gen.InputIDs)
	require.Equal(t, []int64{0, 1, 1, 1}, gen.AttentionMask)

	s := tensor.NewScope()
	defer s.Close()
	in, err := right.Inputs(s)
	require.NoError(t, err)
	require.Equal(t, []int64{2, 4}, in.Labels.Shape())
	require.Equal(t, right.Labels, s.Int64s(in.Labels))
	require.NoError(t, s.Err())
}

func TestPacking(t *testing.T) {
	convs := []Conversation{raw("a", "b"), raw("cc", "d"), raw("e", "ff")}
	// samples: [1 a b 2] (4), [1 c c d 2] (5), [1 e f f 2] (5); blocks of 9
	ds := build(t, newFake(), convs, Options{Template: tmpl(t, "raw"), MaxLength: 9, Packing: true})
	require.Len(t, ds.Samples, 2)
	require.Equal(t, cat(1, b("ab"), 2, 1, b("ccd"), 2), ds.Samples[0].InputIDs)
	require.Equal(t, cat(masked(2), b("b"), 2, masked(3), b("d"), 2), ds.Samples[0].Labels)
	require.Equal(t, cat(1, b("eff"), 2), ds.Samples[1].InputIDs)
	require.Equal(t, 3, ds.Stats.Samples)
	_, err := Conversations(newFake(), convs, Options{Packing: true})
	require.ErrorContains(t, err, "Packing needs MaxLength")
}

// Seeded shuffling: a permutation fixed by (seed, epoch).
func TestOrder(t *testing.T) {
	a := Order(10, 7, 0, true)
	require.Equal(t, a, Order(10, 7, 0, true))
	require.NotEqual(t, a, Order(10, 7, 1, true))
	require.NotEqual(t, a, Order(10, 8, 0, true))
	seen := map[int]bool{}
	for _, i := range a {
		seen[i] = true
	}
	require.Len(t, seen, 10)
	require.Equal(t, []int{0, 1, 2}, Order(3, 7, 0, false))
	// shuffling is unbiased enough: each of 3 items lands first about 1/3 of the time
	first := map[int]int{}
	for e := 0; e < 3000; e++ {
		first[Order(3, 1, e, true)[0]]++
	}
	for i := 0; i < 3; i++ {
		require.InDelta(t, 1000, first[i], 120, "item %d first", i)
	}
}
