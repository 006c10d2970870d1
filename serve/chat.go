package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ardanlabs/jinja"

	"github.com/gopeft/peft/data"
	"github.com/gopeft/peft/tokenizer"
)

// ChatTemplate turns a chat into prompt token ids.
//
// A ChatTemplate is immutable after it is made and safe for concurrent use.
type ChatTemplate struct {
	tok *tokenizer.Tokenizer
	// jinja is the model's own template (tokenizer_config.json's
	// chat_template); nil when the fallback is used.
	jinja *jinja.Template
	vars  map[string]any // bos_token, eos_token, … given to the template
	// fallback is one of the data package's named templates.
	fallback     data.Template
	fallbackName string
	dataTok      data.Tokenizer
}

// NewChatTemplate uses tokenizer_config.json's chat_template (a Jinja
// template, rendered as transformers' apply_chat_template does: the
// variables messages, add_generation_prompt, bos_token, eos_token,
// unk_token, pad_token, and the function raise_exception) when the
// tokenizer has one, and otherwise the named template of package data
// (fallback: "chatml", "llama3", "llama2", "qwen", "alpaca", "raw"; ""
// means "chatml"). The rendered text is encoded without adding special
// tokens, since the template writes them.
func NewChatTemplate(tok *tokenizer.Tokenizer, fallback string) (*ChatTemplate, error) {
	if tok == nil {
		return nil, errors.New("serve: chat template: no tokenizer")
	}
	cfg := tok.Config()
	t := &ChatTemplate{tok: tok, dataTok: data.FromTokenizer(tok)}
	if cfg.ChatTemplate != "" {
		j, err := jinja.Compile(cfg.ChatTemplate)
		if err != nil {
			return nil, fmt.Errorf("serve: tokenizer_config.json: chat_template: %w", err)
		}
		t.jinja = j
		t.vars = map[string]any{
			"bos_token": cfg.BOSToken, "eos_token": cfg.EOSToken,
			"unk_token": cfg.UnkToken, "pad_token": cfg.PadToken,
		}
		return t, nil
	}
	if fallback == "" {
		fallback = data.TemplateChatML
	}
	d, err := data.TemplateByName(fallback)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	t.fallback, t.fallbackName = d, fallback
	return t, nil
}

// Source says which template is used: "chat_template" (the model's own)
// or the fallback's name.
func (t *ChatTemplate) Source() string {
	if t.jinja != nil {
		return "chat_template"
	}
	return t.fallbackName
}

// Message is one chat message (OpenAI's role and text content).
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Render is the prompt text of msgs with the assistant's header after
// them (add_generation_prompt), for the model's own template. The
// fallback templates render to segments, not text: use Encode.
func (t *ChatTemplate) Render(msgs []Message) (string, error) {
	if t.jinja == nil {
		return "", fmt.Errorf("serve: the tokenizer has no chat_template (the %q fallback renders to tokens: use Encode)", t.fallbackName)
	}
	list := make([]any, len(msgs))
	for i, m := range msgs {
		list[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	vars := make(map[string]any, len(t.vars)+2)
	for k, v := range t.vars {
		vars[k] = v
	}
	vars["messages"] = list
	vars["add_generation_prompt"] = true
	out, err := t.jinja.Render(vars)
	if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	return out, nil
}

// Encode is the prompt token ids of msgs, ready for the model's reply.
func (t *ChatTemplate) Encode(msgs []Message) ([]int64, error) {
	if len(msgs) == 0 {
		return nil, errors.New("messages: empty")
	}
	if t.jinja != nil {
		text, err := t.Render(msgs)
		if err != nil {
			return nil, err
		}
		ids, err := t.tok.EncodeIDs(text, false)
		if err != nil {
			return nil, err
		}
		out := make([]int64, len(ids))
		for i, id := range ids {
			out[i] = int64(id)
		}
		return out, nil
	}
	c, err := conversation(msgs)
	if err != nil {
		return nil, err
	}
	return data.Prompt(t.dataTok, t.fallback, c)
}

// conversation lays OpenAI messages out as the data package's turns: an
// optional system message, then user and assistant in turn, ending with
// the user's message that is to be answered.
func conversation(msgs []Message) (data.Conversation, error) {
	var c data.Conversation
	i := 0
	if msgs[0].Role == "system" || msgs[0].Role == "developer" {
		c.System, i = msgs[0].Content, 1
	}
	for ; i < len(msgs); i += 2 {
		if msgs[i].Role != "user" {
			return c, fmt.Errorf("messages[%d]: role %q where a user message was expected (the template needs user and assistant in turn)", i, msgs[i].Role)
		}
		turn := data.Turn{User: msgs[i].Content}
		if i+1 < len(msgs) {
			if msgs[i+1].Role != "assistant" {
				return c, fmt.Errorf("messages[%d]: role %q where an assistant message was expected (the template needs user and assistant in turn)", i+1, msgs[i+1].Role)
			}
			turn.Assistant = msgs[i+1].Content
		}
		c.Turns = append(c.Turns, turn)
	}
	if len(c.Turns) == 0 {
		return c, errors.New("messages: no user message")
	}
	if msgs[len(msgs)-1].Role != "user" {
		return c, fmt.Errorf("messages[%d]: the conversation must end with a user message", len(msgs)-1)
	}
	return c, nil
}

// messagesFrom checks the request's messages and flattens their content
// (a string, or a list of {"type": "text", "text": ...} parts).
func messagesFrom(in []chatMessage) ([]Message, *apiError) {
	if len(in) == 0 {
		return nil, invalid("messages", "", "messages: at least one message is required")
	}
	out := make([]Message, len(in))
	for i, m := range in {
		switch m.Role {
		case "system", "developer", "user", "assistant":
		case "":
			return nil, invalid(fmt.Sprintf("messages[%d].role", i), "", "messages[%d]: role is required", i)
		default:
			return nil, invalid(fmt.Sprintf("messages[%d].role", i), "", "messages[%d]: role %q is not supported (system, developer, user, assistant)", i, m.Role)
		}
		role := m.Role
		if role == "developer" { // OpenAI's newer name for system
			role = "system"
		}
		text, err := contentText(m.Content)
		if err != nil {
			return nil, invalid(fmt.Sprintf("messages[%d].content", i), "", "messages[%d].content: %v", i, err)
		}
		out[i] = Message{Role: role, Content: text}
	}
	return out, nil
}

func contentText(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("want a string or a list of text parts")
	}
	var b strings.Builder
	for j, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return "", fmt.Errorf("part %d: only {\"type\": \"text\", \"text\": ...} parts are supported, got type %q", j, p.Type)
		}
		b.WriteString(*p.Text)
	}
	return b.String(), nil
}
