// Package cfgjson holds what the method packages' adapter_config.json
// codecs share: PEFT's int-or-list and string-or-list fields, and the
// rendering of a config with PEFT's keys where keys this library does not
// know are kept from the file read.
//
// The types are plain values, safe for concurrent use when not changed.
package cfgjson

import (
	"encoding/json"

	"github.com/gopeft/peft/peft"
)

// IntList is an int or a list of ints (PEFT's layers_to_transform); null
// is nil. It is written as a list.
type IntList []int

func (l IntList) MarshalJSON() ([]byte, error) {
	if l == nil {
		return []byte("null"), nil
	}
	return json.Marshal([]int(l))
}

func (l *IntList) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*l = nil
		return nil
	}
	var one int
	if json.Unmarshal(b, &one) == nil {
		*l = IntList{one}
		return nil
	}
	var many []int
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*l = many
	return nil
}

// StringList is a string or a list of strings (PEFT's layers_pattern);
// null is nil. It is written as a list.
type StringList []string

func (l StringList) MarshalJSON() ([]byte, error) {
	if l == nil {
		return []byte("null"), nil
	}
	return json.Marshal([]string(l))
}

func (l *StringList) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*l = nil
		return nil
	}
	var one string
	if json.Unmarshal(b, &one) == nil {
		*l = StringList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*l = many
	return nil
}

// Encode renders adapter_config.json: defaults (PEFT's keys and default
// values), then the file's keys as read (raw: unknown ones survive a
// re-save), then ours on top; inference_mode is true as PEFT saves it.
func Encode(defaults map[string]any, raw map[string]json.RawMessage, ours map[string]any) ([]byte, error) {
	out := map[string]any{}
	for k, v := range defaults {
		out[k] = v
	}
	for k, v := range raw {
		out[k] = v
	}
	for k, v := range ours {
		out[k] = v
	}
	out["inference_mode"] = true
	return peft.EncodeConfig(out)
}

// Raw decodes data's top-level keys for Encode.
func Raw(data []byte) (map[string]json.RawMessage, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}
