package oft

import (
	"testing"

	"github.com/gopeft/peft/internal/fuzzseed"
)

// FuzzOFTConfig: any bytes as adapter_config.json decode without a panic; a
// config that decodes (and so validates) renders to JSON that decodes to
// the same rendering.
func FuzzOFTConfig(f *testing.F) {
	fuzzseed.AddAdapterConfigs(f)
	f.Fuzz(func(t *testing.T, data []byte) { fuzzseed.ConfigRoundTrip(t, data, Decode) })
}
