// Command qlora runs QLoRA end to end and prints the figures of the
// "QLoRA" section of BENCHMARKS.md:
//
//  0. a base model that knows something: the checkpoint (or the benchmark
//     config, randomly initialised) trained in full for -pretrain steps on
//     task A, real text, saved as a HF folder;
//  1. that base loaded in 4 bits (llama.LoadQuantized: NF4 + double
//     quantization by default, lm_head kept in float) against float32 —
//     weight memory (tensor bytes; and, measured in a fresh process loading
//     each, the growth of live malloc'd bytes and of resident anonymous
//     memory), logits max abs diff and perplexity on held-out text;
//  2. LoRA on every linear layer trained on task B over the 4-bit base
//     (QLoRA) and over the float32 base (LoRA), same initialisation and
//     batches: losses, held-out task B perplexity, step time and the
//     memory a training step adds;
//  3. the QLoRA adapter saved in PEFT's format and loaded with peft.Load on
//     the float32 base;
//  4. the QLoRA model merged into a float32 model (MergeAndUnload, then
//     quant.Dequantize for anything left in 4 bits).
//
// Task A is real text, one token per byte (ids 0–255, which every vocabulary
// here has): -text (by default the HF PEFT reference notes, 60 KB of English
// prose, tables and code), cut into sequences of -seq bytes; the first 90%
// trains, the last 10% is held out. Task B is synthetic: sequences over 128
// ids where each token follows the previous one by a fixed rule (5t+1 mod
// 128) 90% of the time — a model that knows the rule reaches a perplexity
// of about 2.3; held-out sequences come from another seed. glibc's
// allocator runs with a fixed mmap threshold (the program re-executes
// itself with MALLOC_MMAP_THRESHOLD_ set) so that freed tensors leave RSS.
//
//	go run ./examples/qlora                     # llama-tiny fixture, seconds
//	go run ./examples/qlora -bench              # the 33.5M benchmark config, minutes on 2 cores
//	go run ./examples/qlora -quant fp4 -double-quant=false -skip none -embed-dtype bfloat16
//	go run ./examples/qlora -bench -base-out /tmp/base && go run ./examples/qlora -model /tmp/base -pretrain 0 -skip none
package main

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gopeft/peft/internal/memstat"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/nn/quant"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
)

type options struct {
	model, out, baseOut, quantType, skip, embedDType, text string
	bench, doubleQuant                                     bool
	pretrain, steps, r                                     int
	lr, pretrainLR                                         float64
	batch, seq                                             int64
	measure                                                string // internal: load one model in this process and print its RSS growth
}

const mmapThreshold = "131072"

func main() {
	var o options
	flag.StringVar(&o.model, "model", "testdata/hf/llama-tiny", "HF LLaMA folder")
	flag.StringVar(&o.text, "text", "README.md", "task A: a text file, one token per byte (90% trains, 10% held out)")
	flag.BoolVar(&o.bench, "bench", false, "use the 33.5M benchmark config (hidden 512, 8 layers, vocab 8000; random init) instead of -model")
	flag.StringVar(&o.quantType, "quant", "nf4", "4-bit codebook: nf4 or fp4")
	flag.BoolVar(&o.doubleQuant, "double-quant", true, "quantize the absmax scales too (8-bit, blocks of 256)")
	flag.StringVar(&o.skip, "skip", "lm_head", "the layer kept in float, or 'none' to quantize lm_head too")
	flag.StringVar(&o.embedDType, "embed-dtype", "", "store embed_tokens in this dtype in the 4-bit model (bfloat16); default float32")
	flag.IntVar(&o.pretrain, "pretrain", 150, "full-training steps on task A before anything else (0: use the checkpoint's weights as they are)")
	flag.Float64Var(&o.pretrainLR, "pretrain-lr", 3e-3, "AdamW learning rate of the pretraining")
	flag.IntVar(&o.steps, "steps", 60, "training steps of each LoRA run")
	flag.Float64Var(&o.lr, "lr", 1e-2, "AdamW learning rate of the LoRA runs")
	flag.IntVar(&o.r, "r", 8, "LoRA rank (lora_alpha = 2r)")
	flag.Int64Var(&o.batch, "batch", 8, "sequences per step")
	flag.Int64Var(&o.seq, "seq", 64, "tokens per sequence")
	flag.StringVar(&o.out, "out", "", "where to save the QLoRA adapter (default: a temporary folder)")
	flag.StringVar(&o.baseOut, "base-out", "", "where to save the pretrained base (default: a temporary folder); -model it with -pretrain 0 to reuse it")
	flag.StringVar(&o.measure, "measure-load", "", "internal: 'quantized' or 'float': load -model, print RSS growth and exit")
	flag.Parse()
	if os.Getenv("MALLOC_MMAP_THRESHOLD_") == "" { // glibc reads it at start-up
		exe, err := os.Executable()
		if err == nil {
			_ = syscall.Exec(exe, os.Args, append(os.Environ(), "MALLOC_MMAP_THRESHOLD_="+mmapThreshold))
		}
	}
	var err error
	if o.measure != "" {
		err = measureLoad(o)
	} else {
		err = run(o)
	}
	if err != nil {
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

func (o options) quantConfig() quant.Config {
	c := quant.Config{QuantType: quant.Type(o.quantType), UseDoubleQuant: o.doubleQuant, EmbeddingDType: o.embedDType}
	if o.skip == "none" {
		c.SkipModules = []string{}
	} else {
		c.SkipModules = []string{o.skip}
	}
	return c
}

// task B: the rule each token follows 90% of the time.
var taskB = [2]int64{5, 1}

const vocabUsed = 128

func run(o options) error {
	qcfg := o.quantConfig()
	if err := qcfg.Validate(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "qlora-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	// 0. the base
	dir := o.model
	var base *llama.Model
	if o.bench {
		base, err = llama.New(benchConfig(), 0)
	} else {
		base, err = llama.Load(dir)
	}
	if err != nil {
		return err
	}
	name := dir
	if o.bench {
		name = "benchmark config"
	}
	fmt.Printf("model %s: hidden %d, %d layers, vocab %d, %s parameters\n", name, base.Config.HiddenSize,
		base.Config.NumHiddenLayers, base.Config.VocabSize, peft.Commas(count(base)))
	if base.Config.VocabSize < 256 {
		return fmt.Errorf("vocab %d: task A needs the 256 byte ids", base.Config.VocabSize)
	}
	trainA, heldA, err := textCorpus(o.text, o.seq, o.batch)
	if err != nil {
		return err
	}
	fmt.Printf("task A: %s, %d training and %d held-out sequences of %d bytes\n", o.text, len(trainA), len(heldA), o.seq)
	if o.pretrain > 0 {
		before, err := perplexity(base, heldA, o.batch)
		if err != nil {
			return err
		}
		if err := nn.Unfreeze(base); err != nil {
			return err
		}
		r, err := fit(base, nn.TrainableParams(base), trainA, o.pretrain, o.pretrainLR, o)
		if err != nil {
			return fmt.Errorf("pretraining: %w", err)
		}
		after, err := perplexity(base, heldA, o.batch)
		if err != nil {
			return err
		}
		fmt.Printf("pretrained on task A (%d full steps, lr %g, %.2f s/step): loss %s; held-out text perplexity %.1f → %.3f\n",
			o.pretrain, o.pretrainLR, r.stepSec, r.curve(), before, after)
	}
	if o.pretrain > 0 || o.bench {
		dir = filepath.Join(tmp, "base")
		if o.baseOut != "" {
			dir = o.baseOut
		}
		if err := base.Save(dir); err != nil {
			return err
		}
	}
	base.Free()

	// 1. the base in 4 bits against float32
	ml := map[string]loadFigures{}
	for _, kind := range []string{"quantized", "float"} {
		if ml[kind], err = measureInChild(o, dir, kind); err != nil {
			return err
		}
	}
	q, err := llama.LoadQuantized(dir, qcfg)
	if err != nil {
		return err
	}
	f, err := llama.Load(dir)
	if err != nil {
		return err
	}
	qBytes, fBytes := quant.WeightBytes(q), quant.WeightBytes(f)
	var linQ, linN int64
	for _, l := range quant.Layers(q) {
		linQ += l.StorageBytes()
		linN += l.Weight.LogicalNumel()
	}
	fmt.Printf("4-bit config: %s, double quant %v, kept in float: %v, embeddings %s; %d layers quantized\n",
		qcfg.QuantType, qcfg.UseDoubleQuant, qcfg.SkipModules, orDefault(o.embedDType, "float32"), len(quant.Layers(q)))
	fmt.Printf("weights (tensor bytes): 4-bit model %s B, float32 %s B: %.1f%%; the quantized layers: %.4f bytes/weight, %.1f%% of float32\n",
		peft.Commas(qBytes), peft.Commas(fBytes), pct(qBytes, fBytes), float64(linQ)/float64(linN), pct(linQ, 4*linN))
	fmt.Printf("measured in a fresh process loading it: growth of live malloc'd bytes 4-bit %s B, float32 %s B: %.1f%%; of which Free gives back 4-bit %s B, float32 %s B: %.1f%%; resident anonymous memory 4-bit %s B, float32 %s B: %.1f%% (load %.2f s vs %.2f s)\n",
		peft.Commas(ml["quantized"].malloc), peft.Commas(ml["float"].malloc), pct(ml["quantized"].malloc, ml["float"].malloc),
		peft.Commas(ml["quantized"].owned), peft.Commas(ml["float"].owned), pct(ml["quantized"].owned, ml["float"].owned),
		peft.Commas(ml["quantized"].rss), peft.Commas(ml["float"].rss), pct(ml["quantized"].rss, ml["float"].rss), ml["quantized"].sec, ml["float"].sec)
	fPPL, err := perplexity(f, heldA, o.batch)
	if err != nil {
		return err
	}
	qPPL, err := perplexity(q, heldA, o.batch)
	if err != nil {
		return err
	}
	diff, scale, err := logitsDiff(f, q, heldA[:o.batch])
	if err != nil {
		return err
	}
	fmt.Printf("held-out text: logits max abs diff %.4g (max |logit| %.2f); perplexity float32 %.4f, 4-bit %.4f (%+.2f%%)\n\n",
		diff, scale, fPPL, qPPL, 100*(qPPL/fPPL-1))

	// 2. QLoRA and LoRA on task B, same A initialisation and batches
	trainB, heldB := corpus(3, 16*o.batch, o.seq, taskB), corpus(4, 2*o.batch, o.seq, taskB)
	lcfg := func() *lora.Config {
		return &lora.Config{R: o.r, LoraAlpha: float64(2 * o.r), TargetModules: lora.Regex("all-linear")}
	}
	peft.SetSeed(42)
	qm, err := lora.Wrap(q, lcfg())
	if err != nil {
		return err
	}
	fmt.Println("QLoRA:", peft.TrainableSummary(qm))
	peft.SetSeed(42)
	fm, err := lora.Wrap(f, lcfg())
	if err != nil {
		return err
	}
	fmt.Println("LoRA: ", peft.TrainableSummary(fm))
	bq, err := perplexity(qm, heldB, o.batch)
	if err != nil {
		return err
	}
	bf, err := perplexity(fm, heldB, o.batch)
	if err != nil {
		return err
	}
	qr, err := fit(qm, qm.TrainableParams(), trainB, o.steps, o.lr, o)
	if err != nil {
		return fmt.Errorf("QLoRA: %w", err)
	}
	fr, err := fit(fm, fm.TrainableParams(), trainB, o.steps, o.lr, o)
	if err != nil {
		return fmt.Errorf("LoRA: %w", err)
	}
	qAfter, err := perplexity(qm, heldB, o.batch)
	if err != nil {
		return err
	}
	fAfter, err := perplexity(fm, heldB, o.batch)
	if err != nil {
		return err
	}
	fmt.Printf("task B, %d steps, lr %g, batch %d×%d:\n", o.steps, o.lr, o.batch, o.seq)
	fmt.Printf("%-6s %-52s %18s %7s %10s\n", "run", "train loss (first, every 10th → last)", "held-out B ppl", "s/step", "step RSS+")
	fmt.Printf("%-6s %-52s %8.2f → %7.3f %7.2f %10s\n", "QLoRA", qr.curve(), bq, qAfter, qr.stepSec, mib(qr.peak-qr.start))
	fmt.Printf("%-6s %-52s %8.2f → %7.3f %7.2f %10s\n\n", "LoRA", fr.curve(), bf, fAfter, fr.stepSec, mib(fr.peak-fr.start))

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
	tPPL, err := perplexity(onF32, heldB, o.batch)
	if err != nil {
		return err
	}
	fmt.Printf("adapter saved to %s: %d tensors (%s, …)\n", out, len(keys), keys[0])
	fmt.Printf("QLoRA adapter on the float32 base (peft.Load): held-out B perplexity %.3f (on the 4-bit base %.3f)\n", tPPL, qAfter)
	nn.FreeParams(onF32)

	// 4. QLoRA merged into a float32 model
	want, err := lastLogits(qm, heldB[:o.batch])
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
	got, err := lastLogits(merged, heldB[:o.batch])
	if err != nil {
		return err
	}
	mPPL, err := perplexity(merged, heldB, o.batch)
	if err != nil {
		return err
	}
	fmt.Printf("QLoRA merged + dequantized: %d 4-bit layers left, %s B of weights, logits max abs diff to the QLoRA model %.3g, held-out B perplexity %.3f\n",
		len(quant.Layers(merged)), peft.Commas(quant.WeightBytes(merged)), maxDiff(want, got), mPPL)
	nn.FreeParams(merged)
	nn.FreeParams(fm)
	return nil
}

type loadFigures struct {
	malloc, owned, rss int64
	sec                float64
}

// measureInChild runs this program with -measure-load in a fresh process.
func measureInChild(o options, dir, kind string) (loadFigures, error) {
	exe, err := os.Executable()
	if err != nil {
		return loadFigures{}, err
	}
	args := []string{"-measure-load", kind, "-model", dir, "-quant", o.quantType,
		"-double-quant=" + strconv.FormatBool(o.doubleQuant), "-skip", o.skip, "-embed-dtype", o.embedDType}
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	outb, err := cmd.Output()
	if err != nil {
		return loadFigures{}, fmt.Errorf("measure %s load: %w", kind, err)
	}
	var fig loadFigures
	_, err = fmt.Sscanf(strings.TrimSpace(string(outb)), "%d %d %d %g", &fig.malloc, &fig.owned, &fig.rss, &fig.sec)
	return fig, err
}

// measureLoad loads one model after warming up and prints the growth of
// live malloc'd bytes, the part of it that freeing the model gives back,
// the growth of resident anonymous memory (the heap, without mapped files:
// the checkpoint, libtorch's code), and the load time.
func measureLoad(o options) error {
	// the one-time costs first: libtorch's start-up, the quantization ops'
	// first use (their code pages, OpenMP threads), the code tables
	s := tensor.NoGradScope()
	s.Float32s(s.Matmul(s.Ones(tensor.Float32, 64, 64), s.Ones(tensor.Float32, 64, 64)))
	q, err := quant.NewLinear(s.Randn(tensor.Float32, 256, 512), nil, o.quantConfig())
	if err != nil {
		return err
	}
	s.Float32s(q.Forward(s, s.Randn(tensor.Float32, 2, 512)))
	nn.FreeParams(q)
	q.FreeBuffers()
	s.Float32s(s.To(s.To(s.Ones(tensor.Float32, 8), tensor.BFloat16), tensor.Float32))
	if err := s.Err(); err != nil {
		return err
	}
	s.Close()
	settle()
	m0, rss0 := mallocInUse(), rssAnon()
	t0 := time.Now()
	var m *llama.Model
	if o.measure == "quantized" {
		m, err = llama.LoadQuantized(o.model, o.quantConfig())
	} else {
		m, err = llama.Load(o.model)
	}
	if err != nil {
		return err
	}
	sec := time.Since(t0).Seconds()
	settle()
	loaded, rss := mallocInUse(), rssAnon()
	m.Free()
	settle()
	// what stays after Free was built during the load but is not the
	// model's (libtorch's per-thread and per-op state)
	fmt.Println(loaded-m0, loaded-mallocInUse(), rss-rss0, sec)
	return nil
}

func settle() {
	runtime.GC()
	debug.FreeOSMemory()
}

// rssAnon is the RssAnon line of /proc/self/status in bytes (0 if absent).
func rssAnon() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// textCorpus cuts the bytes of file into sequences of l token ids (one per
// byte): the first 90% for training, the rest held out, each a multiple of
// batch sequences.
func textCorpus(file string, l, batch int64) (trainSet, held [][]int64, err error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, fmt.Errorf("task A text: %w", err)
	}
	n := int64(len(b)) / l
	nTrain := n * 9 / 10 / batch * batch
	nHeld := (n - nTrain) / batch * batch
	if nTrain == 0 || nHeld == 0 {
		return nil, nil, fmt.Errorf("task A text %s: %d bytes make %d sequences of %d; want at least %d", file, len(b), n, l, 20*batch)
	}
	seqs := make([][]int64, n)
	for i := range seqs {
		seqs[i] = make([]int64, l)
		for j := range seqs[i] {
			seqs[i][j] = int64(b[int64(i)*l+int64(j)])
		}
	}
	return seqs[:nTrain], seqs[n-nHeld:], nil
}

// corpus makes n sequences of length l over ids [0, 128): each token is
// (a·prev + c) mod 128 with probability 0.9, else uniform.
func corpus(seed uint64, n, l int64, rule [2]int64) [][]int64 {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	out := make([][]int64, n)
	for i := range out {
		seq := make([]int64, l)
		t := rng.Int64N(vocabUsed)
		for j := range seq {
			seq[j] = t
			if rng.Float64() < 0.9 {
				t = (rule[0]*t + rule[1]) % vocabUsed
			} else {
				t = rng.Int64N(vocabUsed)
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

// logitsDiff is the max abs difference of two models' logits and the
// largest |logit| of the first.
func logitsDiff(a, b forwarder, seqs [][]int64) (diff, scale float64, err error) {
	x, err := lastLogits(a, seqs)
	if err != nil {
		return 0, 0, err
	}
	y, err := lastLogits(b, seqs)
	if err != nil {
		return 0, 0, err
	}
	return maxDiff(x, y), maxDiff(x, make([]float32, len(x))), nil
}

type runResult struct {
	losses      []float64
	stepSec     float64
	start, peak int64
}

func (r runResult) curve() string {
	s := fmt.Sprintf("%.3f", r.losses[0])
	for i := 10; i < len(r.losses)-1; i += 10 {
		s += fmt.Sprintf(" %.3f", r.losses[i])
	}
	return s + fmt.Sprintf(" → %.3f", r.losses[len(r.losses)-1])
}

// fit trains params with AdamW over trainSet in order, o.batch sequences
// per step, and records the losses, the median step time and the RSS
// before and at the peak.
func fit(m forwarder, params []nn.NamedParam, trainSet [][]int64, steps int, lr float64, o options) (runResult, error) {
	nn.SetTraining(m, true)
	defer nn.SetTraining(m, false)
	opt := train.NewAdamW(params, train.AdamWConfig{LR: lr})
	defer opt.Free()
	runtime.GC()
	r := runResult{start: memstat.RSS()}
	_ = memstat.ResetPeak()
	var times []float64
	nb := int64(len(trainSet)) / o.batch
	for step := 0; step < steps; step++ {
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
