package generate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLoadGenerationConfig(t *testing.T) {
	dir := filepath.Join(fixtures(t), "llama-tiny")
	for _, path := range []string{dir, filepath.Join(dir, "generation_config.json")} {
		c, err := LoadGenerationConfig(path)
		require.NoError(t, err)
		want := DefaultGenerationConfig()
		want.EOSTokenID = TokenIDs{2}
		one := int64(1)
		want.BOSTokenID = &one
		require.Equal(t, want, c)
	}
	c, err := FromPretrained(dir)
	require.NoError(t, err)
	require.Equal(t, TokenIDs{2}, c.EOSTokenID)

	// without generation_config.json: config.json's token ids
	tmp := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(tmp, "config.json"),
		[]byte(`{"model_type": "llama", "eos_token_id": [7, 8], "pad_token_id": 0, "hidden_size": 64}`), 0o644))
	c, err = FromPretrained(tmp)
	require.NoError(t, err)
	require.Equal(t, TokenIDs{7, 8}, c.EOSTokenID)
	require.Equal(t, int64(0), *c.PadTokenID)
	require.Equal(t, 50, c.TopK)

	_, err = LoadGenerationConfig(filepath.Join(tmp, "missing.json"))
	require.Error(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(tmp, "bad.json"), []byte(`{"top_k": "many"}`), 0o644))
	_, err = LoadGenerationConfig(filepath.Join(tmp, "bad.json"))
	require.ErrorContains(t, err, `bad.json: field "top_k"`)
}

func TestParseGenerationConfig(t *testing.T) {
	c, err := ParseGenerationConfig([]byte(`{
		"max_new_tokens": 12, "do_sample": true, "temperature": 0.6, "top_k": 0, "top_p": 0,
		"repetition_penalty": 1.1, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
		"num_beams": 4, "length_penalty": 0, "early_stopping": "never", "num_return_sequences": 2,
		"min_new_tokens": 3, "seed": 42, "transformers_version": "4.39.0", "max_length": null}`))
	require.NoError(t, err)
	pad, seed := int64(151643), int64(42)
	require.Equal(t, GenerationConfig{
		MaxLength: 20, MaxNewTokens: 12, MinNewTokens: 3, DoSample: true, Temperature: 0.6, TopK: 0, TopP: tiny,
		RepetitionPenalty: 1.1, EOSTokenID: TokenIDs{151645, 151643}, PadTokenID: &pad, NumBeams: 4,
		LengthPenalty: tiny, EarlyStopping: EarlyStoppingNever, NumReturnSequences: 2, Seed: &seed,
	}, c)

	for js, want := range map[string]EarlyStopping{`true`: EarlyStoppingOn, `false`: EarlyStoppingHeuristic, `"never"`: EarlyStoppingNever} {
		c, err := ParseGenerationConfig([]byte(`{"early_stopping": ` + js + `}`))
		require.NoError(t, err)
		require.Equal(t, want, c.EarlyStopping)
		b, err := json.Marshal(c.EarlyStopping)
		require.NoError(t, err)
		require.Equal(t, js, string(b))
	}
	_, err = ParseGenerationConfig([]byte(`{"early_stopping": "sometimes"}`))
	require.ErrorContains(t, err, "early_stopping")
	_, err = ParseGenerationConfig([]byte(`{"max_new_tokens": 1.5}`))
	require.ErrorContains(t, err, "not an integer")
	_, err = ParseGenerationConfig([]byte(`{"eos_token_id": "x"}`))
	require.ErrorContains(t, err, "eos_token_id")

	b, err := json.Marshal(TokenIDs{5})
	require.NoError(t, err)
	require.Equal(t, "5", string(b))
	b, _ = json.Marshal(TokenIDs{5, 6})
	require.Equal(t, "[5,6]", string(b))
}

func TestUpdate(t *testing.T) {
	base := DefaultGenerationConfig()
	c, err := base.Update(map[string]any{"max_new_tokens": 5, "eos_token_id": 3, "do_sample": true, "top_p": 0.8})
	require.NoError(t, err)
	require.Equal(t, 5, c.MaxNewTokens)
	require.Equal(t, TokenIDs{3}, c.EOSTokenID)
	require.True(t, c.DoSample)
	require.Equal(t, 0.8, c.TopP)
	require.Equal(t, 0, base.MaxNewTokens, "the receiver is not modified")
	_, err = base.Update(map[string]any{"max_tokens": 5})
	require.ErrorContains(t, err, `unknown generation field "max_tokens"`)
}

func TestResolve(t *testing.T) {
	p, err := GenerationConfig{MaxNewTokens: 4}.resolve(10)
	require.NoError(t, err)
	require.Equal(t, 14, p.maxLength)
	require.Equal(t, greedy, p.mode)
	require.Equal(t, 1.0, p.temperature)
	require.Equal(t, 1.0, p.lengthPenalty)
	require.False(t, p.hasPad)

	p, err = GenerationConfig{MaxLength: 30, EOSTokenID: TokenIDs{9, 4}}.resolve(10)
	require.NoError(t, err)
	require.Equal(t, 30, p.maxLength)
	require.Equal(t, int64(9), p.pad)
	require.True(t, p.hasPad)

	for _, tc := range []struct {
		c    GenerationConfig
		want string
	}{
		{GenerationConfig{}, "max_length 20 leaves no room"},
		{GenerationConfig{MaxNewTokens: 2, NumReturnSequences: 2}, "greedy decoding returns one sequence"},
		{GenerationConfig{MaxNewTokens: 2, NumBeams: 2, NumReturnSequences: 3}, "must not exceed num_beams"},
		{GenerationConfig{MaxNewTokens: 2, TopP: 1.5}, "top_p"},
		{GenerationConfig{MaxNewTokens: 2, TopK: -1}, "top_k"},
		{GenerationConfig{MaxNewTokens: 2, Temperature: -1}, "temperature"},
		{GenerationConfig{MaxNewTokens: -2}, "max_new_tokens"},
		{GenerationConfig{MaxNewTokens: 2, NumBeams: -1}, "num_beams"},
	} {
		_, err := tc.c.resolve(20)
		require.ErrorContains(t, err, tc.want)
	}
	p, err = GenerationConfig{MaxNewTokens: 2, NumBeams: 3, NumReturnSequences: 2, DoSample: true}.resolve(4)
	require.NoError(t, err)
	require.Equal(t, beamSample, p.mode)
	require.Equal(t, 3, p.expand())
	p, err = GenerationConfig{MaxNewTokens: 2, NumReturnSequences: 5, DoSample: true}.resolve(4)
	require.NoError(t, err)
	require.Equal(t, sample, p.mode)
	require.Equal(t, 5, p.expand())
}
