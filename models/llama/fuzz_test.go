package llama

import (
	"testing"

	"github.com/gopeft/peft/internal/fuzzseed"
)

// FuzzParseConfig: any bytes as config.json parse without a panic; a
// config that parses renders (JSON) to a file that parses to the same
// rendering.
func FuzzParseConfig(f *testing.F) {
	fuzzseed.AddModelConfigs(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		parse := func(b []byte) (*Config, error) { return ParseConfig("config.json", b) }
		fuzzseed.RoundTrip(t, data, parse, (*Config).JSON)
	})
}
