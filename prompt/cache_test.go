package prompt_test

import (
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// Decoding with the KV cache: a first call with the prompt (virtual tokens
// injected, cache filled), then the last token alone with the cache (no
// second injection; the mask covers the caller's tokens), gives the full
// forward's last-position logits — for both rows, left padding included.
func TestCacheDecoding(t *testing.T) {
	for _, name := range fixtureNames {
		t.Run(name, func(t *testing.T) {
			e := openExpected(t, name)
			m, err := peft.Load(loadBase(t), adapterDir(t, name))
			require.NoError(t, err)
			defer nn.FreeParams(m)
			ids, shape := e.I64(t, "input_ids")
			mask, _ := e.I64(t, "attention_mask")
			s := tensor.NoGradScope()
			defer s.Close()
			B, L := shape[0], shape[1]
			idsT, maskT := s.FromInt64(ids, shape...), s.FromInt64(mask, shape...)

			full := m.ForwardT(s, &models.Batch{InputIDs: idsT, AttentionMask: maskT})
			require.NoError(t, s.Err())
			want := s.Float32s(s.Select(full.Logits, 1, 8+L-1))

			first := m.ForwardT(s, &models.Batch{InputIDs: s.Narrow(idsT, 1, 0, L-1),
				AttentionMask: s.Narrow(maskT, 1, 0, L-1), UseCache: true})
			require.NoError(t, s.Err())
			cache := first.PastKeyValues
			defer cache.Free()
			require.Equal(t, 8+L-1, cache.Len(), "the virtual tokens are in the cache")
			require.Equal(t, []int64{B, 8 + L - 1, 512}, first.Logits.Shape())

			step := m.ForwardT(s, &models.Batch{InputIDs: s.Narrow(idsT, 1, L-1, 1), AttentionMask: maskT,
				PastKeyValues: cache, UseCache: true})
			require.NoError(t, s.Err())
			require.Equal(t, []int64{B, 1, 512}, step.Logits.Shape())
			require.Equal(t, 8+L, cache.Len())
			d := testutil.MaxDiff(s.Float32s(step.Logits), want)
			t.Logf("cached step vs full forward: %.3g", d)
			require.LessOrEqual(t, d, 1e-4)
		})
	}
}
