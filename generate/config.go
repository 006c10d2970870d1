package generate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// GenerationConfig holds HF's generation knobs with their JSON names, so a
// HF generation_config.json loads into it (LoadGenerationConfig) and the
// meaning of each field is transformers'.
//
// A zero field means HF's default where HF's default is not zero:
// MaxLength 20, NumBeams 1, NumReturnSequences 1, Temperature 1,
// TopP 1, RepetitionPenalty 1, LengthPenalty 1. TopK 0 means no top-k
// filtering (as top_k=0 does in HF); DefaultGenerationConfig and the
// loaders set HF's default of 50. For length_penalty 0 and top_p 0, which
// the zero value cannot express, use a tiny positive value such as 1e-300:
// it acts exactly like 0 (the loaders do this for a 0 in a file). The
// zero of MaxNewTokens, Temperature and RepetitionPenalty can only mean
// "unset": an explicit 0 in a file or an Update, which HF refuses
// (temperature only when sampling), is an error there.
//
// Per-call overrides are ordinary field assignments on a copy
// (cfg := loaded; cfg.MaxNewTokens = 16), or Update with HF's JSON names.
type GenerationConfig struct {
	// MaxLength caps prompt + generated tokens (HF: max_length, default 20);
	// MaxNewTokens, when set, replaces it with prompt length + MaxNewTokens.
	MaxLength    int `json:"max_length"`
	MaxNewTokens int `json:"max_new_tokens,omitempty"` // 0 (unset) is left out: an explicit 0 is refused
	// MinLength (prompt included) and MinNewTokens keep the eos tokens'
	// scores at -inf until the sequence is that long.
	MinLength    int `json:"min_length"`
	MinNewTokens int `json:"min_new_tokens"`

	// DoSample samples from the processed distribution instead of taking
	// its argmax (or, with beams, samples the beam candidates).
	DoSample bool `json:"do_sample"`
	// Temperature divides the logits before sampling.
	Temperature float64 `json:"temperature,omitempty"` // 0 (unset) is left out
	// TopK keeps the K most likely tokens (ties with the K-th kept); 0 keeps all.
	TopK int `json:"top_k"`
	// TopP keeps the smallest set of most likely tokens whose probability
	// reaches TopP (nucleus sampling).
	TopP float64 `json:"top_p"`
	// RepetitionPenalty divides the positive and multiplies the negative
	// scores of every token already in the sequence (prompt included).
	RepetitionPenalty float64 `json:"repetition_penalty,omitempty"` // 0 (unset) is left out

	// EOSTokenID lists the tokens that end a sequence (JSON: one id or a list).
	EOSTokenID TokenIDs `json:"eos_token_id"`
	// PadTokenID fills finished rows; unset, it is the first eos token, as HF does.
	PadTokenID *int64 `json:"pad_token_id"`
	BOSTokenID *int64 `json:"bos_token_id"`

	// NumBeams > 1 runs beam search.
	NumBeams int `json:"num_beams"`
	// LengthPenalty is the exponent of the generated length that divides a
	// finished beam's summed log-probability (> 0 favours longer sequences).
	LengthPenalty float64 `json:"length_penalty"`
	// EarlyStopping is beam search's stopping rule.
	EarlyStopping EarlyStopping `json:"early_stopping"`
	// NumReturnSequences is the number of sequences returned per prompt:
	// independent samples, or the best beams (at most NumBeams).
	NumReturnSequences int `json:"num_return_sequences"`

	// OutputScores makes Output.Scores hold the processed scores of every step.
	OutputScores bool `json:"output_scores"`
	// Seed makes sampling reproducible (this library's own field; HF uses
	// torch's global generator). Every prompt of the batch gets its own
	// generator seeded with Seed (Input.Seeds gives each prompt its own
	// seed instead), so a prompt's tokens do not depend on the other
	// prompts: prompt i in a batch samples what it samples alone with the
	// same seed. Unset: a random seed for every prompt.
	Seed *int64 `json:"seed,omitempty"`
}

// tiny stands for an exact 0 in LengthPenalty and TopP: x^tiny == 1 for
// every length, and 1 - tiny == 1 in floating point.
const tiny = 1e-300

// DefaultGenerationConfig is HF's GenerationConfig() (top_k 50, every other
// knob neutral, max_length 20).
func DefaultGenerationConfig() GenerationConfig {
	return GenerationConfig{
		MaxLength: 20, NumBeams: 1, NumReturnSequences: 1, Temperature: 1, TopK: 50,
		TopP: 1, RepetitionPenalty: 1, LengthPenalty: 1,
	}
}

// LoadGenerationConfig reads a HF generation_config.json (a folder is read
// as folder/generation_config.json): fields absent from the file keep HF's
// defaults; unknown fields are ignored, as transformers keeps but does not
// use them.
func LoadGenerationConfig(path string) (GenerationConfig, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "generation_config.json")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return GenerationConfig{}, fmt.Errorf("generate: %w", err)
	}
	c, err := ParseGenerationConfig(data)
	if err != nil {
		return GenerationConfig{}, fmt.Errorf("generate: %s: %w", path, err)
	}
	return c, nil
}

// FromPretrained is the generation config of a HF model folder, as
// GenerationConfig.from_pretrained falls back to from_model_config:
// generation_config.json when present, else the generation fields of
// config.json (bos/eos/pad token ids, and any other knob it sets).
func FromPretrained(dir string) (GenerationConfig, error) {
	gc := filepath.Join(dir, "generation_config.json")
	if _, err := os.Stat(gc); err == nil {
		return LoadGenerationConfig(gc)
	}
	path := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return GenerationConfig{}, fmt.Errorf("generate: %w", err)
	}
	c, err := ParseGenerationConfig(data)
	if err != nil {
		return GenerationConfig{}, fmt.Errorf("generate: %s: %w", path, err)
	}
	return c, nil
}

// ParseGenerationConfig parses generation_config.json bytes over HF's defaults.
func ParseGenerationConfig(data []byte) (GenerationConfig, error) {
	c := DefaultGenerationConfig()
	if err := c.update(data); err != nil {
		return GenerationConfig{}, err
	}
	return c, nil
}

// Update returns c with the given fields replaced, keyed by HF's JSON names
// (HF's generation_config.update(**kwargs)); an unknown name is an error.
func (c GenerationConfig) Update(fields map[string]any) (GenerationConfig, error) {
	known := map[string]bool{}
	for _, n := range fieldNames() {
		known[n] = true
	}
	for k := range fields {
		if !known[k] {
			return c, fmt.Errorf("generate: unknown generation field %q", k)
		}
	}
	data, err := json.Marshal(fields)
	if err != nil {
		return c, fmt.Errorf("generate: %w", err)
	}
	if err := c.update(data); err != nil {
		return c, err
	}
	return c, nil
}

// update decodes data onto c field by field, so that errors name the field
// and a JSON null means "unset" (HF's None).
func (c *GenerationConfig) update(data []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	for _, name := range fieldNames() {
		v, ok := raw[name]
		if !ok {
			continue
		}
		if err := c.setField(name, v); err != nil {
			return fmt.Errorf("field %q: %w", name, err)
		}
	}
	// temperature 0 reads as "unset" in the struct: with sampling on, an
	// explicit 0 in a file is refused as HF refuses it (greedy ignores it)
	if v, ok := raw["temperature"]; ok && c.DoSample {
		if f, err := number(v); err == nil && f == 0 {
			return fmt.Errorf("field \"temperature\": 0 with do_sample: set do_sample false for greedy decoding")
		}
	}
	return nil
}

func fieldNames() []string {
	return []string{"max_length", "max_new_tokens", "min_length", "min_new_tokens", "do_sample",
		"temperature", "top_k", "top_p", "repetition_penalty", "eos_token_id", "pad_token_id",
		"bos_token_id", "num_beams", "length_penalty", "early_stopping", "num_return_sequences",
		"output_scores", "seed"}
}

func (c *GenerationConfig) setField(name string, v json.RawMessage) error {
	null := bytes.Equal(bytes.TrimSpace(v), []byte("null"))
	d := DefaultGenerationConfig()
	intInto := func(dst *int, def int) error {
		if null {
			*dst = def
			return nil
		}
		f, err := number(v)
		if err != nil {
			return err
		}
		if f != math.Trunc(f) {
			return fmt.Errorf("%v is not an integer", f)
		}
		*dst = int(f)
		return nil
	}
	floatInto := func(dst *float64, def float64, zero float64) error {
		if null {
			*dst = def
			return nil
		}
		f, err := number(v)
		if err != nil {
			return err
		}
		if f == 0 {
			f = zero
		}
		*dst = f
		return nil
	}
	idInto := func(dst **int64) error {
		if null {
			*dst = nil
			return nil
		}
		f, err := number(v)
		if err != nil {
			return err
		}
		id := int64(f)
		*dst = &id
		return nil
	}
	switch name {
	case "max_length":
		return intInto(&c.MaxLength, d.MaxLength)
	case "max_new_tokens":
		if err := intInto(&c.MaxNewTokens, 0); err != nil {
			return err
		}
		if !null && c.MaxNewTokens <= 0 { // HF refuses it; 0 in the struct means "unset"
			return fmt.Errorf("must be positive, got %d", c.MaxNewTokens)
		}
		return nil
	case "min_length":
		return intInto(&c.MinLength, 0)
	case "min_new_tokens":
		return intInto(&c.MinNewTokens, 0)
	case "top_k":
		return intInto(&c.TopK, d.TopK)
	case "num_beams":
		return intInto(&c.NumBeams, d.NumBeams)
	case "num_return_sequences":
		return intInto(&c.NumReturnSequences, d.NumReturnSequences)
	case "temperature":
		return floatInto(&c.Temperature, d.Temperature, d.Temperature) // 0 (refused with sampling, see update) reads as the default
	case "top_p":
		return floatInto(&c.TopP, d.TopP, tiny)
	case "repetition_penalty":
		if err := floatInto(&c.RepetitionPenalty, d.RepetitionPenalty, 0); err != nil {
			return err
		}
		if !null && !(c.RepetitionPenalty > 0) { // HF refuses it; 0 in the struct means "unset"
			return fmt.Errorf("must be a strictly positive number, got %v", c.RepetitionPenalty)
		}
		return nil
	case "length_penalty":
		return floatInto(&c.LengthPenalty, d.LengthPenalty, tiny)
	case "do_sample", "output_scores":
		b := false
		if !null {
			if err := json.Unmarshal(v, &b); err != nil {
				return err
			}
		}
		if name == "do_sample" {
			c.DoSample = b
		} else {
			c.OutputScores = b
		}
		return nil
	case "eos_token_id":
		return json.Unmarshal(v, &c.EOSTokenID)
	case "pad_token_id":
		return idInto(&c.PadTokenID)
	case "bos_token_id":
		return idInto(&c.BOSTokenID)
	case "seed":
		return idInto(&c.Seed)
	case "early_stopping":
		return json.Unmarshal(v, &c.EarlyStopping)
	}
	return fmt.Errorf("unknown field")
}

func number(v json.RawMessage) (float64, error) {
	var f float64
	if err := json.Unmarshal(v, &f); err != nil {
		return 0, fmt.Errorf("want a number, got %s", v)
	}
	return f, nil
}

// TokenIDs is one token id or a list of them (HF's int | list[int]).
type TokenIDs []int64

// UnmarshalJSON accepts null, one id or a list.
func (t *TokenIDs) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*t = nil
		return nil
	}
	var one int64
	if err := json.Unmarshal(b, &one); err == nil {
		*t = TokenIDs{one}
		return nil
	}
	var list []int64
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("want a token id or a list of token ids, got %s", b)
	}
	*t = list
	return nil
}

// MarshalJSON writes one id as a number, several as a list, none as null.
func (t TokenIDs) MarshalJSON() ([]byte, error) {
	switch len(t) {
	case 0:
		return []byte("null"), nil
	case 1:
		return json.Marshal(t[0])
	}
	return json.Marshal([]int64(t))
}

// Contains reports whether id is in t.
func (t TokenIDs) Contains(id int64) bool {
	for _, x := range t {
		if x == id {
			return true
		}
	}
	return false
}

// EarlyStopping is beam search's stopping rule (HF: early_stopping).
type EarlyStopping int

const (
	// EarlyStoppingHeuristic (false, the default) stops a prompt's search
	// once the best running beam, scored at the current length, cannot beat
	// the worst of NumBeams finished hypotheses.
	EarlyStoppingHeuristic EarlyStopping = iota
	// EarlyStoppingOn (true) stops as soon as NumBeams hypotheses are finished.
	EarlyStoppingOn
	// EarlyStoppingNever ("never") stops only when no better hypothesis is
	// possible at any length up to the maximum (canonical beam search).
	EarlyStoppingNever
)

// UnmarshalJSON accepts true, false, "never" and null (false).
func (e *EarlyStopping) UnmarshalJSON(b []byte) error {
	switch strings.TrimSpace(string(b)) {
	case "false", "null":
		*e = EarlyStoppingHeuristic
	case "true":
		*e = EarlyStoppingOn
	case `"never"`:
		*e = EarlyStoppingNever
	default:
		return fmt.Errorf(`want true, false or "never", got %s`, b)
	}
	return nil
}

// MarshalJSON writes HF's spelling.
func (e EarlyStopping) MarshalJSON() ([]byte, error) {
	switch e {
	case EarlyStoppingOn:
		return []byte("true"), nil
	case EarlyStoppingNever:
		return []byte(`"never"`), nil
	}
	return []byte("false"), nil
}

// String is HF's spelling.
func (e EarlyStopping) String() string {
	b, _ := e.MarshalJSON()
	return string(b)
}

// ParseEarlyStopping reads "true", "false" or "never".
func ParseEarlyStopping(s string) (EarlyStopping, error) {
	var e EarlyStopping
	q := s
	if s == "never" {
		q = `"never"`
	}
	if err := e.UnmarshalJSON([]byte(q)); err != nil {
		return 0, fmt.Errorf("early stopping: %w", err)
	}
	return e, nil
}

// mode is the decoding strategy a config selects (HF's generation modes).
type mode int

const (
	greedy mode = iota
	sample
	beamSearch
	beamSample
)

func (m mode) String() string {
	return [...]string{"greedy", "sample", "beam search", "beam sample"}[m]
}

// plan is a config resolved against a prompt: every default applied, every
// value checked.
type plan struct {
	mode               mode
	promptLen          int
	maxLength          int
	minLength          int
	minNewTokens       int
	temperature        float64
	topK               int
	topP               float64
	repetitionPenalty  float64
	eos                TokenIDs
	pad                int64
	hasPad             bool
	numBeams           int
	lengthPenalty      float64
	earlyStopping      EarlyStopping
	numReturnSequences int
	outputScores       bool
	seed               *int64
}

// resolve applies the defaults for zero fields and HF's checks, for a
// prompt of promptLen tokens (padding included).
func (c GenerationConfig) resolve(promptLen int) (*plan, error) {
	or := func(v, def float64) float64 {
		if v == 0 {
			return def
		}
		return v
	}
	ori := func(v, def int) int {
		if v == 0 {
			return def
		}
		return v
	}
	p := &plan{
		promptLen: promptLen, maxLength: ori(c.MaxLength, 20), minLength: c.MinLength,
		minNewTokens: c.MinNewTokens, temperature: or(c.Temperature, 1), topK: c.TopK,
		topP: or(c.TopP, 1), repetitionPenalty: or(c.RepetitionPenalty, 1), eos: c.EOSTokenID,
		numBeams: ori(c.NumBeams, 1), lengthPenalty: or(c.LengthPenalty, 1),
		earlyStopping: c.EarlyStopping, numReturnSequences: ori(c.NumReturnSequences, 1),
		outputScores: c.OutputScores, seed: c.Seed,
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.MaxNewTokens < 0 {
		bad("max_new_tokens must be positive, got %d", c.MaxNewTokens)
	}
	if c.MaxNewTokens > 0 {
		p.maxLength = promptLen + c.MaxNewTokens
	} else if p.maxLength <= promptLen {
		bad("max_length %d leaves no room after the %d-token prompt: set max_new_tokens", p.maxLength, promptLen)
	}
	if c.MinLength < 0 || c.MinNewTokens < 0 {
		bad("min_length and min_new_tokens must not be negative")
	}
	if p.temperature < 0 || math.IsNaN(p.temperature) {
		bad("temperature must be a strictly positive number, got %v", c.Temperature)
	}
	if p.topK < 0 {
		bad("top_k must not be negative, got %d", c.TopK)
	}
	if p.topP < 0 || p.topP > 1 || math.IsNaN(p.topP) {
		bad("top_p must be in [0, 1], got %v", c.TopP)
	}
	if p.repetitionPenalty < 0 || math.IsNaN(p.repetitionPenalty) {
		bad("repetition_penalty must be a strictly positive number, got %v", c.RepetitionPenalty)
	}
	if p.numBeams < 1 {
		bad("num_beams must be at least 1, got %d", c.NumBeams)
	}
	if p.numReturnSequences < 1 {
		bad("num_return_sequences must be at least 1, got %d", c.NumReturnSequences)
	}
	switch {
	case p.numBeams > 1 && c.DoSample:
		p.mode = beamSample
	case p.numBeams > 1:
		p.mode = beamSearch
	case c.DoSample:
		p.mode = sample
	default:
		p.mode = greedy
	}
	if p.mode == greedy && p.numReturnSequences > 1 {
		bad("greedy decoding returns one sequence per prompt, not num_return_sequences=%d (set do_sample or num_beams)", p.numReturnSequences)
	}
	if p.numBeams > 1 && p.numReturnSequences > p.numBeams {
		bad("num_return_sequences (%d) must not exceed num_beams (%d)", p.numReturnSequences, p.numBeams)
	}
	if c.PadTokenID != nil {
		p.pad, p.hasPad = *c.PadTokenID, true
	} else if len(p.eos) > 0 {
		p.pad, p.hasPad = p.eos[0], true // HF: "Setting pad_token_id to eos_token_id"
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	return p, nil
}

// minTokensToKeep is what top-k and top-p always keep: 1, or with beams
// one more than the eos tokens, so that every beam has a continuation.
func (p *plan) minTokensToKeep() int {
	if p.numBeams > 1 {
		return max(2, len(p.eos)+1)
	}
	return 1
}

// expand is how many rows each prompt becomes.
func (p *plan) expand() int {
	if p.numBeams > 1 {
		return p.numBeams
	}
	return p.numReturnSequences
}
