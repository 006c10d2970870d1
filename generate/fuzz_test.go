package generate

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/gopeft/peft/internal/fuzzseed"
)

// FuzzParseGenerationConfig: any bytes as generation_config.json parse
// without a panic; a config that parses marshals to JSON that parses to
// the same config, and resolving it against a prompt does not panic.
func FuzzParseGenerationConfig(f *testing.F) {
	for _, b := range fuzzseed.Files("hf/*/generation_config.json", "hf/*/config.json") {
		f.Add(b)
	}
	f.Add([]byte(`{"do_sample": true, "temperature": 0.7, "top_k": 20, "top_p": 0.8, "repetition_penalty": 1.05, "eos_token_id": [2, 7], "pad_token_id": 0, "max_new_tokens": 16}`))
	f.Add([]byte(`{"num_beams": 4, "num_return_sequences": 2, "length_penalty": 0, "early_stopping": "never", "top_p": 0}`))
	f.Add([]byte(`{"max_length": null, "eos_token_id": null, "seed": 42}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseGenerationConfig(data)
		if err != nil {
			return
		}
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("marshal of a config that parsed: %v", err)
		}
		c2, err := ParseGenerationConfig(out)
		if err != nil {
			t.Fatalf("re-parse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v\n%s", c, c2, out)
		}
		_, _ = c.resolve(5)
	})
}
