package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/gopeft/peft/engine"
	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// The serving benchmark: a random-weight Llama of 84M parameters (hidden
// 768, 10 layers, 12 heads, intermediate 2048, vocab 8000, fp32) with 16
// LoRA adapters (r 16 on every linear layer of the blocks), 16 requests of
// a 16-token prompt and 32 greedy new tokens:
//
//	go test ./engine -run '^$' -bench Serve -benchtime 1x -timeout 30m
//
// ServeMixed16: the 16 requests, each with its own adapter, submitted at
// once (one batch of 16 rows of 16 adapters); ServeOneAdapter: the same
// with one adapter for all; ServeSequential: the 16 requests one after
// another through generate.Generate, each alone. tokens/s counts generated
// tokens over the wall time, prefill included. BENCH_THREADS sets
// libtorch's threads (default 2).

const (
	benchRequests = 16
	benchPrompt   = 16
	benchNew      = 32
)

func benchServeModel(b *testing.B) *peft.Model {
	threads := 2
	if v, err := strconv.Atoi(os.Getenv("BENCH_THREADS")); err == nil && v > 0 {
		threads = v
	}
	tensor.SetNumThreads(threads)
	base, err := llama.New(&llama.Config{
		ModelType: "llama", HiddenSize: 768, IntermediateSize: 2048, NumHiddenLayers: 10,
		NumAttentionHeads: 12, NumKeyValueHeads: 12, VocabSize: 8000, MaxPositionEmbeddings: 512,
		RMSNormEps: 1e-6, RopeTheta: 10000, InitializerRange: 0.02, HiddenAct: "silu",
	}, 0)
	if err != nil {
		b.Fatal(err)
	}
	cfg := func() *lora.Config {
		return &lora.Config{R: 16, LoraAlpha: 32, InitLoraWeights: lora.Init{Value: "false"},
			TargetModules: lora.List("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}
	}
	m, err := peft.New(base, cfg())
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < benchRequests; i++ {
		if err := m.AddAdapter(fmt.Sprintf("a%d", i), cfg()); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() { nn.FreeParams(m) })
	_, total := nn.CountParams(base)
	b.Logf("base parameters: %d", total)
	return m
}

func benchRequestsFor(adapters func(i int) string) []engine.Request {
	rng := rand.New(rand.NewPCG(3, 4))
	var rs []engine.Request
	for i := 0; i < benchRequests; i++ {
		p := make([]int64, benchPrompt)
		for j := range p {
			p[j] = rng.Int64N(8000)
		}
		rs = append(rs, engine.Request{Prompt: p, Adapter: adapters(i), Config: generate.GenerationConfig{MaxNewTokens: benchNew}})
	}
	return rs
}

func benchEngine(b *testing.B, rs []engine.Request) {
	m := benchServeModel(b)
	run := func() (time.Duration, engine.Stats) {
		e, err := engine.New(m, engine.Options{MaxBatch: benchRequests})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		var chans []<-chan engine.Event
		for _, r := range rs {
			ch, err := e.Submit(context.Background(), r)
			if err != nil {
				b.Fatal(err)
			}
			chans = append(chans, ch)
		}
		for _, ch := range chans {
			if toks, _, err := collect(ch); err != nil || len(toks) != benchNew {
				b.Fatalf("%d tokens, %v", len(toks), err)
			}
		}
		d := time.Since(start)
		if err := e.Shutdown(context.Background()); err != nil {
			b.Fatal(err)
		}
		return d, e.Stats()
	}
	run() // warm-up
	b.ResetTimer()
	var total time.Duration
	var st engine.Stats
	for i := 0; i < b.N; i++ {
		d, s := run()
		total += d
		st = s
	}
	sec := total.Seconds() / float64(b.N)
	b.ReportMetric(float64(benchRequests*benchNew)/sec, "tokens/s")
	b.ReportMetric(float64(st.StepRows)/float64(st.Steps), "rows/step")
}

func BenchmarkServeMixed16(b *testing.B) {
	benchEngine(b, benchRequestsFor(func(i int) string { return fmt.Sprintf("a%d", i) }))
}

func BenchmarkServeOneAdapter(b *testing.B) {
	benchEngine(b, benchRequestsFor(func(int) string { return "a0" }))
}

func BenchmarkServeSequential(b *testing.B) {
	m := benchServeModel(b)
	rs := benchRequestsFor(func(i int) string { return fmt.Sprintf("a%d", i) })
	run := func() {
		for _, r := range rs {
			out, err := generate.Generate(context.Background(), generate.WithAdapters(m, &peft.Selection{Adapters: []string{r.Adapter}}),
				generate.Input{InputIDs: [][]int64{r.Prompt}}, r.Config)
			if err != nil || len(out.NewTokens(0)) != benchNew {
				b.Fatal(err)
			}
		}
	}
	run()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		run()
	}
	sec := time.Since(start).Seconds() / float64(b.N)
	b.ReportMetric(float64(benchRequests*benchNew)/sec, "tokens/s")
}

// ServeMixed16Grouped is ServeMixed16 with LoRA's grouped mixed-batch form
// (lora.MixedGatherAdapters = 0): one pass per adapter.
func BenchmarkServeMixed16Grouped(b *testing.B) {
	defer func(v int) { lora.MixedGatherAdapters = v }(lora.MixedGatherAdapters)
	lora.MixedGatherAdapters = 0
	benchEngine(b, benchRequestsFor(func(i int) string { return fmt.Sprintf("a%d", i) }))
}
