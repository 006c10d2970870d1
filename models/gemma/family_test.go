package gemma_test

import (
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/gemma"
	"github.com/gopeft/peft/tensor"
)

// The checks every family passes, on both Gemma versions: the KV cache
// (prompt at once, then token by token, sliding windows shorter than the
// row) gives the full pass's logits; prefix key/values equal a cache of
// the same keys; every parameter gets a gradient, with and without
// activation checkpointing (same gradients); RSS stays flat over training.
func TestFamilyChecks(t *testing.T) {
	for _, name := range tiny {
		t.Run(name, func(t *testing.T) {
			m := load(t, name)
			g := openGolden(t, name)
			ids, sh := g.i64(t, "input_ids")
			mask, _ := g.i64(t, "attention_mask")
			labels, _ := g.i64(t, "labels")
			testutil.RequireKVCacheMatchesFull(t, m, ids, mask, 2, 4, g.f32(t, "logits"), nil)
			testutil.RequirePrefixKVEqualsCache(t, m, ids[:12], 7)
			batch := func(s *tensor.Scope, ck *models.Checkpoint) *models.Batch {
				return &models.Batch{InputIDs: s.FromInt64(ids, sh...), AttentionMask: s.FromInt64(mask, sh...),
					Labels: s.FromInt64(labels, sh...), Checkpoint: ck}
			}
			testutil.RequireBackwardThroughEverything(t, m, batch)
			testutil.RequireCheckpointingSameGradients(t, m, batch)
			testutil.RequireTrainingRSSFlat(t, m, batch)
		})
	}
}

var _ models.Sized = (*gemma.Model)(nil)
