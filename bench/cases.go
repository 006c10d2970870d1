package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/internal/memstat"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
)

// The reference's LoRA and optimizer settings.
const (
	benchLR    = 1e-4
	benchRank  = 8
	benchAlpha = 16
)

// allLinear is the reference's ALL_TARGETS: the 7 linear layers of a block.
var allLinear = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// loraConfig is the benchmark's LoRA on targets.
func loraConfig(targets []string) *lora.Config {
	return &lora.Config{R: benchRank, LoraAlpha: benchAlpha, TargetModules: lora.List(targets...)}
}

// mergedLoRA wraps m with LoRA on all 7 linear layers and merges it back:
// the model a service serves after MergeAndUnload. The B matrices start at
// zero, so the merged weights equal the base's; the timing is what matters.
func mergedLoRA(m *llama.Model) (models.Model, int64, error) {
	pm, err := lora.Wrap(m, loraConfig(allLinear))
	if err != nil {
		return nil, 0, err
	}
	merged, err := pm.MergeAndUnload()
	if err != nil {
		return nil, 0, err
	}
	_, total := nn.CountParams(merged)
	return merged, total, nil
}

type trainResult struct {
	times, losses    []float64
	trainable, total int64
	lora             map[string]any
}

// trainCase times the reference's training step: forward with labels,
// backward, AdamW step, gradients zeroed. As in train.Trainer, the scope's
// handles on the forward's intermediates are released before backward (the
// autograd graph keeps what backward needs), so activations are freed as
// backward consumes them.
func trainCase(m *llama.Model, o options) (trainResult, error) {
	var r trainResult
	var model models.Model = m
	if o.caseName != "train-full" {
		targets := []string{"q_proj", "v_proj"}
		if o.caseName == "train-lora-all" {
			targets = allLinear
		}
		pm, err := lora.Wrap(m, loraConfig(targets))
		if err != nil {
			return r, err
		}
		model = pm
		r.lora = map[string]any{"r": benchRank, "alpha": benchAlpha, "dropout": 0, "targets": targets}
	}
	r.trainable, r.total = nn.CountParams(model)
	params := nn.TrainableParams(model)
	opt := train.NewAdamW(params, train.AdamWConfig{LR: benchLR})
	defer opt.Free()
	for step := 0; step < o.warmup+o.steps; step++ {
		dt, loss, err := trainStep(model, opt, o, step)
		if err != nil {
			return r, err
		}
		traceRSS(o, step, dt)
		if step >= o.warmup {
			r.times = append(r.times, dt)
			r.losses = append(r.losses, float64(int64(loss*1e4+0.5))/1e4)
		}
	}
	return r, nil
}

func trainStep(model models.Model, opt *train.AdamW, o options, step int) (float64, float64, error) {
	s := tensor.NewScope()
	defer s.Close()
	ids := s.Keep(tokens(s, step, o.batch, o.seq, benchConfig().VocabSize))
	defer ids.Free()
	t0 := time.Now()
	out := model.ForwardT(s, &models.Batch{InputIDs: ids, Labels: ids})
	if err := s.Err(); err != nil {
		return 0, 0, err
	}
	if out.Loss == nil {
		return 0, 0, fmt.Errorf("no loss")
	}
	loss := s.Keep(out.Loss)
	defer loss.Free()
	s.FreeAll()
	s.Backward(loss)
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

type genResult struct {
	batch, prompt, newTokens, runs int
	times                          []float64
	ttft                           float64
}

// generateCase times greedy decoding as the reference's generate-b1/b4:
// run 0 is a warm-up (its first token gives ttft_s), then the timed runs.
func generateCase(m *llama.Model, o options) (genResult, error) {
	g := genResult{batch: 1, prompt: 32, newTokens: 64, runs: 3}
	if o.caseName == "generate-b4" {
		g = genResult{batch: 4, prompt: 256, newTokens: 64, runs: 2}
	}
	cfg := generate.DefaultGenerationConfig()
	cfg.MaxNewTokens = g.newTokens
	cfg.EOSTokenID = nil // the reference decodes all 64 tokens
	vocab := benchConfig().VocabSize
	for run := 0; run <= g.runs; run++ {
		rng := rand.New(rand.NewPCG(uint64(100+run), 0x9e3779b97f4a7c15))
		in := generate.Input{InputIDs: make([][]int64, g.batch)}
		for i := range in.InputIDs {
			row := make([]int64, g.prompt)
			for j := range row {
				row[j] = rng.Int64N(vocab)
			}
			in.InputIDs[i] = row
		}
		first := true
		t0 := time.Now()
		out, err := generate.Stream(context.Background(), m, in, cfg, func(generate.Step) error {
			if first && run == 0 {
				g.ttft = sinceProcessStart()
			}
			first = false
			return nil
		})
		dt := time.Since(t0).Seconds()
		if err != nil {
			return g, err
		}
		if n := len(out.Sequences[0]); len(out.Sequences) != g.batch || n != g.prompt+g.newTokens {
			return g, fmt.Errorf("generated %d rows of %d tokens, want %d of %d", len(out.Sequences), n, g.batch, g.prompt+g.newTokens)
		}
		if run > 0 {
			g.times = append(g.times, dt)
		}
	}
	return g, nil
}

func (g genResult) json(res map[string]any, m *llama.Model, total int64, probeBefore float64) map[string]any {
	tot := 0.0
	for _, t := range g.times {
		tot += t
	}
	res["tokens_per_s"] = float64(g.batch*g.newTokens*g.runs) / tot
	res["peak_rss_mib"] = round1(float64(memstat.PeakRSS()) / (1 << 20))
	res["params"] = total
	res["trainable"] = 0
	res["batch"] = g.batch
	res["prompt_len"] = g.prompt
	res["new_tokens"] = g.newTokens
	res["runs"] = g.runs
	res["sec_per_generate_mean"] = tot / float64(g.runs)
	res["step_seconds"] = roundAll(g.times, 4)
	res["ttft_s"] = round3(g.ttft)
	res["threads"] = threads()
	res["probe_gflops"] = []float64{probeBefore, probeGflops(200 * time.Millisecond)}
	res["note"] = "greedy, KV cache, new tokens/s, time includes the prompt prefill; ttft_s from process start"
	return res
}

// sinceProcessStart is the seconds since this process started, from
// /proc/self/stat's start time and /proc/uptime (clock-tick resolution).
func sinceProcessStart() float64 {
	stat, err1 := os.ReadFile("/proc/self/stat")
	up, err2 := os.ReadFile("/proc/uptime")
	if err1 != nil || err2 != nil {
		return 0
	}
	// fields after the parenthesised command name; starttime is field 22
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 20 {
		return 0
	}
	ticks, err := strconv.ParseFloat(f[19], 64)
	if err != nil {
		return 0
	}
	u, err := strconv.ParseFloat(strings.Fields(string(up))[0], 64)
	if err != nil {
		return 0
	}
	return u - ticks/100 // USER_HZ is 100 on Linux
}

func round3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }
