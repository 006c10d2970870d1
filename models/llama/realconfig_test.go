package llama

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/stretchr/testify/require"
)

// The real Llama-3.2-1B, Qwen3-0.6B and Phi-4-mini configs
// (testdata/configs) parse, with their rope, and the module tree built
// from them (placeholders: shapes without memory) has the published
// parameter counts.
func TestRealConfigs(t *testing.T) {
	dir := filepath.Join(filepath.Dir(fixtures(t)), "configs")
	for _, c := range []struct {
		file     string
		params   int64
		rope     string
		rotary   int64
		attScale float64
	}{
		{"llama-3.2-1b.json", 1_235_814_400, "llama3", 64, 1},
		{"qwen3-0.6b.json", 596_049_920, "default", 128, 1},
		{"phi-4-mini.json", 3_836_021_760, "longrope", 96, 1.1902380714238083}, // sqrt(1 + ln 32 / ln 4096)
	} {
		t.Run(c.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, c.file))
			require.NoError(t, err)
			cfg, err := ParseConfig(c.file, data)
			require.NoError(t, err)
			r, err := cfg.Rope()
			require.NoError(t, err)
			require.Equal(t, c.rope, r.Type)
			require.Equal(t, c.rotary, r.Dim)
			inv, att := r.Frequencies(10)
			require.Len(t, inv, int(c.rotary/2))
			require.InDelta(t, c.attScale, att, 1e-12)
			m, err := skeleton(cfg)
			require.NoError(t, err)
			defer nn.FreeParams(m)
			_, total := nn.CountParams(m)
			require.Equal(t, c.params, total)
		})
	}
}
