// Command bench measures the library on the project's benchmark config and
// prints one JSON line per case, in the format of
// ../shared/bench/torch_reference.py, so the two can be compared case by
// case in the same session.
//
// The benchmark config: Llama, hidden 512, 8 layers, 8 heads (8 KV heads),
// intermediate 1376, vocab 8000, max positions 512, untied lm_head
// (33,497,600 parameters), fp32, batch 4 × seq 256, 2 threads, 2 warm-up and
// 10 timed steps.
//
// Cases:
//
//	forward           no-grad forward with full logits; tokens/s = batch·seq / step time
//	forward-merged    the same after lora.Wrap (r 8 on all 7 linear layers) and
//	                  MergeAndUnload: a merged model must run as fast as the base
//	forward-backward  shifted causal-LM loss (labels = input_ids), backward over every
//	                  parameter, gradients dropped after each step (no optimizer step)
//	train-lora        LoRA r 8, alpha 16 on q_proj,v_proj, AdamW lr 1e-4 over the LoRA
//	                  parameters: forward, loss, backward, optimizer step, zero grads
//	train-lora-all    the same on all 7 linear layers of each decoder block
//	train-full        every parameter trainable, AdamW (the full fine-tuning baseline)
//	generate-b1       greedy decoding with the KV cache through generate.Generate, batch 1,
//	                  prompt 32, 64 new tokens; tokens/s = new tokens / wall time
//	                  (prefill included), 1 warm-up + 3 runs; ttft_s is the time from
//	                  process start to the warm-up run's first token
//	generate-b4       the same at batch 4, prompt 256, 1 warm-up + 2 runs
//
// With -model DIR (a HF folder: go run ./bench/mkmodel writes random-weight
// Qwen2.5-0.5B and Llama-2-7B ones) and -dtype, the scale cases run
// instead: load, generate-b1, generate-b4 (prompt 32, 32 new tokens) and
// train-lora-ckpt (LoRA q,v, batch 1 × 512, activation checkpointing); see
// scale.go, and bench/reference_scale.py for the PyTorch side.
//
// Usage:
//
//	go run ./bench                         # env line, then every case in a fresh subprocess
//	go run ./bench -case forward           # one case in this process
//	go run ./bench -env                    # only the env line
//	go run ./bench -summarize results.jsonl  # median tables of a bench/compare.sh run
//	go run ./bench -model DIR -dtype bfloat16  # the scale cases on a HF folder (scale.go)
//
// Peak RSS is the process's VmHWM, which is why each case runs in its own
// process. probe_gflops times a 512³ fp32 matmul for 0.2 s before and after
// the case: a low probe marks a disturbed (shared, throttled) window.
package main

// #include <stdint.h>
// extern void at_set_num_threads(int);
// extern int at_get_num_threads();
import "C"

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/gopeft/peft/internal/memstat"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// benchParams is the parameter count of the benchmark config.
const benchParams = 33_497_600

var cases = []string{"forward", "forward-merged", "forward-backward", "train-lora", "train-lora-all", "train-full", "generate-b1", "generate-b4"}

type options struct {
	caseName  string
	cases     string
	threads   int
	seed      int64
	batch     int64
	seq       int64
	warmup    int
	steps     int
	gradReset string
	early     bool
	summarize string
	maxLoad   float64
	envOnly   bool
	traceRSS  bool
	threadCPU bool
	// the scale cases (scale.go)
	model     string
	dtype     string
	prompt    int
	newTokens int
	runs      int
	fusedLoss bool
	lossChunk int64
}

func main() {
	var o options
	flag.StringVar(&o.caseName, "case", "", "run one case in this process: "+strings.Join(cases, ", "))
	flag.StringVar(&o.cases, "cases", strings.Join(cases, ","), "comma-separated cases for the all-cases run")
	flag.IntVar(&o.threads, "threads", 2, "libtorch intra-op threads (OMP_NUM_THREADS of the case processes)")
	flag.Int64Var(&o.seed, "seed", 0, "model init seed")
	flag.Int64Var(&o.batch, "batch", 4, "batch size")
	flag.Int64Var(&o.seq, "seq", 256, "sequence length")
	flag.IntVar(&o.warmup, "warmup", 2, "warm-up steps (not timed)")
	flag.IntVar(&o.steps, "steps", 10, "timed steps")
	flag.StringVar(&o.gradReset, "grad-reset", "none",
		"forward-backward: 'none' drops the gradients after each step (PyTorch's grad = None), 'zero' zeroes them in place")
	flag.BoolVar(&o.early, "free-before-backward", true,
		"forward-backward, -model train-lora-ckpt: free the scope's handles to intermediates before backward (autograd keeps what it needs)")
	flag.StringVar(&o.summarize, "summarize", "", "print the median tables of a compare.sh results file and exit")
	flag.Float64Var(&o.maxLoad, "max-load", 0.6, "-summarize: rounds that started at or above this 1-minute load average are not used")
	flag.BoolVar(&o.threadCPU, "thread-cpu", false, "add thread_cpu_s: CPU seconds of every OS thread of the case's process, largest first")
	flag.BoolVar(&o.traceRSS, "trace-rss", false, "print RSS and peak RSS after every step to stderr")
	flag.BoolVar(&o.envOnly, "env", false, "print only the env line (machine, BLAS and libtorch loaded) and exit")
	flag.StringVar(&o.model, "model", "", "HF folder for the scale cases ("+strings.Join(scaleCases, ", ")+
		"); their defaults: -batch 1 -seq 512 -warmup 1 -steps 3")
	flag.StringVar(&o.dtype, "dtype", "auto", "-model: the weights' dtype (auto = config.json's torch_dtype, float32, bfloat16, float16)")
	flag.IntVar(&o.prompt, "prompt", 32, "-model generate-b1/b4: prompt length")
	flag.IntVar(&o.newTokens, "new-tokens", 32, "-model generate-b1/b4: new tokens")
	flag.IntVar(&o.runs, "runs", 2, "-model generate-b1/b4: timed runs after one warm-up")
	flag.BoolVar(&o.fusedLoss, "fused-loss", true, "-model train-lora-ckpt: the loss without the full logits (models.Batch.LossOnly), as train.Trainer computes it")
	flag.Int64Var(&o.lossChunk, "loss-chunk-mib", 0, "-model train-lora-ckpt with -fused-loss: models.LossChunkBytes in MiB (0: the library's default)")
	flag.Parse()
	if o.model != "" {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		scaleDefaults(&o, set)
	}

	if o.summarize != "" {
		if err := summarize(o.summarize, o.maxLoad); err != nil {
			fatal(err)
		}
		return
	}
	if o.envOnly {
		printJSON(envInfo(o.threads))
		return
	}
	if o.caseName == "" {
		runAll(o)
		return
	}
	res, err := runCase(o)
	if err != nil {
		fatal(fmt.Errorf("%s: %w", o.caseName, err))
	}
	if o.threadCPU {
		res["thread_cpu_s"] = threadCPU()
	}
	printJSON(res)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func printJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		fatal(err)
	}
	fmt.Println(string(b))
}

// runAll prints the env line and runs each case in a fresh copy of this
// program, printing its JSON line (or an error line).
func runAll(o options) {
	printJSON(envInfo(o.threads))
	exe, err := os.Executable()
	if err != nil {
		fatal(err)
	}
	var pass []string
	flag.Visit(func(f *flag.Flag) {
		if f.Name != "case" && f.Name != "cases" {
			pass = append(pass, "-"+f.Name+"="+f.Value.String())
		}
	})
	for _, c := range strings.Split(o.cases, ",") {
		cmd := exec.Command(exe, append(append([]string{}, pass...), "-case", c)...)
		cmd.Env = append(os.Environ(), "OMP_NUM_THREADS="+strconv.Itoa(o.threads))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		line := lastJSONLine(string(out))
		if err != nil || line == "" {
			msg := strings.TrimSpace(stderr.String())
			if err != nil && msg == "" {
				msg = err.Error()
			}
			printJSON(map[string]any{"case": c, "error": msg})
			continue
		}
		fmt.Println(line)
	}
}

func lastJSONLine(out string) string {
	last := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "{") {
			last = l
		}
	}
	return last
}

// benchConfig is the project's benchmark model.
func benchConfig() *llama.Config {
	return &llama.Config{
		ModelType:             "llama",
		HiddenSize:            512,
		IntermediateSize:      1376,
		NumHiddenLayers:       8,
		NumAttentionHeads:     8,
		NumKeyValueHeads:      8,
		VocabSize:             8000,
		MaxPositionEmbeddings: 512,
		RMSNormEps:            1e-6,
		RopeTheta:             10000,
		TieWordEmbeddings:     false,
		HiddenAct:             "silu",
		InitializerRange:      0.02,
	}
}

// tokens is step's batch of random ids, drawn in Go (the values do not
// change the timing; the reference draws its own with torch's generator).
func tokens(s *tensor.Scope, step int, b, l, vocab int64) *tensor.T {
	r := rand.New(rand.NewPCG(uint64(step), 0x9e3779b97f4a7c15))
	ids := make([]int64, b*l)
	for i := range ids {
		ids[i] = r.Int64N(vocab)
	}
	return s.FromInt64(ids, b, l)
}

func runCase(o options) (map[string]any, error) {
	runtime.LockOSThread()
	if o.threads > 0 {
		C.at_set_num_threads(C.int(o.threads))
	}
	if o.model != "" {
		return runScaleCase(o)
	}
	probeBefore := probeGflops(200 * time.Millisecond)
	baseRSS := memstat.RSS() // the process with libtorch loaded, before the model
	cfg := benchConfig()
	m, err := llama.New(cfg, o.seed)
	if err != nil {
		return nil, err
	}
	defer m.Free()
	trainable, total := nn.CountParams(m)
	if o.batch == 4 && o.seq == 256 && total != benchParams {
		return nil, fmt.Errorf("the benchmark config has %d parameters, want %d", total, benchParams)
	}
	res := map[string]any{"case": o.caseName, "impl": "go"}
	var times []float64
	var losses []float64
	switch o.caseName {
	case "forward":
		times, err = forward(m, o)
		trainable = 0
	case "forward-merged":
		var merged models.Model
		merged, total, err = mergedLoRA(m)
		if err == nil {
			times, err = forward(merged, o)
		}
		trainable = 0
	case "forward-backward":
		times, losses, err = forwardBackward(m, o)
		res["grad_reset"] = o.gradReset
		res["free_before_backward"] = o.early
		res["losses"] = losses
	case "train-lora", "train-lora-all", "train-full":
		var tr trainResult
		tr, err = trainCase(m, o)
		times, losses, trainable, total = tr.times, tr.losses, tr.trainable, tr.total
		res["losses"] = losses
		res["optimizer"] = fmt.Sprintf("AdamW lr=%g", benchLR)
		if tr.lora != nil {
			res["lora"] = tr.lora
		}
	case "generate-b1", "generate-b4":
		var g genResult
		g, err = generateCase(m, o)
		if err != nil {
			return nil, err
		}
		return g.json(res, m, total, probeBefore), nil
	default:
		return nil, fmt.Errorf("unknown case %q (want one of %s)", o.caseName, strings.Join(cases, ", "))
	}
	if err != nil {
		return nil, err
	}
	tot, minT := 0.0, times[0]
	for _, t := range times {
		tot += t
		minT = min(minT, t)
	}
	res["tokens_per_s"] = float64(o.batch*o.seq) * float64(len(times)) / tot
	res["peak_rss_mib"] = round1(float64(memstat.PeakRSS()) / (1 << 20))
	res["rss_before_model_mib"] = round1(float64(baseRSS) / (1 << 20))
	res["params"] = total
	res["trainable"] = trainable
	res["batch"] = o.batch
	res["seq"] = o.seq
	res["timed_steps"] = len(times)
	res["sec_per_step_mean"] = tot / float64(len(times))
	res["sec_per_step_min"] = minT
	res["step_seconds"] = roundAll(times, 4)
	res["threads"] = threads()
	res["probe_gflops"] = []float64{probeBefore, probeGflops(200 * time.Millisecond)}
	return res, nil
}

// forward times no-grad forwards with full logits; freeing the step's
// intermediates is part of the step, as in the reference (where they die
// with their Python references).
func forward(m models.Model, o options) ([]float64, error) {
	s := tensor.NoGradScope()
	defer s.Close()
	var times []float64
	for step := 0; step < o.warmup+o.steps; step++ {
		ids := s.Keep(tokens(s, step, o.batch, o.seq, benchConfig().VocabSize))
		t0 := time.Now()
		out := m.ForwardT(s, &models.Batch{InputIDs: ids})
		if err := s.Err(); err != nil {
			return nil, err
		}
		if out.Logits == nil {
			return nil, fmt.Errorf("no logits")
		}
		s.FreeAll()
		dt := time.Since(t0).Seconds()
		ids.Free()
		traceRSS(o, step, dt)
		if step >= o.warmup {
			times = append(times, dt)
		}
	}
	return times, nil
}

// forwardBackward times loss + backward over every parameter and the
// gradient reset, like the reference's forward-backward case.
func forwardBackward(m *llama.Model, o options) ([]float64, []float64, error) {
	s := tensor.NewScope()
	defer s.Close()
	params := nn.TrainableParams(m)
	var times, losses []float64
	for step := 0; step < o.warmup+o.steps; step++ {
		ids := s.Keep(tokens(s, step, o.batch, o.seq, m.Config.VocabSize))
		t0 := time.Now()
		out := m.ForwardT(s, &models.Batch{InputIDs: ids, Labels: ids})
		if err := s.Err(); err != nil {
			return nil, nil, err
		}
		if out.Loss == nil {
			return nil, nil, fmt.Errorf("no loss")
		}
		loss := s.Keep(out.Loss)
		if o.early {
			// Every other intermediate is referenced only by the scope now and
			// by the autograd graph where backward needs it: freeing the
			// scope's handles lets backward release activations as it goes.
			s.FreeAll()
		}
		s.Backward(loss)
		if err := resetGrads(s, params, o.gradReset); err != nil {
			return nil, nil, err
		}
		s.FreeAll()
		dt := time.Since(t0).Seconds()
		if err := s.Err(); err != nil {
			return nil, nil, err
		}
		lv := s.Item(loss)
		s.FreeAll()
		loss.Free()
		ids.Free()
		traceRSS(o, step, dt)
		if step >= o.warmup {
			times = append(times, dt)
			losses = append(losses, float64(int64(lv*1e4+0.5))/1e4)
		}
	}
	return times, losses, s.Err()
}

func traceRSS(o options, step int, dt float64) {
	if o.traceRSS {
		fmt.Fprintf(os.Stderr, "step %d: %.3f s, RSS %.0f MiB, peak %.0f MiB\n", step, dt,
			float64(memstat.RSS())/(1<<20), float64(memstat.PeakRSS())/(1<<20))
	}
}

// resetGrads clears the parameters' gradients after a step.
//
// "none" is PyTorch's p.grad = None: libtch cannot unset a gradient, so each
// parameter's handle is replaced by a detached alias of the same storage
// that requires grad (a new leaf without a gradient); freeing the old handle
// frees its gradient. The next backward then allocates fresh gradients, as
// PyTorch does after zero_grad(set_to_none=True).
//
// "zero" is zero_grad(set_to_none=False): gradients stay allocated and the
// next backward accumulates into them.
func resetGrads(s *tensor.Scope, params []nn.NamedParam, mode string) error {
	switch mode {
	case "none":
		for _, np := range params {
			d := s.Detach(np.Param.T())
			s.SetRequiresGrad(d, true)
			if err := s.Err(); err != nil {
				return fmt.Errorf("reset grad of %s: %w", np.Name, err)
			}
			np.Param.Set(s.Keep(d))
		}
	case "zero":
		prev := tensor.SetGradEnabled(false)
		for _, np := range params {
			if g := s.Grad(np.Param.T()); g != nil {
				s.Zero(g)
				s.Drop(g)
			}
		}
		tensor.SetGradEnabled(prev)
	default:
		return fmt.Errorf("-grad-reset %q: want none or zero", mode)
	}
	return s.Err()
}

// probeGflops runs 512×512×512 fp32 matmuls for about d and returns GFLOP/s.
func probeGflops(d time.Duration) float64 {
	s := tensor.NoGradScope()
	defer s.Close()
	a := s.Ones(tensor.Float32, 512, 512)
	b := s.Ones(tensor.Float32, 512, 512)
	s.Drop(s.Matmul(a, b))
	n := 0
	t0 := time.Now()
	for time.Since(t0) < d {
		s.Drop(s.Matmul(a, b))
		n++
	}
	el := time.Since(t0).Seconds()
	if s.Err() != nil {
		return 0
	}
	return round1(float64(n) * 2 * 512 * 512 * 512 / el / 1e9)
}

// envInfo describes the machine and the libraries actually loaded.
func envInfo(threads int) map[string]any {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.at_set_num_threads(C.int(threads))
	probeGflops(10 * time.Millisecond) // loads the BLAS
	return map[string]any{
		"case":     "env",
		"impl":     "go",
		"go":       runtime.Version(),
		"nproc":    runtime.NumCPU(),
		"cpu":      cpuModel(),
		"threads":  int(C.at_get_num_threads()),
		"blas":     loadedLibs("blas", "lapack"),
		"libtorch": loadedLibs("libtorch.so", "libtorch_cpu"),
		"time":     time.Now().Format(time.RFC3339),
	}
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// loadedLibs lists the mapped shared libraries whose path contains any of
// the substrings, resolved through symlinks (update-alternatives).
func loadedLibs(subs ...string) []string {
	data, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		fs := strings.Fields(line)
		if len(fs) < 6 {
			continue
		}
		p := fs[len(fs)-1]
		for _, sub := range subs {
			if strings.Contains(p, sub) {
				if r, err := filepath.EvalSymlinks(p); err == nil {
					p = r
				}
				if !seen[p] {
					seen[p] = true
					out = append(out, p)
				}
				break
			}
		}
	}
	return out
}

func round1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }

func roundAll(v []float64, digits int) []float64 {
	scale := 1.0
	for i := 0; i < digits; i++ {
		scale *= 10
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(int64(x*scale+0.5)) / scale
	}
	return out
}

// threads is libtorch's intra-op thread count.
func threads() int { return int(C.at_get_num_threads()) }
