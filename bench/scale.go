package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/internal/memstat"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/gemma"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
)

// The scale cases run on a HF folder given with -model (bench/mkmodel's
// random-weight Qwen2.5-0.5B, Llama-2-7B and Gemma-3-1B; the family comes
// from config.json's model_type), loaded with -dtype, next to
// bench/reference_scale.py, which runs the same workloads on the same
// folder with the same token ids:
//
//	load             wall time of llama.Load (gemma.Load); RSS, RssAnon and RssFile after it
//	generate-b1      greedy decoding, batch 1, prompt 32, 32 new tokens, 1 warm-up + 2 runs
//	generate-b4      the same at batch 4 (4 × 32 prompt)
//	train-lora-ckpt  LoRA r 8, alpha 16 on q_proj,v_proj (Phi-3: qkv_proj) (float32 adapters), AdamW lr 1e-4,
//	                 batch 1 × 512, activation checkpointing, 1 warm-up + 3 steps; the
//	                 loss from the fused head as train.Trainer computes it (-fused-loss)
//
// Generation reports, beside tokens/s with the prefill, the decoding rate
// from the first new token to the last and its ceiling: the bytes a decode
// step reads (every weight once, lm_head in full also when tied, one
// embedding row per sequence) over the copy bandwidth measured in this
// process (a 512 MiB memcpy split over -threads goroutines, read + written
// bytes per second, best of 4).
var scaleCases = []string{"load", "generate-b1", "generate-b4", "train-lora-ckpt"}

// scaleDefaults are the workload flags' values for -model runs where the
// command line does not set them.
func scaleDefaults(o *options, set map[string]bool) {
	def := func(name string, f func()) {
		if !set[name] {
			f()
		}
	}
	def("batch", func() { o.batch = 1 })
	def("seq", func() { o.seq = 512 })
	def("warmup", func() { o.warmup = 1 })
	def("steps", func() { o.steps = 3 })
	def("cases", func() { o.cases = strings.Join(scaleCases, ",") })
}

// scaleTokens is n token ids in [0, vocab) from SplitMix64 started at
// seed·γ: the same function as reference_scale.py's scale_tokens, so that
// both sides see the same prompts and batches.
func scaleTokens(seed uint64, n int, vocab int64) []int64 {
	const gamma = 0x9e3779b97f4a7c15
	z := seed * gamma
	out := make([]int64, n)
	for i := range out {
		z += gamma
		x := z
		x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
		x = (x ^ (x >> 27)) * 0x94d049bb133111eb
		x ^= x >> 31
		out[i] = int64(x % uint64(vocab))
	}
	return out
}

type memSnap struct{ rss, anon, file int64 }

func snap() memSnap { return memSnap{memstat.RSS(), memstat.RSSAnon(), memstat.RSSFile()} }

func mib(b int64) float64 { return round1(float64(b) / (1 << 20)) }

// scaleModel is what the scale cases use of a loaded family.
type scaleModel interface {
	models.CausalLM
	models.Sized
	Free()
	DType() tensor.DType
	ModelType() string
}

// loadScaleModel loads the folder with the family its model_type names.
func loadScaleModel(dir string, opts ...models.LoadOption) (scaleModel, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	var head struct {
		ModelType string `json:"model_type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, fmt.Errorf("%s/config.json: %w", dir, err)
	}
	if head.ModelType == "gemma2" || head.ModelType == "gemma3_text" {
		return gemma.Load(dir, opts...)
	}
	return llama.Load(dir, opts...)
}

func runScaleCase(o options) (map[string]any, error) {
	if !slices.Contains(scaleCases, o.caseName) {
		return nil, fmt.Errorf("with -model the cases are %v", scaleCases)
	}
	probeBefore := probeGflops(200 * time.Millisecond)
	before := snap()
	t0 := time.Now()
	m, err := loadScaleModel(o.model, models.WithDType(o.dtype))
	if err != nil {
		return nil, err
	}
	loadS := time.Since(t0).Seconds()
	afterLoad := snap()
	peakLoad := memstat.PeakRSS()
	// the work's own peak: VmHWM restarts from the RSS after the load
	peakReset := memstat.ResetPeak() == nil
	defer m.Free()
	_, total := nn.CountParams(m)
	var paramBytes int64
	for _, np := range nn.NamedParams(m) {
		paramBytes += np.Param.Numel() * int64(np.Param.DType().Size())
	}
	res := map[string]any{
		"case": o.caseName, "impl": "go", "model": filepath.Base(filepath.Clean(o.model)),
		"model_type": m.ModelType(), "dtype": m.DType().String(), "load_s": round3(loadS),
		"param_bytes": paramBytes, "trainable": 0,
	}
	batch := 1
	switch o.caseName {
	case "load":
		res["seconds"] = round3(loadS)
	case "generate-b1", "generate-b4":
		if o.caseName == "generate-b4" {
			batch = 4
		}
		if err := scaleGenerate(m, o, batch, res); err != nil {
			return nil, err
		}
	case "train-lora-ckpt":
		if err := scaleTrain(m, o, res); err != nil {
			return nil, err
		}
		total = res["params"].(int64)
	}
	st := snap()
	res["params"] = total
	peak := memstat.PeakRSS()
	res["peak_rss_mib"] = mib(max(peak, peakLoad)) // the whole process, as the other cases
	if peakReset {
		res["peak_rss_after_load_mib"] = mib(peak)
	}
	res["rss_mib"] = mib(st.rss)
	res["rss_anon_mib"] = mib(st.anon)
	res["rss_file_mib"] = mib(st.file)
	res["rss_before_model_mib"] = mib(before.rss)
	res["rss_anon_before_model_mib"] = mib(before.anon)
	res["rss_anon_after_load_mib"] = mib(afterLoad.anon)
	res["rss_file_after_load_mib"] = mib(afterLoad.file)
	res["threads"] = threads()
	if ps, ok := res["bytes_per_step"].(int64); ok {
		// after the peak is read: the two 512 MiB buffers would raise it
		bw := copyBandwidth(o.threads)
		ceiling := float64(batch) * bw * 1e9 / float64(ps)
		res["copy_gbps"] = round2(bw)
		res["ceiling_tokens_per_s"] = round2(ceiling)
		res["ceiling_fraction"] = round3(res["decode_tokens_per_s"].(float64) / ceiling)
	}
	res["probe_gflops"] = []float64{probeBefore, probeGflops(200 * time.Millisecond)}
	return res, nil
}

// bytesPerStep is what one decode step of m reads at batch rows: every
// parameter once, the lm_head in full (also when it is the tied
// embedding) and one embedding row per sequence.
func bytesPerStep(m scaleModel, batch int) int64 {
	var emb *nn.Param
	for _, np := range nn.NamedParams(m) {
		if np.Name == "model.embed_tokens.weight" {
			emb = np.Param
		}
	}
	tied := false
	if head, err := nn.Get(m, "lm_head"); err == nil {
		if lin, ok := head.(*nn.Linear); ok {
			tied = lin.Weight == emb
		}
	}
	var total int64
	for _, np := range nn.NamedParams(m) {
		if np.Param == emb {
			continue
		}
		total += np.Param.Numel() * int64(np.Param.DType().Size())
	}
	size := int64(emb.DType().Size())
	if tied {
		total += emb.Numel() * size
	}
	return total + int64(batch)*emb.Shape()[1]*size
}

// scaleGenerate times greedy decoding: run 0 is a warm-up (its first token
// gives ttft_s), then o.runs timed runs.
func scaleGenerate(m scaleModel, o options, batch int, res map[string]any) error {
	cfg := generate.DefaultGenerationConfig()
	cfg.MaxNewTokens = o.newTokens
	cfg.EOSTokenID = nil // every run decodes all the new tokens
	vocab := m.Dims().VocabSize
	var times, decode []float64
	var ttft float64
	var toks []int64
	for run := 0; run <= o.runs; run++ {
		ids := scaleTokens(uint64(100+run), batch*o.prompt, vocab)
		in := generate.Input{InputIDs: make([][]int64, batch)}
		for i := range in.InputIDs {
			in.InputIDs[i] = ids[i*o.prompt : (i+1)*o.prompt]
		}
		var stamps []time.Time
		t0 := time.Now()
		out, err := generate.Stream(context.Background(), m, in, cfg, func(generate.Step) error {
			if len(stamps) == 0 && run == 0 {
				ttft = sinceProcessStart()
			}
			stamps = append(stamps, time.Now())
			return nil
		})
		dt := time.Since(t0).Seconds()
		if err != nil {
			return err
		}
		if n := len(out.Sequences[0]); len(out.Sequences) != batch || n != o.prompt+o.newTokens {
			return fmt.Errorf("generated %d rows of %d tokens, want %d of %d", len(out.Sequences), n, batch, o.prompt+o.newTokens)
		}
		if run > 0 {
			times = append(times, dt)
			if len(stamps) > 1 {
				decode = append(decode, float64(batch*(len(stamps)-1))/stamps[len(stamps)-1].Sub(stamps[0]).Seconds())
			}
			toks = out.Sequences[0][o.prompt:]
		}
	}
	tot := 0.0
	for _, t := range times {
		tot += t
	}
	dec := 0.0
	if len(decode) > 0 {
		slices.Sort(decode)
		dec = decode[len(decode)/2]
	}
	res["tokens_per_s"] = float64(batch*o.newTokens*o.runs) / tot
	res["decode_tokens_per_s"] = round3(dec)
	res["batch"] = batch
	res["prompt_len"] = o.prompt
	res["new_tokens"] = o.newTokens
	res["runs"] = o.runs
	res["sec_per_generate_mean"] = tot / float64(o.runs)
	res["step_seconds"] = roundAll(times, 4)
	res["ttft_s"] = round3(ttft)
	res["bytes_per_step"] = bytesPerStep(m, batch)
	res["tokens"] = toks
	res["note"] = "greedy, KV cache; tokens_per_s includes the prefill, decode_tokens_per_s is first to last new token"
	return nil
}

// scaleTrain times LoRA training steps with activation checkpointing, as
// train.Trainer runs them: forward with labels, the checkpoint's
// backward, AdamW step, gradients zeroed.
func scaleTrain(m scaleModel, o options, res map[string]any) error {
	if o.lossChunk > 0 {
		models.LossChunkBytes = o.lossChunk << 20
	}
	targets := []string{"q_proj", "v_proj"}
	if m.ModelType() == "phi3" { // fused: PEFT has no default for Phi-3
		targets = []string{"qkv_proj"}
	}
	pm, err := lora.Wrap(m, loraConfig(targets))
	if err != nil {
		return err
	}
	trainable, total := nn.CountParams(pm)
	params := nn.TrainableParams(pm)
	adapterDType := params[0].Param.DType().String()
	opt := train.NewAdamW(params, train.AdamWConfig{LR: benchLR})
	defer opt.Free()
	var times, cpus, losses []float64
	for step := 0; step < o.warmup+o.steps; step++ {
		cpu0 := cpuSeconds()
		dt, loss, err := ckptStep(pm, opt, o, step, m.Dims().VocabSize)
		if err != nil {
			return err
		}
		cpu := cpuSeconds() - cpu0
		traceRSS(o, step, dt)
		losses = append(losses, math.Round(loss*1e4)/1e4)
		if step >= o.warmup {
			times = append(times, dt)
			cpus = append(cpus, cpu)
		}
	}
	tot := 0.0
	for _, t := range times {
		tot += t
	}
	res["tokens_per_s"] = float64(o.batch*o.seq) * float64(len(times)) / tot
	res["batch"] = o.batch
	res["seq"] = o.seq
	res["timed_steps"] = len(times)
	res["sec_per_step_mean"] = tot / float64(len(times))
	res["sec_per_step_min"] = slices.Min(times)
	res["step_seconds"] = roundAll(times, 4)
	// CPU time (user + system, all threads) per step: on a shared machine
	// a steadier comparison of two builds than wall time
	res["step_cpu_seconds"] = roundAll(cpus, 4)
	res["losses"] = losses
	res["trainable"] = trainable
	res["params"] = total
	res["optimizer"] = fmt.Sprintf("AdamW lr=%g", benchLR)
	res["lora"] = map[string]any{"r": benchRank, "alpha": benchAlpha, "dropout": 0, "targets": targets, "adapter_dtype": adapterDType}
	res["checkpointing"] = true
	res["fused_loss"] = o.fusedLoss
	if o.fusedLoss {
		res["loss_chunk_rows"] = max(16, models.LossChunkBytes/(8*m.Dims().VocabSize))
	}
	return nil
}

func ckptStep(model models.Model, opt *train.AdamW, o options, step int, vocab int64) (float64, float64, error) {
	s := tensor.NewScope()
	defer s.Close()
	ids := s.Keep(s.FromInt64(scaleTokens(uint64(1000+step), int(o.batch*o.seq), vocab), o.batch, o.seq))
	defer ids.Free()
	t0 := time.Now()
	ck := models.NewCheckpoint(int64(step))
	defer ck.Free()
	out := model.ForwardT(s, &models.Batch{InputIDs: ids, Labels: ids, Checkpoint: ck, LossOnly: o.fusedLoss})
	if err := s.Err(); err != nil {
		return 0, 0, err
	}
	if out.Loss == nil {
		return 0, 0, fmt.Errorf("no loss")
	}
	loss := s.Keep(out.Loss)
	defer loss.Free()
	// As train.Trainer does: the forward's scope is freed before backward
	// (the checkpoint holds what the layers' recomputation reads).
	if o.early {
		s.FreeAll()
	}
	ck.Backward(s, loss)
	if err := s.Err(); err != nil {
		return 0, 0, err
	}
	if err := opt.Step(); err != nil {
		return 0, 0, err
	}
	if err := opt.ZeroGrad(); err != nil {
		return 0, 0, err
	}
	dt := time.Since(t0).Seconds()
	return dt, s.Item(loss), s.Err()
}

// copyBandwidth copies a 512 MiB buffer with threads goroutines, best of
// 4, and returns (read + written bytes) / s in GB/s (STREAM's convention
// for a copy).
func copyBandwidth(threads int) float64 {
	const size = 512 << 20
	threads = max(threads, 1)
	src, dst := make([]byte, size), make([]byte, size)
	for i := range src {
		src[i] = byte(i)
	}
	best := math.Inf(1)
	for rep := 0; rep < 5; rep++ { // the first one faults dst in
		t0 := time.Now()
		var wg sync.WaitGroup
		for t := 0; t < threads; t++ {
			lo, hi := t*size/threads, (t+1)*size/threads
			wg.Add(1)
			go func() {
				defer wg.Done()
				copy(dst[lo:hi], src[lo:hi])
			}()
		}
		wg.Wait()
		if rep > 0 {
			best = min(best, time.Since(t0).Seconds())
		}
	}
	return 2 * size / best / 1e9
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

// cpuSeconds is the process's user + system CPU time so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
