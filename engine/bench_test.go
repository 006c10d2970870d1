package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"syscall"
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
//	go test ./engine -run '^$' -bench 'Serve$' -benchtime 3x -timeout 60m
//
// The ways: "mixed16", the 16 requests, each with its own adapter,
// submitted at once (one batch of 16 rows of 16 adapters); "one", the same
// with one adapter for all; "grouped16", mixed16 with LoRA's grouped
// mixed-batch form instead of the gathered one; "sequential", the 16
// requests one after another through generate.Generate, each alone.
// tokens/s counts generated tokens over the wall time, prefill included.
// BENCH_THREADS sets libtorch's threads (default 2).

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
	_, baseParams := nn.CountParams(base)
	b.Logf("base parameters: %d", baseParams)
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

// serveEngine runs rs through a new engine at once and returns the wall
// time and the engine's stats.
func serveEngine(b *testing.B, m *peft.Model, rs []engine.Request) (time.Duration, engine.Stats) {
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

// serveSequential runs rs one after another, each alone through generate.
// (with maxNew new tokens each).
func serveSequential(b *testing.B, m *peft.Model, rs []engine.Request, maxNew int) time.Duration {
	start := time.Now()
	for _, r := range rs {
		cfg := r.Config
		cfg.MaxNewTokens = maxNew
		out, err := generate.Generate(context.Background(), generate.WithAdapters(m, &peft.Selection{Adapters: []string{r.Adapter}}),
			generate.Input{InputIDs: [][]int64{r.Prompt}}, cfg)
		if err != nil || len(out.NewTokens(0)) != maxNew {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}

// BenchmarkServe measures the four ways in turn, b.N rounds (on a shared
// machine the load changes: the rounds interleave the ways so that the
// ratios compare like with like), and reports each way's median tokens/s,
// the ratios of the targets, and the time to first token of the 16-adapter
// batch (all 16 requests submitted at once; each is prefilled alone as it
// joins, so the p99 is the 16th prefill).
func BenchmarkServe(b *testing.B) {
	m := benchServeModel(b)
	mixed := benchRequestsFor(func(i int) string { return fmt.Sprintf("a%d", i) })
	one := benchRequestsFor(func(int) string { return "a0" })
	tokens := float64(benchRequests * benchNew)
	rate := func(d time.Duration) float64 { return tokens / d.Seconds() }
	serveEngine(b, m, mixed) // warm-up
	// decode-only: the tokens after each request's first over the time in
	// decode steps (sequential: the run minus a run of one token each)
	decodeRate := func(st engine.Stats) float64 {
		return float64(benchRequests*(benchNew-1)) / st.DecodeTime.Seconds()
	}
	var rMixed, rOne, rGrouped, rSeq, p50, p99, dMixed, dOne, dSeq []float64
	var cMixed, cOne, cSeq []float64 // tokens per CPU second of the process (less sensitive to other processes)
	cpuRate := func(t0 time.Duration) float64 { return tokens / (cpuTime() - t0).Seconds() }
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c0 := cpuTime()
		d, st := serveEngine(b, m, mixed)
		cMixed = append(cMixed, cpuRate(c0))
		rMixed = append(rMixed, rate(d))
		ttft := slices.Clone(st.FirstTokenRecent)
		slices.Sort(ttft)
		p50 = append(p50, float64(ttft[len(ttft)/2].Milliseconds()))
		p99 = append(p99, float64(ttft[len(ttft)*99/100].Milliseconds()))
		dMixed = append(dMixed, decodeRate(st))
		c0 = cpuTime()
		d, st = serveEngine(b, m, one)
		cOne = append(cOne, cpuRate(c0))
		rOne = append(rOne, rate(d))
		dOne = append(dOne, decodeRate(st))
		func() {
			defer func(v int) { lora.MixedGatherAdapters = v }(lora.MixedGatherAdapters)
			lora.MixedGatherAdapters = 0
			d, _ = serveEngine(b, m, mixed)
			rGrouped = append(rGrouped, rate(d))
		}()
		c0 = cpuTime()
		full := serveSequential(b, m, mixed, benchNew)
		cSeq = append(cSeq, cpuRate(c0))
		first := serveSequential(b, m, mixed, 1)
		rSeq = append(rSeq, rate(full))
		dSeq = append(dSeq, float64(benchRequests*(benchNew-1))/(full-first).Seconds())
		b.Logf("round %d tokens per CPU-second: 16 adapters %.1f, one adapter %.1f, sequential %.1f", i, cMixed[i], cOne[i], cSeq[i])
		b.Logf("round %d tokens/s: 16 adapters %.1f (decode %.1f), one adapter %.1f (decode %.1f), 16 grouped %.1f, sequential %.1f (decode %.1f)",
			i, rMixed[i], dMixed[i], rOne[i], dOne[i], rGrouped[i], rSeq[i], dSeq[i])
	}
	med := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[len(v)/2]
	}
	b.ReportMetric(med(rMixed), "mixed16-tok/s")
	b.ReportMetric(med(rOne), "one-tok/s")
	b.ReportMetric(med(rGrouped), "grouped16-tok/s")
	b.ReportMetric(med(rSeq), "sequential-tok/s")
	b.ReportMetric(med(rMixed)/med(rOne), "mixed/one")
	b.ReportMetric(med(rMixed)/med(rSeq), "mixed/sequential")
	b.ReportMetric(med(dMixed)/med(dOne), "decode-mixed/one")
	b.ReportMetric(med(dMixed)/med(dSeq), "decode-mixed/sequential")
	b.ReportMetric(med(cMixed)/med(cOne), "cpu-mixed/one")
	b.ReportMetric(med(cMixed)/med(cSeq), "cpu-mixed/sequential")
	b.ReportMetric(med(p50), "ttft-p50-ms")
	b.ReportMetric(med(p99), "ttft-p99-ms")
}

// cpuTime is the process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
