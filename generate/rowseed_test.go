package generate

import (
	"fmt"
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// A prompt's samples depend on its own seed only: the same prompt alone,
// in a batch, beside other prompts, with other settings of the others.
func TestSamplingIndependentOfBatch(t *testing.T) {
	m := loadTiny(t)
	seed := int64(42)
	cfg := GenerationConfig{MaxNewTokens: 8, DoSample: true, TopK: 50, Seed: &seed}
	prompts := [][]int64{{5, 9, 200, 33}, {17, 4}, {300, 301, 302}}
	aloneWith := func(p []int64, seed int64, k int) [][]int64 {
		c := cfg
		c.Seed, c.NumReturnSequences = &seed, k
		out, err := Generate(bg, m, Input{InputIDs: [][]int64{p}}, c)
		require.NoError(t, err)
		var rows [][]int64
		for j := 0; j < k; j++ {
			rows = append(rows, out.NewTokens(j))
		}
		return rows
	}

	// cfg.Seed: every prompt samples what it samples alone with that seed
	out, err := Generate(bg, m, LeftPad(prompts, 0), cfg)
	require.NoError(t, err)
	for i, p := range prompts {
		require.Equal(t, aloneWith(p, seed, 1)[0], out.NewTokens(i), "prompt %d", i)
	}
	// reversed batch: the same tokens per prompt
	rev := [][]int64{prompts[2], prompts[1], prompts[0]}
	out2, err := Generate(bg, m, LeftPad(rev, 0), cfg)
	require.NoError(t, err)
	for i := range rev {
		require.Equal(t, out.NewTokens(2-i), out2.NewTokens(i), "prompt %d reversed", 2-i)
	}

	// Input.Seeds: prompt i with Seeds[i]; samples j of a prompt differ
	in := LeftPad(prompts, 0)
	in.Seeds = []int64{1, 2, 3}
	c := cfg
	c.NumReturnSequences = 2
	out3, err := Generate(bg, m, in, c)
	require.NoError(t, err)
	distinct := map[string]bool{}
	for i, p := range prompts {
		want := aloneWith(p, in.Seeds[i], 2)
		for j := 0; j < 2; j++ {
			require.Equal(t, want[j], out3.NewTokens(2*i+j), "prompt %d sample %d", i, j)
			distinct[fmt.Sprint(want[j])] = true
		}
	}
	require.Greater(t, len(distinct), 3, "the seeds give different samples")

	// the seeds must match the prompts
	in.Seeds = []int64{1}
	_, err = Generate(bg, m, in, cfg)
	require.ErrorContains(t, err, "1 seeds for 3 prompts")
}

// The Decoder picks what Generate picks, fed the same logits.
func TestDecoderEqualsGenerate(t *testing.T) {
	m := loadTiny(t)
	seed := int64(7)
	for _, cfg := range []GenerationConfig{
		{MaxNewTokens: 6},
		{MaxNewTokens: 6, DoSample: true, Seed: &seed, TopK: 30, TopP: 0.9, Temperature: 0.8, RepetitionPenalty: 1.2},
	} {
		p := []int64{5, 9, 200, 33}
		out, err := Generate(bg, m, Input{InputIDs: [][]int64{p}}, cfg)
		require.NoError(t, err)
		d, err := NewDecoder(cfg, p, nil)
		require.NoError(t, err)
		require.Equal(t, 6, d.MaxNewTokens())
		// the decoder fed with the model's cached forwards
		s := tensor.NoGradScope()
		cache := &models.Cache{}
		ids := p
		for step := 0; step < 6; step++ {
			o := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, 1, int64(len(ids))), PastKeyValues: cache, UseCache: true, LastLogitsOnly: true})
			require.NoError(t, s.Err())
			tok, err := d.Next(s, s.Select(o.Logits, 1, o.Logits.Size(1)-1))
			require.NoError(t, err)
			ids = []int64{tok}
		}
		cache.Free()
		s.Close()
		require.Equal(t, out.NewTokens(0), d.Generated(), "%+v", cfg)
	}
	_, err := NewDecoder(GenerationConfig{MaxNewTokens: 2, NumBeams: 2}, []int64{1}, nil)
	require.ErrorContains(t, err, "num_beams 2")
	_, err = NewDecoder(GenerationConfig{MaxNewTokens: 2}, nil, nil)
	require.ErrorContains(t, err, "no prompt tokens")
}
