package bert

import (
	"bytes"
	"testing"

	"github.com/gopeft/peft/internal/fuzzseed"
)

// FuzzParseConfig: any bytes as config.json parse without a panic; a
// config that parses renders (JSON) to a file that parses to the same
// rendering.
func FuzzParseConfig(f *testing.F) {
	for _, b := range fuzzseed.Files("hf/*/config.json") {
		f.Add(b)
	}
	f.Add([]byte(`{"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 10, "n_embd": 8, "n_layer": 1, "n_head": 2}`))
	f.Add([]byte(`{"hidden_size": -1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("config.json", data)
		if err != nil {
			return
		}
		out, err := c.JSON("")
		if err != nil {
			t.Fatalf("render of a config that parsed: %v", err)
		}
		c2, err := ParseConfig("config.json", out)
		if err != nil {
			t.Fatalf("re-parse of the rendering: %v\n%s", err, out)
		}
		out2, err := c2.JSON("")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, out2) {
			t.Fatalf("rendering changed on a round trip:\n%s\n%s", out, out2)
		}
	})
}
