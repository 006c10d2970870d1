package models

import (
	"encoding/json"
	"fmt"
	"math"
)

// ConfigFields is what a model config writes to config.json: raw (the file
// as read, so fields this library does not model survive) updated with
// own's JSON fields. Callers adjust the map, then RenderConfig.
func ConfigFields(own any, raw map[string]any) (map[string]any, error) {
	b, err := json.Marshal(own)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	out := make(map[string]any, len(raw)+len(m))
	for k, v := range raw {
		out[k] = v
	}
	for k, v := range m {
		out[k] = v
	}
	return out, nil
}

// RenderConfig renders config.json's fields, adding what transformers
// writes when the file had none: architectures (unless architecture is
// empty) and torch_dtype float32.
func RenderConfig(out map[string]any, architecture string) ([]byte, error) {
	if _, ok := out["architectures"]; !ok && architecture != "" {
		out["architectures"] = []string{architecture}
	}
	if _, ok := out["torch_dtype"]; !ok {
		out["torch_dtype"] = "float32"
	}
	return json.MarshalIndent(out, "", "  ")
}

// CheckPositive refuses a float field of config.json that is not a
// positive finite number (epsilons, rope_theta: a negative epsilon gives
// NaN outputs).
func CheckPositive(field string, v float64) error {
	if !(v > 0) || math.IsInf(v, 0) {
		return fmt.Errorf("field %q must be a positive number, got %g", field, v)
	}
	return nil
}

// DecodeConfig is the first step of every family's ParseConfig: it reads
// config.json bytes (path names the file in errors, family prefixes them)
// as a raw map, checks that each required field is there (each entry lists
// a field's accepted names, the first one named in the error), and decodes
// the bytes into the family's config struct `into` (whose defaults the
// caller has set). It returns the raw map for the config's Raw.
func DecodeConfig(family, path string, data []byte, into any, required ...[]string) (map[string]any, error) {
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", family, path, err)
	}
	for _, names := range required {
		found := false
		for _, n := range names {
			if _, ok := raw[n]; ok {
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("%s: %s: missing field %q", family, path, names[0])
		}
	}
	if err := json.Unmarshal(data, into); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", family, path, err)
	}
	return raw, nil
}

// Fields turns field names into DecodeConfig's required entries (each
// with one accepted name).
func Fields(names ...string) [][]string {
	out := make([][]string, len(names))
	for i, n := range names {
		out[i] = []string{n}
	}
	return out
}
