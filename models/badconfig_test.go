package models_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// withConfig makes a copy of fixture name (weights linked, not copied)
// whose config.json has the given fields changed.
func withConfig(t *testing.T, name string, set map[string]any) string {
	src, err := filepath.Abs(fixture(t, name))
	require.NoError(t, err)
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	require.NoError(t, err)
	for _, e := range entries {
		if e.Name() != "config.json" {
			require.NoError(t, os.Symlink(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())))
		}
	}
	data, err := os.ReadFile(filepath.Join(src, "config.json"))
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(data, &m))
	for k, v := range set {
		m[k] = v
	}
	out, err := json.Marshal(m)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dst, "config.json"), out, 0o644))
	return dst
}

// Issue #19 items 4 and 6: config.json values that allocated a skeleton of
// 10^6 layers (or killed the runtime at 10^12) or gave NaN logits are
// refused, before anything is built, in every family.
func TestBadModelConfigRefused(t *testing.T) {
	layers := map[string]string{"llama-tiny": "num_hidden_layers", "gpt2-tiny": "n_layer", "bloom-tiny": "n_layer", "bert-tiny": "num_hidden_layers"}
	eps := map[string]string{"llama-tiny": "rms_norm_eps", "gpt2-tiny": "layer_norm_epsilon", "bloom-tiny": "layer_norm_epsilon", "bert-tiny": "layer_norm_eps"}
	loaders := familyLoaders()
	for name, ld := range loaders {
		t.Run(name, func(t *testing.T) {
			for _, n := range []float64{3, 1e6, 1e12} {
				var before runtime.MemStats
				runtime.ReadMemStats(&before)
				start := time.Now()
				_, err := ld(withConfig(t, name, map[string]any{layers[name]: n}))
				require.ErrorContains(t, err, layers[name])
				require.ErrorContains(t, err, "the checkpoint has 2 layers")
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(64<<20), "%s = %g: allocated before refusing", layers[name], n)
				require.Less(t, time.Since(start), 10*time.Second)
			}
			_, err := ld(withConfig(t, name, map[string]any{eps[name]: -1e-5}))
			require.ErrorContains(t, err, eps[name])
			// a hidden size of 10^9 allocated LayerNorm weights before the
			// shapes were compared; now the embedding's header is checked first
			for _, set := range []map[string]any{{"hidden_size": 1e9, "n_embd": 1e9}, {"vocab_size": 1 << 40}} {
				var before runtime.MemStats
				runtime.ReadMemStats(&before)
				_, err := ld(withConfig(t, name, set))
				require.ErrorContains(t, err, "the checkpoint has", "%v", set)
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(64<<20))
			}
		})
	}
	for field, v := range map[string]any{"head_dim": -8, "rope_theta": -1, "max_position_embeddings": -5} {
		_, err := loaders["llama-tiny"](withConfig(t, "llama-tiny", map[string]any{field: v}))
		require.ErrorContains(t, err, field)
	}
}
