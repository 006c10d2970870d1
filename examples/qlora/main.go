// Command qlora runs QLoRA end to end and prints the figures of the
// "QLoRA" section of BENCHMARKS.md:
//
//  1. the base model loaded in 4 bits (llama.LoadQuantized: NF4 + double
//     quantization by default, lm_head kept in float) against the same
//     checkpoint in float32 — weight memory (tensor bytes and RSS growth),
//     logits max abs diff and perplexity on held-out sequences;
//  2. LoRA on every linear layer trained on the 4-bit base (QLoRA) and on
//     the float32 base (LoRA), same initialisation and batches: the
//     losses, held-out perplexity and peak RSS of each;
//  3. the QLoRA adapter saved in PEFT's format and loaded with peft.Load on
//     the float32 base;
//  4. the QLoRA model merged into a float32 model (MergeAndUnload, then
//     quant.Dequantize for anything left in 4 bits);
//  5. the float32-trained model (LoRA merged) quantized in turn: the
//     perplexity cost of 4 bits on a model that has learned the data.
//
// The data is synthetic: sequences over 128 token ids where each token
// follows the previous one by a fixed rule 90% of the time (a model that
// learns the rule reaches a perplexity of about 2.3); held-out sequences
// come from another seed.
//
//	go run ./examples/qlora                     # llama-tiny fixture
//	go run ./examples/qlora -bench              # the 33.5M benchmark config (random init), ~5 min on 2 cores
//	go run ./examples/qlora -quant fp4 -double-quant=false -skip none -embed-dtype bfloat16
package main

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"time"

	"github.com/gopeft/peft/internal/memstat"
	"github.com/gopeft/peft/internal/tensor"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/nn/quant"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/train"
)

type options struct {
	model, out, quantType, skip, embedDType string
	bench, doubleQuant                      bool
	steps, r                                int
	lr                                      float64
	batch, seq                              int64
}

func main() {
	var o options
	flag.StringVar(&o.model, "model", "../shared/fixtures/hf/llama-tiny", "HF LLaMA folder")
	flag.BoolVar(&o.bench, "bench", false, "use the 33.5M benchmark config (hidden 512, 8 layers, vocab 8000; random init) instead of -model")
	flag.StringVar(&o.quantType, "quant", "nf4", "4-bit codebook: nf4 or fp4")
	flag.BoolVar(&o.doubleQuant, "double-quant", true, "quantize the absmax scales too (8-bit, blocks of 256)")
	flag.StringVar(&o.skip, "skip", "lm_head", "comma-free name of the layer kept in float, or 'none' to quantize lm_head too")
	flag.StringVar(&o.embedDType, "embed-dtype", "", "store embed_tokens in this dtype in the 4-bit model (bfloat16); default float32")
	flag.IntVar(&o.steps, "steps", 40, "training steps of each run")
	flag.Float64Var(&o.lr, "lr", 1e-2, "AdamW learning rate")
	flag.IntVar(&o.r, "r", 8, "LoRA rank (lora_alpha = 2r)")
	flag.Int64Var(&o.batch, "batch", 8, "sequences per step")
	flag.Int64Var(&o.seq, "seq", 64, "tokens per sequence")
	flag.StringVar(&o.out, "out", "", "where to save the QLoRA adapter (default: a temporary folder)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "qlora:", err)
		os.Exit(1)
	}
}

// benchConfig is the project's benchmark model (33,497,600 parameters).
func benchConfig() *llama.Config {
	return &llama.Config{
		ModelType: "llama", HiddenSize: 512, IntermediateSize: 1376, NumHiddenLayers: 8,
		NumAttentionHeads: 8, NumKeyValueHeads: 8, VocabSize: 8000, MaxPositionEmbeddings: 512,
		RMSNormEps: 1e-6, RopeTheta: 10000, HiddenAct: "silu", InitializerRange: 0.02,
	}
}

func run(o options) error {
	tmp, err := os.MkdirTemp("", "qlora-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dir := o.model
	if o.bench {
		dir = filepath.Join(tmp, "bench-model")
		m, err := llama.New(benchConfig(), 0)
		if err != nil {
			return err
		}
		err = m.Save(dir)
		m.Free()
		if err != nil {
			return err
		}
	}
	qcfg := quant.Config{QuantType: quant.Type(o.quantType), UseDoubleQuant: o.doubleQuant, EmbeddingDType: o.embedDType}
	if o.skip == "none" {
		qcfg.SkipModules = []string{}
	} else {
		qcfg.SkipModules = []string{o.skip}
	}
	if err := qcfg.Validate(); err != nil {
		return err
	}

	// 1. the base in 4 bits against float32 (the 4-bit one first, so its
	// RSS growth is not absorbed by memory the float32 load freed)
	runtime.GC()
	rss0 := memstat.RSS()
	t0 := time.Now()
	q, err := llama.LoadQuantized(dir, qcfg)
	if err != nil {
		return err
	}
	qLoad := time.Since(t0)
	runtime.GC()
	rss1 := memstat.RSS()
	t0 = time.Now()
	f, err := llama.Load(dir)
	if err != nil {
		return err
	}
	fLoad := time.Since(t0)
	runtime.GC()
	rss2 := memstat.RSS()
	qBytes, fBytes := quant.WeightBytes(q), quant.WeightBytes(f)
	var linQ, linF int64
	for _, l := range quant.Layers(q) {
		linQ += l.StorageBytes()
		linF += 4 * l.Weight.LogicalNumel()
	}
	cfg := f.Config
	fmt.Printf("model %s: hidden %d, %d layers, vocab %d, %s parameters\n", modelName(o, dir), cfg.HiddenSize, cfg.NumHiddenLayers, cfg.VocabSize, peft.Commas(count(f)))
	fmt.Printf("4-bit config: %s, double quant %v, kept in float: %v, embeddings %s; %d layers quantized\n",
		qcfg.QuantType, qcfg.UseDoubleQuant, qcfg.SkipModules, orDefault(o.embedDType, "float32"), len(quant.Layers(q)))
	fmt.Printf("weights (tensor bytes): 4-bit model %s B, float32 %s B: %.1f%%; quantized layers alone %.4f bytes/weight, %.1f%% of float32\n",
		peft.Commas(qBytes), peft.Commas(fBytes), pct(qBytes, fBytes), float64(linQ)/float64(linF/4), pct(linQ, linF))
	fmt.Printf("RSS growth on load: 4-bit %s B, float32 %s B: %.1f%% (load %.2fs vs %.2fs)\n",
		peft.Commas(rss1-rss0), peft.Commas(rss2-rss1), pct(rss1-rss0, rss2-rss1), qLoad.Seconds(), fLoad.Seconds())

	const K = 128
	trainSet := corpus(1, 16*o.batch, o.seq, K)
	heldOut := corpus(2, 2*o.batch, o.seq, K)
	fPPL, err := perplexity(f, heldOut, o.batch)
	if err != nil {
		return err
	}
	qPPL, err := perplexity(q, heldOut, o.batch)
	if err != nil {
		return err
	}
	diff, err := logitsDiff(f, q, heldOut[:o.batch])
	if err != nil {
		return err
	}
	fmt.Printf("base, held-out: logits max abs diff %.4g; perplexity float32 %.3f, 4-bit %.3f (%+.3f%%)\n\n", diff, fPPL, qPPL, 100*(qPPL/fPPL-1))

	// 2. QLoRA and LoRA, same A initialisation and batches
	lcfg := func() *lora.Config {
		return &lora.Config{R: o.r, LoraAlpha: float64(2 * o.r), TargetModules: lora.Regex("all-linear")}
	}
	tensor.ManualSeed(42)
	qm, err := lora.Wrap(q, lcfg())
	if err != nil {
		return err
	}
	fmt.Println("QLoRA:", peft.TrainableSummary(qm))
	tensor.ManualSeed(42)
	fm, err := lora.Wrap(f, lcfg())
	if err != nil {
		return err
	}
	fmt.Println("LoRA: ", peft.TrainableSummary(fm))
	qr, err := fit(qm, trainSet, o)
	if err != nil {
		return fmt.Errorf("QLoRA: %w", err)
	}
	fr, err := fit(fm, trainSet, o)
	if err != nil {
		return fmt.Errorf("LoRA: %w", err)
	}
	qAfter, err := perplexity(qm, heldOut, o.batch)
	if err != nil {
		return err
	}
	fAfter, err := perplexity(fm, heldOut, o.batch)
	if err != nil {
		return err
	}
	fmt.Printf("%-6s %-44s %9s %8s %10s %13s\n", "run", "train loss (first → every 10th → last)", "held-out", "s/step", "peak RSS", "step RSS Δ")
	fmt.Printf("%-6s %-44s %9.3f %8.2f %10s %13s\n", "QLoRA", qr.curve(), qAfter, qr.stepSec, mib(qr.peak), mib(qr.peak-qr.start))
	fmt.Printf("%-6s %-44s %9.3f %8.2f %10s %13s\n\n", "LoRA", fr.curve(), fAfter, fr.stepSec, mib(fr.peak), mib(fr.peak-fr.start))

	// 3. the QLoRA adapter on the float32 base
	out := o.out
	if out == "" {
		out = filepath.Join(tmp, "qlora-adapter")
	}
	if err := qm.Save(out); err != nil {
		return err
	}
	keys, err := adapterKeys(out)
	if err != nil {
		return err
	}
	f2, err := llama.Load(dir)
	if err != nil {
		return err
	}
	onF32, err := peft.Load(f2, out)
	if err != nil {
		return err
	}
	tPPL, err := perplexity(onF32, heldOut, o.batch)
	if err != nil {
		return err
	}
	fmt.Printf("adapter saved to %s: %d tensors, e.g. %s\n", out, len(keys), keys[0])
	fmt.Printf("QLoRA adapter on the float32 base (peft.Load): held-out perplexity %.3f (on the 4-bit base %.3f)\n", tPPL, qAfter)
	nn.FreeParams(onF32)

	// 4. QLoRA merged into a float32 model
	want, err := lastLogits(qm, heldOut[:o.batch])
	if err != nil {
		return err
	}
	merged, err := qm.MergeAndUnload()
	if err != nil {
		return err
	}
	if err := quant.Dequantize(merged); err != nil {
		return err
	}
	got, err := lastLogits(merged, heldOut[:o.batch])
	if err != nil {
		return err
	}
	mPPL, err := perplexity(merged, heldOut, o.batch)
	if err != nil {
		return err
	}
	fmt.Printf("merged + dequantized: %d 4-bit layers left, %s bytes of weights, logits max abs diff to the QLoRA model %.3g, held-out perplexity %.3f\n",
		len(quant.Layers(merged)), peft.Commas(quant.WeightBytes(merged)), maxDiff(want, got), mPPL)
	nn.FreeParams(merged)

	// 5. the float32-trained model, quantized
	trained, err := fm.MergeAndUnload()
	if err != nil {
		return err
	}
	tw, err := lastLogits(trained, heldOut[:o.batch])
	if err != nil {
		return err
	}
	if err := quant.Quantize(trained, qcfg); err != nil {
		return err
	}
	tq, err := lastLogits(trained, heldOut[:o.batch])
	if err != nil {
		return err
	}
	tqPPL, err := perplexity(trained, heldOut, o.batch)
	if err != nil {
		return err
	}
	fmt.Printf("float32-trained model (LoRA merged) in 4 bits: logits max abs diff %.4g, held-out perplexity %.3f → %.3f (%+.2f%%)\n",
		maxDiff(tw, tq), fAfter, tqPPL, 100*(tqPPL/fAfter-1))
	nn.FreeParams(trained)
	return nil
}

// corpus makes n sequences of length l over ids [0, k): each token is
// (7·prev + 3) mod k with probability 0.9, else uniform.
func corpus(seed uint64, n, l int64, k int64) [][]int64 {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	out := make([][]int64, n)
	for i := range out {
		seq := make([]int64, l)
		t := rng.Int64N(k)
		for j := range seq {
			seq[j] = t
			if rng.Float64() < 0.9 {
				t = (7*t + 3) % k
			} else {
				t = rng.Int64N(k)
			}
		}
		out[i] = seq
	}
	return out
}

type forwarder interface {
	ForwardT(*tensor.Scope, *models.Batch) *models.Output
}

func batchOf(s *tensor.Scope, seqs [][]int64) *tensor.T {
	var flat []int64
	for _, q := range seqs {
		flat = append(flat, q...)
	}
	return s.FromInt64(flat, int64(len(seqs)), int64(len(seqs[0])))
}

// perplexity is exp of the mean shifted cross-entropy over seqs.
func perplexity(m forwarder, seqs [][]int64, batch int64) (float64, error) {
	s := tensor.NoGradScope()
	defer s.Close()
	var sum float64
	var n int
	for i := int64(0); i < int64(len(seqs)); i += batch {
		ids := batchOf(s, seqs[i:min(i+batch, int64(len(seqs)))])
		out := m.ForwardT(s, &models.Batch{InputIDs: ids, Labels: ids})
		sum += s.Item(out.Loss)
		n++
		if err := s.Err(); err != nil {
			return 0, err
		}
		s.FreeAll()
	}
	return math.Exp(sum / float64(n)), nil
}

func lastLogits(m forwarder, seqs [][]int64) ([]float32, error) {
	s := tensor.NoGradScope()
	defer s.Close()
	out := m.ForwardT(s, &models.Batch{InputIDs: batchOf(s, seqs)})
	v := s.Float32s(out.Logits)
	return v, s.Err()
}

func logitsDiff(a, b forwarder, seqs [][]int64) (float64, error) {
	x, err := lastLogits(a, seqs)
	if err != nil {
		return 0, err
	}
	y, err := lastLogits(b, seqs)
	if err != nil {
		return 0, err
	}
	return maxDiff(x, y), nil
}

type runResult struct {
	losses            []float64
	stepSec           float64
	start, peak       int64
	firstStepDuration time.Duration
}

func (r runResult) curve() string {
	s := fmt.Sprintf("%.3f", r.losses[0])
	for i := 10; i < len(r.losses)-1; i += 10 {
		s += fmt.Sprintf(" %.3f", r.losses[i])
	}
	return s + fmt.Sprintf(" → %.3f", r.losses[len(r.losses)-1])
}

// fit trains m's trainable parameters with AdamW over trainSet in order,
// o.batch sequences per step.
func fit(m *peft.Model, trainSet [][]int64, o options) (runResult, error) {
	nn.SetTraining(m, true)
	defer nn.SetTraining(m, false)
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: o.lr})
	defer opt.Free()
	runtime.GC()
	r := runResult{start: memstat.RSS()}
	_ = memstat.ResetPeak()
	var times []float64
	nb := int64(len(trainSet)) / o.batch
	for step := 0; step < o.steps; step++ {
		t0 := time.Now()
		s := tensor.NewScope()
		i := int64(step) % nb * o.batch
		ids := batchOf(s, trainSet[i:i+o.batch])
		out := m.ForwardT(s, &models.Batch{InputIDs: ids, Labels: ids})
		loss := s.Item(out.Loss)
		s.Backward(out.Loss)
		err := s.Err()
		s.Close()
		if err != nil {
			return r, err
		}
		if err := opt.Step(); err != nil {
			return r, err
		}
		if err := opt.ZeroGrad(); err != nil {
			return r, err
		}
		r.losses = append(r.losses, loss)
		times = append(times, time.Since(t0).Seconds())
	}
	r.peak = memstat.PeakRSS()
	sort.Float64s(times)
	r.stepSec = times[len(times)/2]
	return r, nil
}

func adapterKeys(dir string) ([]string, error) {
	set, err := safetensors.OpenFiles(filepath.Join(dir, peft.WeightsName))
	if err != nil {
		return nil, err
	}
	defer set.Close()
	keys := set.Names()
	sort.Strings(keys)
	return keys, nil
}

func count(m nn.Module) int64 {
	_, total := nn.CountParams(m)
	return total
}

func maxDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

func pct(a, b int64) float64 { return 100 * float64(a) / float64(b) }

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func modelName(o options, dir string) string {
	if o.bench {
		return "benchmark config (random init)"
	}
	return dir
}
