package tokenizer

import (
	"encoding/json"
	"math"
)

// Config is the part of tokenizer_config.json that matters outside the
// encoding itself. transformers reads it; HF's Rust tokenizers (and so
// Encode) do not: add_bos_token and add_eos_token are reported here but
// the special tokens added are the post_processor's.
type Config struct {
	BOSToken, EOSToken, PadToken, UnkToken string
	// ModelMaxLength is model_max_length; 0 when absent, capped at the
	// largest int (transformers writes 1e30 for "no limit").
	ModelMaxLength int
	PaddingSide    string // "left" or "right"; "" when absent
	AddBOSToken    *bool
	AddEOSToken    *bool
	// ChatTemplate is the default chat template (a Jinja template), and
	// ChatTemplates all of them by name when the file has several.
	ChatTemplate  string
	ChatTemplates map[string]string
}

func cfgErr(field, msg string) error {
	return &FieldError{File: "tokenizer_config.json", Field: field, Msg: msg}
}

func parseConfig(data []byte) (Config, error) {
	var c Config
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return c, &FieldError{File: "tokenizer_config.json", Msg: "not a JSON object: " + jsonMsg(err)}
	}
	// Special tokens are strings or AddedToken objects ({"content": ...}).
	tokenField := func(key string, dst *string) error {
		raw, ok := m[key]
		if !ok || isNull(raw) {
			return nil
		}
		if json.Unmarshal(raw, dst) == nil {
			return nil
		}
		var o struct {
			Content *string `json:"content"`
		}
		if json.Unmarshal(raw, &o) != nil || o.Content == nil {
			return cfgErr(key, "want a string or {\"content\": ...}")
		}
		*dst = *o.Content
		return nil
	}
	for key, dst := range map[string]*string{"bos_token": &c.BOSToken, "eos_token": &c.EOSToken, "pad_token": &c.PadToken, "unk_token": &c.UnkToken} {
		if err := tokenField(key, dst); err != nil {
			return c, err
		}
	}
	if raw, ok := m["model_max_length"]; ok && !isNull(raw) {
		var f float64
		if json.Unmarshal(raw, &f) != nil || f < 0 {
			return c, cfgErr("model_max_length", "want a non-negative number")
		}
		if f >= math.MaxInt {
			c.ModelMaxLength = math.MaxInt
		} else {
			c.ModelMaxLength = int(f)
		}
	}
	if raw, ok := m["padding_side"]; ok && !isNull(raw) {
		if json.Unmarshal(raw, &c.PaddingSide) != nil || (c.PaddingSide != "left" && c.PaddingSide != "right") {
			return c, cfgErr("padding_side", "want \"left\" or \"right\"")
		}
	}
	for key, dst := range map[string]**bool{"add_bos_token": &c.AddBOSToken, "add_eos_token": &c.AddEOSToken} {
		if raw, ok := m[key]; ok && !isNull(raw) {
			var b bool
			if json.Unmarshal(raw, &b) != nil {
				return c, cfgErr(key, "want true or false")
			}
			*dst = &b
		}
	}
	if raw, ok := m["chat_template"]; ok && !isNull(raw) {
		if json.Unmarshal(raw, &c.ChatTemplate) != nil {
			var list []struct {
				Name     string `json:"name"`
				Template string `json:"template"`
			}
			if json.Unmarshal(raw, &list) != nil {
				return c, cfgErr("chat_template", "want a string or a list of {\"name\", \"template\"}")
			}
			c.ChatTemplates = map[string]string{}
			for _, t := range list {
				c.ChatTemplates[t.Name] = t.Template
			}
			c.ChatTemplate = c.ChatTemplates["default"]
		}
	}
	return c, nil
}
