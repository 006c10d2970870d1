package adalora

import (
	"testing"

	"github.com/gopeft/peft/internal/fuzzseed"
)

// FuzzAdaLoRAConfig: any bytes as adapter_config.json decode without a
// panic; a config that decodes (and so validates) renders to JSON that
// decodes to the same rendering.
func FuzzAdaLoRAConfig(f *testing.F) {
	fuzzseed.AddAdapterConfigs(f)
	f.Add([]byte(`{"peft_type": "ADALORA", "init_r": 2, "target_r": 1, "total_step": 4, "rank_pattern": {"a.lora_E": [true, false]}}`))
	f.Fuzz(func(t *testing.T, data []byte) { fuzzseed.ConfigRoundTrip(t, data, Decode) })
}
