package prefix_test

import (
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prefix"
	"github.com/stretchr/testify/require"
)

// Issue #19 item 8: a new prefix adapter on a GQA model (llama-tiny: 4
// heads, 2 key/value heads, head size 16) with token_dim /
// num_attention_heads given by the user: PEFT's rule rescales them to the
// key/value geometry (token_dim / heads × kv_heads, kv_heads heads), so
// consistent values give the kv-sized prefix and inconsistent ones are
// refused by the geometry check.
func TestGQAWithUserGivenGeometry(t *testing.T) {
	dir := filepath.Join("..", "testdata", "hf", "llama-tiny")
	base, err := llama.Load(dir)
	require.NoError(t, err, "golden fixtures expected at testdata/hf")
	defer base.Free()
	for _, c := range []struct {
		tokenDim, heads int
		err             string
	}{
		{64, 4, ""},                          // the model's hidden size and heads: 64/4·2 = 32 over 2 heads
		{128, 8, ""},                         // another split of the same head size: 128/8·2 = 32
		{64, 0, ""},                          // heads filled from the model (4)
		{96, 4, "token_dim 48 over 2 heads"}, // 96/4·2 = 48: head size 24, not 16
		{64, 2, "token_dim 64 over 2 heads"}, // 64/2·2 = 64: head size 32
	} {
		cfg := &prefix.Config{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 3, TokenDim: c.tokenDim, NumAttentionHeads: c.heads}}
		m, err := peft.New(base, cfg)
		if c.err != "" {
			require.ErrorContains(t, err, c.err, "%+v", c)
			continue
		}
		require.NoError(t, err, "%+v", c)
		require.Equal(t, 32, cfg.TokenDim, "%+v", c)
		require.Equal(t, 2, cfg.NumAttentionHeads, "%+v", c)
		state, err := m.AdapterStateDict(peft.DefaultAdapter)
		require.NoError(t, err)
		require.Equal(t, []int64{3, 2 * 2 * 32}, state[0].Param.Shape())
		_, err = m.Unload()
		require.NoError(t, err)
	}
}
