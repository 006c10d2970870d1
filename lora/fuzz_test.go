package lora

import (
	"bytes"
	"testing"

	"github.com/gopeft/peft/internal/fuzzseed"
)

// FuzzLoRAConfig: any bytes as adapter_config.json decode without a panic; a
// config that decodes (and so validates) renders to JSON that decodes to
// the same rendering.
func FuzzLoRAConfig(f *testing.F) {
	for _, b := range fuzzseed.Files("hf/adapters/*/*/adapter_config.json") {
		f.Add(b)
	}
	f.Add([]byte(`{"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"], "layers_pattern": "(", "layers_to_transform": 0}`))
	f.Add([]byte(`{"num_virtual_tokens": 4, "token_dim": 8, "num_attention_heads": 2, "num_layers": 2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		if err != nil {
			return
		}
		out, err := c.MarshalJSON()
		if err != nil {
			t.Fatalf("render of a config that decoded: %v", err)
		}
		c2, err := Decode(out)
		if err != nil {
			t.Fatalf("re-decode of the rendering: %v\n%s", err, out)
		}
		out2, err := c2.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, out2) {
			t.Fatalf("rendering changed on a round trip:\n%s\n%s", out, out2)
		}
	})
}
