package main

import (
	"slices"
	"testing"
)

// scaleTokens must give the ids reference_scale.py's scale_tokens gives
// (values printed by the Python function), so that both sides of the scale
// benchmark see the same prompts and batches.
func TestScaleTokensMatchReference(t *testing.T) {
	for _, c := range []struct {
		seed  uint64
		vocab int64
		want  []int64
	}{
		{1000, 151936, []int64{16865, 76717, 145525, 8456, 67696, 63609}},
		{0, 32000, []int64{15535, 19700, 25679}},
	} {
		if got := scaleTokens(c.seed, len(c.want), c.vocab); !slices.Equal(got, c.want) {
			t.Errorf("scaleTokens(%d, %d, %d) = %v, want %v", c.seed, len(c.want), c.vocab, got, c.want)
		}
	}
}
