package data

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Instruction is an alpaca-style record: {"instruction", "input",
// "output"}, with the optional "system" and "history" ([[user,
// assistant], …] turns before this one) of LLaMA-Factory's alpaca format.
type Instruction struct {
	Instruction string      `json:"instruction"`
	Input       string      `json:"input,omitempty"`
	Output      string      `json:"output"`
	System      string      `json:"system,omitempty"`
	History     [][2]string `json:"history,omitempty"`

	// Source says where the record came from ("file.jsonl:17"), for errors.
	Source  string `json:"-"`
	missing []string
}

// Conversation is a dialogue: an optional system prompt and exchanges of
// a user message and the assistant's reply.
type Conversation struct {
	System string
	Turns  []Turn
	// Source says where the record came from ("file.jsonl:17"), for errors.
	Source string
	err    error // a layout problem found while reading
}

// Conversation turns an alpaca record into a one-or-more-turn dialogue:
// its history, then instruction (+ input) → output.
func (r *Instruction) Conversation() Conversation {
	c := Conversation{System: r.System, Source: r.Source}
	for _, h := range r.History {
		c.Turns = append(c.Turns, Turn{User: h[0], Assistant: h[1]})
	}
	c.Turns = append(c.Turns, Turn{User: r.Instruction, Input: r.Input, Assistant: r.Output})
	if len(r.missing) > 0 {
		c.err = fmt.Errorf("missing %s", quoteList(r.missing))
	} else if r.Instruction == "" && r.Input == "" {
		c.err = errors.New(`empty "instruction"`)
	} else if r.Output == "" {
		c.err = errors.New(`empty "output": nothing to learn`)
	}
	return c
}

func quoteList(keys []string) string {
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = fmt.Sprintf("%q", k)
	}
	return strings.Join(q, ", ")
}

// FromMessages builds a conversation from OpenAI-style messages: an
// optional leading system message, then user and assistant messages in
// turn, ending with the assistant.
func FromMessages(msgs []Message) (Conversation, error) {
	var c Conversation
	if len(msgs) == 0 {
		return c, errors.New("empty conversation")
	}
	i := 0
	if msgs[0].Role == "system" {
		c.System = msgs[0].Content
		i = 1
	}
	if i == len(msgs) {
		return c, errors.New("conversation has a system message only")
	}
	for ; i < len(msgs); i += 2 {
		u := msgs[i]
		if u.Role != "user" {
			return c, fmt.Errorf("message %d: role %q where a user message was expected (user and assistant alternate)", i, u.Role)
		}
		if i+1 == len(msgs) {
			return c, fmt.Errorf("message %d: the conversation ends with a user message, which has no reply to learn", i)
		}
		a := msgs[i+1]
		if a.Role != "assistant" {
			return c, fmt.Errorf("message %d: role %q where an assistant message was expected (user and assistant alternate)", i+1, a.Role)
		}
		if a.Content == "" {
			return c, fmt.Errorf("message %d: empty assistant message", i+1)
		}
		c.Turns = append(c.Turns, Turn{User: u.Content, Assistant: a.Content})
	}
	return c, nil
}

// Err is the problem found in the record while reading it (nil when it is
// well formed). Building a dataset reports or skips such records.
func (c *Conversation) Err() error { return c.err }

// ReadInstructions reads alpaca records from a JSON array or a JSONL file
// (one object per line). Malformed JSON fails the read, naming the line
// or record; a record missing "instruction" or "output" is kept with its
// error, which building the dataset reports or counts as a skip.
func ReadInstructions(path string) ([]Instruction, error) {
	var out []Instruction
	err := readRecords(path, func(src string, raw json.RawMessage) error {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("%s: not a JSON object: %w", src, err)
		}
		r := Instruction{Source: src}
		for _, k := range []string{"instruction", "output"} {
			if v, ok := m[k]; !ok || string(v) == "null" {
				r.missing = append(r.missing, k)
			}
		}
		fields := map[string]*string{"instruction": &r.Instruction, "input": &r.Input, "output": &r.Output, "system": &r.System}
		for k, dst := range fields {
			if v, ok := m[k]; ok && string(v) != "null" {
				if err := json.Unmarshal(v, dst); err != nil {
					return fmt.Errorf("%s: field %q: want a string", src, k)
				}
			}
		}
		if v, ok := m["history"]; ok && string(v) != "null" {
			if err := json.Unmarshal(v, &r.History); err != nil {
				return fmt.Errorf("%s: field \"history\": want [[user, assistant], ...]", src)
			}
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// ReadConversations reads dialogues from a JSON array or a JSONL file.
// Each record is in ShareGPT's layout, {"conversations": [{"from":
// "human"|"gpt"|"system", "value": …}, …], "system": …}, or OpenAI's,
// {"messages": [{"role": "system"|"user"|"assistant", "content": …}, …]}.
// Malformed JSON fails the read; a record with an empty conversation or
// roles out of order is kept with its error (see Conversation.Err).
func ReadConversations(path string) ([]Conversation, error) {
	var out []Conversation
	err := readRecords(path, func(src string, raw json.RawMessage) error {
		var r struct {
			Conversations []struct {
				From  string `json:"from"`
				Value string `json:"value"`
			} `json:"conversations"`
			Messages []Message `json:"messages"`
			System   string    `json:"system"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		var msgs []Message
		var layoutErr error
		switch {
		case r.Conversations != nil:
			if r.System != "" {
				msgs = append(msgs, Message{Role: "system", Content: r.System})
			}
			for i, m := range r.Conversations {
				role, ok := shareGPTRoles[m.From]
				if !ok {
					layoutErr = fmt.Errorf("conversations[%d]: unknown \"from\" %q (human, user, gpt, assistant, system)", i, m.From)
					break
				}
				msgs = append(msgs, Message{Role: role, Content: m.Value})
			}
		case r.Messages != nil:
			msgs = r.Messages
		default:
			layoutErr = errors.New(`neither "conversations" (ShareGPT) nor "messages" (OpenAI)`)
		}
		c := Conversation{}
		if layoutErr == nil {
			c, layoutErr = FromMessages(msgs)
		}
		c.Source = src
		c.err = layoutErr
		out = append(out, c)
		return nil
	})
	return out, err
}

var shareGPTRoles = map[string]string{"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}

// readRecords calls fn for each record of a JSON array or JSONL file with
// its position ("file.jsonl:12" for line 12, "file.json[3]" for the 4th
// array element).
func readRecords(path string, fn func(src string, raw json.RawMessage) error) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	name := filepath.Base(path)
	trimmed := bytes.TrimLeft(b, " \t\r\n\ufeff")
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var recs []json.RawMessage
		if err := json.Unmarshal(trimmed, &recs); err != nil {
			return fmt.Errorf("data: %s: %w", name, err)
		}
		for i, r := range recs {
			if err := fn(fmt.Sprintf("%s[%d]", name, i), r); err != nil {
				return fmt.Errorf("data: %w", err)
			}
		}
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<30)
	line := 0
	for sc.Scan() {
		line++
		l := bytes.TrimSpace(sc.Bytes())
		if len(l) == 0 {
			continue
		}
		src := fmt.Sprintf("%s:%d", name, line)
		if !json.Valid(l) {
			var v any
			err := json.Unmarshal(l, &v)
			return fmt.Errorf("data: %s: %w", src, err)
		}
		if err := fn(src, json.RawMessage(append([]byte(nil), l...))); err != nil {
			return fmt.Errorf("data: %w", err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("data: %s: %w", name, err)
	}
	return nil
}
