package ia3

import (
	"testing"

	"github.com/gopeft/peft/internal/fuzzseed"
)

// FuzzIA3Config: any bytes as adapter_config.json decode without a panic; a
// config that decodes (and so validates) renders to JSON that decodes to
// the same rendering.
func FuzzIA3Config(f *testing.F) {
	fuzzseed.AddAdapterConfigs(f)
	f.Fuzz(func(t *testing.T, data []byte) { fuzzseed.ConfigRoundTrip(t, data, Decode) })
}
