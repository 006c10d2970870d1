package generate

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/adapter"
	_ "github.com/gopeft/peft/ia3"
	"github.com/gopeft/peft/internal/memstat"
	_ "github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/peft"
	_ "github.com/gopeft/peft/prefix"
	_ "github.com/gopeft/peft/prompt"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// greedy8 is the fixtures' setting: greedy, 8 new tokens, eos disabled.
func greedy8() GenerationConfig {
	c := DefaultGenerationConfig()
	c.MaxNewTokens = 8
	c.OutputScores = true
	return c
}

func loadAdapter(t testing.TB, base models.CausalLM, name string) *peft.Model {
	pm, err := peft.Load(base, filepath.Join(fixtures(t), "adapters", "llama-tiny", name))
	require.NoError(t, err)
	return pm
}

// The llama-tiny__generate-* fixtures are HF's greedy generate(): the same
// sequences, and every step's scores within 1e-4.
func TestGreedyMatchesHFFixtures(t *testing.T) {
	for _, tc := range []struct{ fixture, adapter string }{
		{"llama-tiny__generate-base", ""},
		{"llama-tiny__generate-lora-default", "lora-default"},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			var m Model = loadTiny(t)
			if tc.adapter != "" {
				m = loadAdapter(t, m.(models.CausalLM), tc.adapter)
			}
			e := openExpected(t, tc.fixture)
			wantSeq, seqShape := e.i64(t, "sequences")
			wantScores, scoreShape := e.f32(t, "scores")
			out, err := Generate(bg, m, fixtureInput(t), greedy8())
			require.NoError(t, err)
			require.Equal(t, rows(wantSeq, seqShape), out.Sequences)
			require.Equal(t, [3]int{int(scoreShape[0]), int(scoreShape[1]), int(scoreShape[2])}, out.ScoresShape)
			d := maxAbsDiff(out.Scores, wantScores)
			t.Logf("max |scores - HF| = %.3g", d)
			require.LessOrEqual(t, d, 1e-4)
		})
	}
}

// methods builds llama-tiny with each method attached (the fixtures'
// adapters, a merged LoRA, and a bottleneck adapter initialised away from
// the identity).
func methods(t *testing.T) map[string]func() Model {
	load := func(name string) func() Model {
		return func() Model { return loadAdapter(t, loadTiny(t), name) }
	}
	return map[string]func() Model{
		"base":                 func() Model { return loadTiny(t) },
		"lora-default":         load("lora-default"),
		"lora-dora":            load("lora-dora"),
		"lora-rich":            load("lora-rich"),
		"ia3":                  load("ia3"),
		"prompt-tuning-random": load("prompt-tuning-random"),
		"prompt-tuning-text":   load("prompt-tuning-text"),
		"p-tuning-mlp":         load("p-tuning-mlp"),
		"p-tuning-lstm":        load("p-tuning-lstm"),
		"prefix-proj":          load("prefix-proj"),
		"prefix-noproj":        load("prefix-noproj"),
		"lora-default-merged": func() Model {
			merged, err := loadAdapter(t, loadTiny(t), "lora-default").MergeAndUnload()
			require.NoError(t, err)
			return merged
		},
		"ia3-merged": func() Model {
			merged, err := loadAdapter(t, loadTiny(t), "ia3").MergeAndUnload()
			require.NoError(t, err)
			return merged
		},
		"bottleneck-houlsby": func() Model {
			cfg := adapter.Houlsby()
			cfg.InitWeights = "bert"
			pm, err := adapter.Wrap(loadTiny(t), cfg)
			require.NoError(t, err)
			return pm
		},
	}
}

// Greedy decoding with the KV cache (virtual tokens and prefixes entering
// it once) gives the tokens and scores of step-by-step argmax over full
// forwards without a cache, for every method, on the left-padded batch.
func TestCacheEqualsFullForwardsForEveryMethod(t *testing.T) {
	for name, build := range methods(t) {
		t.Run(name, func(t *testing.T) {
			m := build()
			cached, err := Generate(bg, m, fixtureInput(t), greedy8())
			require.NoError(t, err)
			full, err := Generate(bg, fullForwards{m}, fixtureInput(t), greedy8())
			require.NoError(t, err)
			require.Equal(t, full.Sequences, cached.Sequences)
			require.LessOrEqual(t, maxAbsDiff(cached.Scores, full.Scores), 1e-4)
		})
	}
}

// BLOOM (ALiBi positions from the mask) and its bias="all" LoRA fixture.
func TestBloomCacheEqualsFullForwards(t *testing.T) {
	dir := filepath.Join(fixtures(t), "bloom-tiny")
	for _, withLoRA := range []bool{false, true} {
		m, err := bloom.Load(dir)
		require.NoError(t, err)
		t.Cleanup(m.Free)
		var model Model = m
		if withLoRA {
			pm, err := peft.Load(m, filepath.Join(fixtures(t), "adapters", "bloom-tiny", "lora-qkv"))
			require.NoError(t, err)
			model = pm
		}
		cached, err := Generate(bg, model, fixtureInput(t), greedy8())
		require.NoError(t, err)
		full, err := Generate(bg, fullForwards{model}, fixtureInput(t), greedy8())
		require.NoError(t, err)
		require.Equal(t, full.Sequences, cached.Sequences)
		require.LessOrEqual(t, maxAbsDiff(cached.Scores, full.Scores), 1e-4)
	}
}

// A left-padded row gets the tokens it gets alone, without padding.
func TestBatchedRowsEqualRowsAlone(t *testing.T) {
	in := fixtureInput(t)
	for _, name := range []string{"base", "lora-default", "prefix-proj", "prompt-tuning-random"} {
		t.Run(name, func(t *testing.T) {
			m := methods(t)[name]()
			cfg := greedy8()
			cfg.OutputScores = false
			batch, err := Generate(bg, m, in, cfg)
			require.NoError(t, err)
			for i := range in.InputIDs {
				var prompt []int64
				for j, v := range in.AttentionMask[i] {
					if v == 1 {
						prompt = append(prompt, in.InputIDs[i][j])
					}
				}
				alone, err := Generate(bg, m, Input{InputIDs: [][]int64{prompt}}, cfg)
				require.NoError(t, err)
				require.Equal(t, batch.NewTokens(i), alone.NewTokens(0), "row %d", i)
			}
		})
	}
}

// Per-prompt adapters: prompt 0 through the LoRA adapter, prompt 1 through
// the base model reproduce the two fixtures' rows.
func TestRowAdaptersReproduceFixtures(t *testing.T) {
	pm := loadAdapter(t, loadTiny(t), "lora-default")
	out, err := Generate(bg, RowAdapters(pm, []string{"default", peft.BaseAdapterName}), fixtureInput(t), greedy8())
	require.NoError(t, err)
	lora, shape := openExpected(t, "llama-tiny__generate-lora-default").i64(t, "sequences")
	base, _ := openExpected(t, "llama-tiny__generate-base").i64(t, "sequences")
	require.Equal(t, rows(lora, shape)[0], out.Sequences[0])
	require.Equal(t, rows(base, shape)[1], out.Sequences[1])

	_, err = Generate(bg, RowAdapters(pm, []string{"default", "default"}), Input{InputIDs: [][]int64{{1}, {2}, {3}}}, greedy8())
	require.ErrorContains(t, err, "adapter names")
}

// eos (one or several) stops each row; finished rows are padded with
// pad_token_id (eos[0] by default); generation ends once every row has.
func TestEOSStopsRowsAndPads(t *testing.T) {
	m := loadTiny(t)
	in := fixtureInput(t)
	// greedy continuations: row 0 327 71 76 …, row 1 313 372 62 …
	cfg := greedy8()
	cfg.EOSTokenID = TokenIDs{71}
	out, err := Generate(bg, m, in, cfg)
	require.NoError(t, err)
	require.Equal(t, []int64{327, 71, 71, 71, 71, 71, 71, 71}, out.Sequences[0][12:])
	require.Equal(t, []int64{327, 71}, out.NewTokens(0))
	require.Equal(t, []int64{313, 372, 62, 389, 343, 169, 372, 62}, out.Sequences[1][12:])

	pad := int64(0)
	cfg.PadTokenID = &pad
	cfg.EOSTokenID = TokenIDs{372, 71}
	out, err = Generate(bg, m, in, cfg)
	require.NoError(t, err)
	require.Equal(t, [][]int64{append(in.InputIDs[0], 327, 71), append(in.InputIDs[1], 313, 372)}, out.Sequences)
	require.Equal(t, 2, out.ScoresShape[1])

	cfg.EOSTokenID = TokenIDs{76}
	out, err = Generate(bg, m, in, cfg)
	require.NoError(t, err)
	require.Equal(t, []int64{327, 71, 76, 0, 0, 0, 0, 0}, out.Sequences[0][12:])
}

// min_new_tokens and min_length hold the eos tokens at -inf.
func TestMinLengthMasksEOS(t *testing.T) {
	m := loadTiny(t)
	in := fixtureInput(t)
	for _, cfg := range []GenerationConfig{
		func() GenerationConfig { c := greedy8(); c.MinNewTokens = 3; return c }(),
		func() GenerationConfig { c := greedy8(); c.MinLength = 15; return c }(),
	} {
		cfg.EOSTokenID = TokenIDs{71, 372}
		out, err := Generate(bg, m, in, cfg)
		require.NoError(t, err)
		for r := 0; r < 2; r++ {
			for st := 0; st < out.ScoresShape[1]; st++ {
				sc := out.ScoresAt(r, st)
				if st < 3 {
					require.True(t, math.IsInf(float64(sc[71]), -1) && math.IsInf(float64(sc[372]), -1))
				} else {
					require.False(t, math.IsInf(float64(sc[71]), -1))
				}
			}
			require.NotContains(t, out.Sequences[r][12:15], int64(71))
			require.NotContains(t, out.Sequences[r][12:15], int64(372))
		}
	}
}

// Sampling with a seed is reproducible and never picks a token that top-k
// or top-p removed; top_k=1 sampling is greedy decoding.
func TestSamplingSeededAndFiltered(t *testing.T) {
	m := loadTiny(t)
	in := fixtureInput(t)
	seed := int64(7)
	cfg := DefaultGenerationConfig()
	cfg.MaxNewTokens = 20
	cfg.DoSample, cfg.Temperature, cfg.TopK, cfg.TopP = true, 1.5, 5, 0.6
	cfg.NumReturnSequences, cfg.Seed, cfg.OutputScores = 4, &seed, true
	a, err := Generate(bg, m, in, cfg)
	require.NoError(t, err)
	b, err := Generate(bg, m, in, cfg)
	require.NoError(t, err)
	require.Equal(t, a.Sequences, b.Sequences)
	require.Len(t, a.Sequences, 8)
	require.Equal(t, in.InputIDs[0], a.Sequences[3][:12])
	require.Equal(t, in.InputIDs[1], a.Sequences[4][:12])
	other := int64(8)
	cfg.Seed = &other
	c, err := Generate(bg, m, in, cfg)
	require.NoError(t, err)
	require.NotEqual(t, a.Sequences, c.Sequences)

	distinct := map[int64]bool{}
	for r, seq := range a.Sequences {
		for st, tok := range seq[12:] {
			sc := a.ScoresAt(r, st)
			require.False(t, math.IsInf(float64(sc[tok]), -1), "row %d step %d: token %d was filtered out", r, st, tok)
			kept := 0
			for _, v := range sc {
				if !math.IsInf(float64(v), -1) {
					kept++
				}
			}
			require.True(t, kept >= 1 && kept <= 5, "kept %d", kept)
			distinct[tok] = true
		}
	}
	require.Greater(t, len(distinct), 8, "sampling should vary")

	cfg.TopK, cfg.TopP, cfg.NumReturnSequences, cfg.OutputScores = 1, 1, 1, false
	sampled, err := Generate(bg, m, in, cfg)
	require.NoError(t, err)
	want, _ := openExpected(t, "llama-tiny__generate-base").i64(t, "sequences")
	greedyOut, err := Generate(bg, m, in, func() GenerationConfig { c := greedy8(); c.MaxNewTokens = 20; return c }())
	require.NoError(t, err)
	require.Equal(t, greedyOut.Sequences, sampled.Sequences)
	require.Equal(t, want[12:20], greedyOut.Sequences[0][12:20])
}

// Beam search with the cache equals beam search over full forwards, for
// the base model and the prompt/prefix adapters (whose cached virtual
// tokens are reordered with the beams).
func TestBeamSearchCacheEqualsFullForwards(t *testing.T) {
	for _, name := range []string{"base", "lora-default", "prefix-proj", "p-tuning-lstm"} {
		t.Run(name, func(t *testing.T) {
			m := methods(t)[name]()
			cfg := DefaultGenerationConfig()
			cfg.MaxNewTokens, cfg.NumBeams, cfg.NumReturnSequences = 6, 4, 3
			cfg.EOSTokenID = TokenIDs{354, 62} // tokens the beams meet
			cfg.LengthPenalty = 0.7
			cfg.OutputScores = true
			cached, err := Generate(bg, m, fixtureInput(t), cfg)
			require.NoError(t, err)
			full, err := Generate(bg, fullForwards{m}, fixtureInput(t), cfg)
			require.NoError(t, err)
			require.Equal(t, full.Sequences, cached.Sequences)
			require.Len(t, cached.Sequences, 6)
			require.Len(t, cached.SequenceScores, 6)
			for i := range cached.SequenceScores {
				require.InDelta(t, full.SequenceScores[i], cached.SequenceScores[i], 1e-4)
			}
			require.Equal(t, 8, cached.ScoresShape[0]) // B·num_beams rows
		})
	}
}

// Streaming delivers every step's tokens as they come; the channel form
// too; cancelling stops generation.
func TestStreaming(t *testing.T) {
	m := loadTiny(t)
	in := fixtureInput(t)
	cfg := greedy8()
	cfg.EOSTokenID = TokenIDs{71}
	var got [2][]int64
	var fin []bool
	out, err := Stream(bg, m, in, cfg, func(st Step) error {
		require.Equal(t, len(got[0]), st.Index)
		for r := range got {
			got[r] = append(got[r], st.Tokens[r])
		}
		fin = st.Finished
		return nil
	})
	require.NoError(t, err)
	for r := range got {
		require.Equal(t, out.Sequences[r][12:], got[r])
	}
	require.Equal(t, []bool{true, false}, fin)

	steps, wait := StreamChan(bg, m, in, cfg)
	n := 0
	for st := range steps {
		require.Equal(t, got[1][n], st.Tokens[1])
		n++
	}
	out2, err := wait()
	require.NoError(t, err)
	require.Equal(t, out.Sequences, out2.Sequences)
	require.Equal(t, 8, n)

	ctx, cancel := context.WithCancel(bg)
	steps, wait = StreamChan(ctx, m, in, cfg)
	<-steps
	cancel()
	_, err = wait()
	require.ErrorIs(t, err, context.Canceled)

	stop := errors.New("enough")
	_, err = Stream(bg, m, in, cfg, func(st Step) error { return stop })
	require.ErrorIs(t, err, stop)

	beam := cfg
	beam.NumBeams = 2
	_, err = Stream(bg, m, in, beam, func(Step) error { return nil })
	require.ErrorContains(t, err, "streaming is not available")
}

func TestInputErrors(t *testing.T) {
	m := loadTiny(t)
	cfg := greedy8()
	for _, tc := range []struct {
		in   Input
		want string
	}{
		{Input{}, "no prompt tokens"},
		{Input{InputIDs: [][]int64{{1, 2}, {3}}}, "pad them to one length"},
		{Input{InputIDs: [][]int64{{1, 2}}, AttentionMask: [][]int64{{1, 0}}}, "right-padded"},
		{Input{InputIDs: [][]int64{{1, 2}}, AttentionMask: [][]int64{{0, 0}}}, "all padding"},
		{Input{InputIDs: [][]int64{{1, 2}}, AttentionMask: [][]int64{{2, 1}}}, "want 0 or 1"},
		{Input{InputIDs: [][]int64{{1, 9999}}}, "index"},
	} {
		_, err := Generate(bg, m, tc.in, cfg)
		require.ErrorContains(t, err, tc.want)
	}
	_, err := Generate(bg, noCache{m}, Input{InputIDs: [][]int64{{1, 2}}}, cfg)
	require.ErrorContains(t, err, "no key/value cache")

	in := LeftPad([][]int64{{5, 6, 7}, {8}}, 0)
	require.Equal(t, [][]int64{{5, 6, 7}, {0, 0, 8}}, in.InputIDs)
	require.Equal(t, [][]int64{{1, 1, 1}, {0, 0, 1}}, in.AttentionMask)
	_, err = Generate(bg, m, in, cfg)
	require.NoError(t, err)
}

// noCache is a model that ignores UseCache.
type noCache struct{ m Model }

func (n noCache) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	nb := *b
	nb.UseCache, nb.PastKeyValues = false, nil
	return n.m.ForwardT(s, &nb)
}

// Decoding frees every step's tensors: RSS stays flat over many long
// generations.
func TestGenerationMemoryFlat(t *testing.T) {
	m := methods(t)["prefix-proj"]()
	in := fixtureInput(t)
	cfg := DefaultGenerationConfig()
	cfg.MaxNewTokens = 100
	beam := cfg
	beam.NumBeams, beam.MaxNewTokens = 3, 40
	gen := func() {
		_, err := Generate(bg, m, in, cfg)
		require.NoError(t, err)
		_, err = Generate(bg, m, in, beam)
		require.NoError(t, err)
	}
	before, after, growth := memstat.Growth(3, 15, gen)
	t.Logf("RSS %d KiB -> %d KiB over 15×(100 greedy + 40 beam steps) (%.2f%%)", before>>10, after>>10, 100*growth)
	require.Less(t, growth, 0.05)
}
