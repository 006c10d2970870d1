package generate

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Issue #19 item 6: values HF refuses, given explicitly in a
// generation_config.json or through Update, are errors (they used to read
// as "unset", i.e. HF's default, while the CLI refused them).
func TestExplicitZeroKnobsRefused(t *testing.T) {
	for in, field := range map[string]string{
		`{"max_new_tokens": 0}`:                   "max_new_tokens",
		`{"max_new_tokens": -3}`:                  "max_new_tokens",
		`{"repetition_penalty": 0}`:               "repetition_penalty",
		`{"repetition_penalty": -1.5}`:            "repetition_penalty",
		`{"do_sample": true, "temperature": 0}`:   "temperature",
		`{"temperature": 0.0, "do_sample": true}`: "temperature",
		`{"max_new_tokens": 1.5}`:                 "max_new_tokens",
		`{"top_k": "many"}`:                       "top_k",
	} {
		_, err := ParseGenerationConfig([]byte(in))
		require.ErrorContains(t, err, field, in)
	}
	_, err := DefaultGenerationConfig().Update(map[string]any{"max_new_tokens": 0})
	require.ErrorContains(t, err, "max_new_tokens")
	// greedy decoding ignores a temperature of 0, as HF does
	c, err := ParseGenerationConfig([]byte(`{"temperature": 0, "do_sample": false}`))
	require.NoError(t, err)
	c.MaxNewTokens = 4
	_, err = c.resolve(3)
	require.NoError(t, err)
}
