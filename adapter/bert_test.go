package adapter

import (
	"path/filepath"
	"sort"
	"testing"

	"github.com/gopeft/peft/models/bert"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/stretchr/testify/require"
)

func TestMatchModuleWildcard(t *testing.T) {
	require.True(t, matchModule("bert.encoder.layer.3.output.dense", "layer.*.output.dense"))
	require.False(t, matchModule("bert.encoder.layer.3.attention.output.dense", "layer.*.output.dense"))
	require.True(t, matchModule("bert.encoder.layer.3.attention.output.dense", "attention.output.dense"))
	require.True(t, matchModule("model.layers.0.mlp.down_proj", "mlp.down_proj"))
	require.False(t, matchModule("output.dense", "layer.*.output.dense"))
	require.True(t, matchModule("a.b", "*.b"))
}

// On BERT the defaults put Houlsby's adapters after attention.output.dense
// and after the feed-forward output.dense of every layer, and Pfeiffer's
// after the feed-forward output only.
func TestBertPlacement(t *testing.T) {
	wrapped := func(cfg *Config) []string {
		base, err := bert.LoadForSequenceClassification(filepath.Join("..", "testdata", "hf", "bert-tiny"))
		require.NoError(t, err)
		cfg.Task = peft.SeqCls
		m, err := peft.New(base, cfg)
		require.NoError(t, err)
		defer nn.FreeParams(m)
		var out []string
		_ = nn.Walk(m.Base(), func(path string, mod nn.Module) error {
			if _, ok := mod.(*Layer); ok {
				out = append(out, path)
			}
			return nil
		})
		sort.Strings(out)
		return out
	}
	require.Equal(t, []string{
		"bert.encoder.layer.0.attention.output.dense", "bert.encoder.layer.0.output.dense",
		"bert.encoder.layer.1.attention.output.dense", "bert.encoder.layer.1.output.dense",
	}, wrapped(Houlsby()))
	require.Equal(t, []string{"bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.output.dense"}, wrapped(Pfeiffer()))
}
