package models_test

import (
	"encoding/json"
	"fmt"

	"github.com/gopeft/peft/models"
)

// ParseRope reads a config.json's rope settings; Frequencies gives the
// inverse frequencies and attention scaling of a call (here Llama 3.1's
// llama3 rule, which keeps high frequencies and divides low ones by 8).
func ExampleParseRope() {
	var raw map[string]any
	_ = json.Unmarshal([]byte(`{"rope_theta": 500000.0, "max_position_embeddings": 131072,
		"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
		                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}`), &raw)
	r, err := models.ParseRope(raw, 500000, 128, 131072)
	if err != nil {
		fmt.Println(err)
		return
	}
	inv, att := r.Frequencies(1)
	fmt.Println(r.Type, r.Dim, len(inv), att)
	fmt.Printf("highest %.4g, lowest %.4g\n", inv[0], inv[len(inv)-1])

	// a bad block fails naming the field
	_ = json.Unmarshal([]byte(`{"rope_scaling": {"rope_type": "yarn", "factor": "4"}}`), &raw)
	_, err = models.ParseRope(raw, 10000, 64, 4096)
	fmt.Println(err)
	// Output:
	// llama3 128 64 1
	// highest 1, lowest 3.069e-07
	// field "rope_scaling.factor": want a number, got 4
}
