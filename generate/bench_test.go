package generate

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/tensor"
)

// benchModel is the project's benchmark config (../shared/bench): Llama,
// hidden 512, 8 layers, 8 heads, intermediate 1376, vocab 8000, untied
// lm_head, 33,497,600 parameters, fp32.
func benchModel(b *testing.B) *llama.Model {
	tensor.SetNumThreads(2) // as torch_reference.py --threads 2
	m, err := llama.New(&llama.Config{
		ModelType: "llama", HiddenSize: 512, IntermediateSize: 1376, NumHiddenLayers: 8,
		NumAttentionHeads: 8, NumKeyValueHeads: 8, VocabSize: 8000, MaxPositionEmbeddings: 512,
		RMSNormEps: 1e-6, RopeTheta: 10000, InitializerRange: 0.02, HiddenAct: "silu",
	}, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(m.Free)
	return m
}

// benchGreedy times greedy decoding of newTokens tokens (prefill included),
// as torch_reference.py's generate-b1 / generate-b4 cases: compare their
// tokens/s, measured in the same session.
//
//	go test ./generate -run '^$' -bench Greedy -benchtime 3x
func benchGreedy(b *testing.B, batch, prompt, newTokens int) {
	m := benchModel(b)
	rng := rand.New(rand.NewPCG(1, 2))
	ids := make([][]int64, batch)
	for i := range ids {
		for j := 0; j < prompt; j++ {
			ids[i] = append(ids[i], rng.Int64N(8000))
		}
	}
	cfg := DefaultGenerationConfig()
	cfg.MaxNewTokens = newTokens
	in := Input{InputIDs: ids}
	if _, err := Generate(bg, m, in, cfg); err != nil { // warm-up
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := Generate(bg, m, in, cfg); err != nil {
			b.Fatal(err)
		}
	}
	sec := time.Since(start).Seconds() / float64(b.N)
	b.ReportMetric(float64(batch*newTokens)/sec, "tokens/s")
}

func BenchmarkGreedyB1Prompt32(b *testing.B)  { benchGreedy(b, 1, 32, 64) }
func BenchmarkGreedyB4Prompt256(b *testing.B) { benchGreedy(b, 4, 256, 64) }
