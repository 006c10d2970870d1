package data

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"text/template"
)

// Special marks a Segment that is a special token rather than text.
type Special int

const (
	NoSpecial Special = iota
	// BOS is the tokenizer's begin-of-sequence id (left out when the
	// tokenizer has none, as Qwen's).
	BOS
	// EOS is the tokenizer's end-of-sequence id (required).
	EOS
)

// Segment is one piece of a rendered conversation: text (encoded on its
// own) or a special token, and whether it is part of an answer, which the
// loss covers.
type Segment struct {
	Text    string
	Special Special
	// Answer marks the assistant's reply of turn Turn (its text and the
	// end-of-turn token after it); everything else is prompt.
	Answer bool
	// Turn is the index of the exchange (user prompt + assistant answer)
	// the segment belongs to; -1 for what precedes the first one (BOS,
	// a system block).
	Turn int
}

// Template lays a conversation out as segments: the chat format of a
// model family. Segments are tokenized one by one and concatenated, so
// the boundary between prompt and answer is always a token boundary (as
// LLaMA-Factory does; encoding the whole rendered string at once can
// merge tokens across it).
type Template interface {
	Render(c *Conversation) ([]Segment, error)
}

// Turn is one exchange of a conversation: the user's message (with an
// alpaca record's separate input), and the assistant's reply.
type Turn struct {
	User      string
	Input     string // alpaca "input"; templates other than alpaca append it to User after a newline
	Assistant string
}

// userText is the user's message with the alpaca input appended, as
// LLaMA-Factory joins instruction and input.
func (t Turn) userText() string {
	if t.Input == "" {
		return t.User
	}
	return t.User + "\n" + t.Input
}

// Template names, for TemplateByName.
const (
	TemplateAlpaca = "alpaca" // Stanford Alpaca's prompt: "### Instruction:" / "### Input:" / "### Response:"
	TemplateRaw    = "raw"    // no decoration: BOS, [system "\n"], user text, then the answer and EOS
	TemplateChatML = "chatml" // <|im_start|>role\n…<|im_end|>
	TemplateQwen   = "qwen"   // ChatML with Qwen2.5's default system prompt
	TemplateLlama3 = "llama3" // <|start_header_id|>role<|end_header_id|>\n\n…<|eot_id|>
	TemplateLlama2 = "llama2" // <s>[INST] <<SYS>>…<</SYS>> … [/INST] answer </s>
)

// Default system prompts of the built-in templates.
const (
	AlpacaSystem      = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
	AlpacaInputSystem = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request."
	QwenSystem        = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
)

// TemplateByName returns a built-in template: "alpaca", "raw", "chatml",
// "qwen", "llama3" or "llama2".
func TemplateByName(name string) (Template, error) {
	switch name {
	case TemplateAlpaca:
		return alpacaTemplate{}, nil
	case TemplateRaw:
		return rawTemplate{}, nil
	case TemplateChatML:
		return chatMLTemplate{}, nil
	case TemplateQwen:
		return chatMLTemplate{defaultSystem: QwenSystem}, nil
	case TemplateLlama3:
		return llama3Template{}, nil
	case TemplateLlama2:
		return llama2Template{}, nil
	}
	names := []string{TemplateAlpaca, TemplateRaw, TemplateChatML, TemplateQwen, TemplateLlama3, TemplateLlama2}
	sort.Strings(names)
	return nil, fmt.Errorf("data: unknown template %q (known: %s; or a GoTemplate)", name, strings.Join(names, ", "))
}

func text(s string, turn int) Segment      { return Segment{Text: s, Turn: turn} }
func answer(s string, turn int) Segment    { return Segment{Text: s, Answer: true, Turn: turn} }
func special(sp Special, turn int) Segment { return Segment{Special: sp, Turn: turn} }
func answerEOS(turn int) Segment           { return Segment{Special: EOS, Answer: true, Turn: turn} }

// alpacaTemplate is Stanford Alpaca's prompt. The system line is the
// record's, or Alpaca's (the "paired with an input" variant when the first
// turn has an input). Each answer ends with EOS.
//
//	<bos>{system}\n\n### Instruction:\n{user}\n\n[### Input:\n{input}\n\n]### Response:\n{answer}<eos>
//	\n\n### Instruction:\n… (later turns)
type alpacaTemplate struct{}

func (alpacaTemplate) Render(c *Conversation) ([]Segment, error) {
	sys := c.System
	if sys == "" {
		sys = AlpacaSystem
		if len(c.Turns) > 0 && c.Turns[0].Input != "" {
			sys = AlpacaInputSystem
		}
	}
	segs := []Segment{special(BOS, -1), text(sys+"\n\n", -1)}
	for i, t := range c.Turns {
		var p strings.Builder
		if i > 0 {
			p.WriteString("\n\n")
		}
		p.WriteString("### Instruction:\n" + t.User + "\n\n")
		if t.Input != "" {
			p.WriteString("### Input:\n" + t.Input + "\n\n")
		}
		p.WriteString("### Response:\n")
		segs = append(segs, text(p.String(), i), answer(t.Assistant, i), answerEOS(i))
	}
	return segs, nil
}

// rawTemplate adds nothing but BOS, an optional system line and EOS:
//
//	<bos>[{system}\n]{user}{answer}<eos>{user}{answer}<eos>…
type rawTemplate struct{}

func (rawTemplate) Render(c *Conversation) ([]Segment, error) {
	segs := []Segment{special(BOS, -1)}
	if c.System != "" {
		segs = append(segs, text(c.System+"\n", -1))
	}
	for i, t := range c.Turns {
		segs = append(segs, text(t.userText(), i), answer(t.Assistant, i), answerEOS(i))
	}
	return segs, nil
}

// chatMLTemplate is ChatML (Qwen2/2.5, Yi, …); the answer ends with
// <|im_end|> (Qwen's EOS for chat), and the newline after it opens the
// next turn's prompt. No BOS.
//
//	<|im_start|>system\n{system}<|im_end|>\n
//	<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>
type chatMLTemplate struct{ defaultSystem string }

func (t chatMLTemplate) Render(c *Conversation) ([]Segment, error) {
	var segs []Segment
	sys := c.System
	if sys == "" {
		sys = t.defaultSystem
	}
	if sys != "" {
		segs = append(segs, text("<|im_start|>system\n"+sys+"<|im_end|>\n", -1))
	}
	for i, tu := range c.Turns {
		p := "<|im_start|>user\n" + tu.userText() + "<|im_end|>\n<|im_start|>assistant\n"
		if i > 0 {
			p = "\n" + p
		}
		segs = append(segs, text(p, i), answer(tu.Assistant+"<|im_end|>", i))
	}
	return segs, nil
}

// llama3Template is Llama 3's chat format (contents trimmed, as its
// template does); the answer ends with <|eot_id|>.
//
//	<bos><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>
//	<|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{answer}<|eot_id|>
type llama3Template struct{}

func (llama3Template) Render(c *Conversation) ([]Segment, error) {
	header := func(role string) string { return "<|start_header_id|>" + role + "<|end_header_id|>\n\n" }
	segs := []Segment{special(BOS, -1)}
	if c.System != "" {
		segs = append(segs, text(header("system")+strings.TrimSpace(c.System)+"<|eot_id|>", -1))
	}
	for i, t := range c.Turns {
		segs = append(segs,
			text(header("user")+strings.TrimSpace(t.userText())+"<|eot_id|>"+header("assistant"), i),
			answer(strings.TrimSpace(t.Assistant)+"<|eot_id|>", i))
	}
	return segs, nil
}

// llama2Template is Llama 2's chat format: every turn opens with BOS and
// closes with EOS, the system block sits inside the first [INST].
//
//	<bos>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]{answer}<eos><bos>[INST] {user} [/INST]…
//
// The answer is encoded on its own, so a SentencePiece tokenizer gives it
// the leading "▁" that " {answer}" has in Llama 2's template.
type llama2Template struct{}

func (llama2Template) Render(c *Conversation) ([]Segment, error) {
	var segs []Segment
	for i, t := range c.Turns {
		u := strings.TrimSpace(t.userText())
		if i == 0 && c.System != "" {
			u = "<<SYS>>\n" + strings.TrimSpace(c.System) + "\n<</SYS>>\n\n" + u
		}
		segs = append(segs, special(BOS, i), text("[INST] "+u+" [/INST]", i),
			answer(strings.TrimSpace(t.Assistant), i), answerEOS(i))
	}
	return segs, nil
}

// GoTemplate is a chat format written as Go text/template sources. Each
// is executed with a TurnData:
//
//	System     rendered once, before the first turn, when there is a system prompt
//	User       the prompt part of every turn (it ends where the answer starts)
//	Assistant  the answer of every turn; "{{.Assistant}}" when empty
//
// BOS puts the tokenizer's BOS first; EOS ends every answer with EOS
// (inside the answer, so the model learns to stop).
type GoTemplate struct {
	System, User, Assistant string
	BOS, EOS                bool

	parsed *[3]*template.Template
}

// TurnData is what GoTemplate's templates see.
type TurnData struct {
	System    string
	User      string
	Input     string // alpaca records' input ("" otherwise)
	Assistant string
	Index     int // the turn's index (0 for the first)
}

// NewGoTemplate parses a GoTemplate's sources, reporting errors now rather
// than at the first record.
func NewGoTemplate(t GoTemplate) (*GoTemplate, error) {
	if t.User == "" {
		return nil, fmt.Errorf("data: GoTemplate: User is required")
	}
	if t.Assistant == "" {
		t.Assistant = "{{.Assistant}}"
	}
	var p [3]*template.Template
	for i, src := range []string{t.System, t.User, t.Assistant} {
		name := [3]string{"System", "User", "Assistant"}[i]
		tt, err := template.New(name).Option("missingkey=error").Parse(src)
		if err != nil {
			return nil, fmt.Errorf("data: GoTemplate %s: %w", name, err)
		}
		p[i] = tt
	}
	t.parsed = &p
	return &t, nil
}

func (t *GoTemplate) Render(c *Conversation) ([]Segment, error) {
	if t.parsed == nil {
		nt, err := NewGoTemplate(*t)
		if err != nil {
			return nil, err
		}
		t.parsed = nt.parsed
		t.Assistant = nt.Assistant
	}
	exec := func(i int, d TurnData) (string, error) {
		var b bytes.Buffer
		if err := t.parsed[i].Execute(&b, d); err != nil {
			return "", fmt.Errorf("data: GoTemplate: %w", err)
		}
		return b.String(), nil
	}
	var segs []Segment
	if t.BOS {
		segs = append(segs, special(BOS, -1))
	}
	if c.System != "" && t.System != "" {
		s, err := exec(0, TurnData{System: c.System})
		if err != nil {
			return nil, err
		}
		segs = append(segs, text(s, -1))
	}
	for i, tu := range c.Turns {
		d := TurnData{System: c.System, User: tu.User, Input: tu.Input, Assistant: tu.Assistant, Index: i}
		u, err := exec(1, d)
		if err != nil {
			return nil, err
		}
		a, err := exec(2, d)
		if err != nil {
			return nil, err
		}
		segs = append(segs, text(u, i), answer(a, i))
		if t.EOS {
			segs = append(segs, answerEOS(i))
		}
	}
	return segs, nil
}

// ChatTemplate renders conversations with a tokenizer's own chat template
// (ChatTemplater). Segments come from rendering growing prefixes of the
// conversation: the prompt of turn i is what rendering the first i turns
// plus the generation prompt adds, its answer what rendering turn i in
// full adds after that. A template whose renderings are not prefixes of
// each other is reported as an error.
type ChatTemplate struct{ T ChatTemplater }

func (ct ChatTemplate) Render(c *Conversation) ([]Segment, error) {
	var msgs []Message
	if c.System != "" {
		msgs = append(msgs, Message{Role: "system", Content: c.System})
	}
	var segs []Segment
	prev := ""
	for i, t := range c.Turns {
		msgs = append(msgs, Message{Role: "user", Content: t.userText()})
		p, err := ct.T.ApplyChatTemplate(msgs, true)
		if err != nil {
			return nil, fmt.Errorf("data: chat template: %w", err)
		}
		msgs = append(msgs, Message{Role: "assistant", Content: t.Assistant})
		full, err := ct.T.ApplyChatTemplate(msgs, false)
		if err != nil {
			return nil, fmt.Errorf("data: chat template: %w", err)
		}
		if !strings.HasPrefix(p, prev) || !strings.HasPrefix(full, p) {
			return nil, fmt.Errorf("data: chat template: turn %d: the rendering of a longer conversation does not extend the shorter one, so prompt and answer cannot be separated", i)
		}
		segs = append(segs, text(p[len(prev):], i), answer(full[len(p):], i))
		prev = full
	}
	return segs, nil
}
