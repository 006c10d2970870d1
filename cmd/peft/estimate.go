package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/gopeft/peft/charts"
	"github.com/gopeft/peft/data"
	"github.com/gopeft/peft/internal/memstat"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/models/gemma"
	"github.com/gopeft/peft/models/gpt2"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/train"
)

var estimateUsage = `usage: peft estimate --model DIR|config.json [--method M[,M...]|all] [--r 8] [--targets a,b]
       [--virtual-tokens 20] [--batch 1] [--seq 512] [--dtype fp32|fp16|bf16] [--optimizer adamw]
       [--mixed-precision] [--checkpointing] [--device cpu|cuda] [--measure] [--chart BASE]

Estimates the peak memory of a training step from config.json alone: framework, weights,
activations, gradients, optimizer states (and, on CPU, what malloc keeps), per method:
` + "  " + strings.Join(peft.Methods, ", ") + `
--measure also trains 3 steps of a randomly initialised model of that config (fp32, CPU,
one method of full/lora) and prints the peak RSS it reached next to the estimate.
--chart draws the estimates as one stacked bar per method into BASE.svg and BASE.png.
`

// estimate is `peft estimate`: peft.EstimateMemory as a table.
func estimate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("estimate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, estimateUsage) }
	model := fs.String("model", "", "model folder or config.json")
	method := fs.String("method", "all", "method(s), comma-separated, or all")
	r := fs.Int("r", 8, "LoRA rank (AdaLoRA: init_r)")
	targets := fs.String("targets", "", "target modules, comma-separated (default: PEFT's for the model type), or all-linear")
	vt := fs.Int("virtual-tokens", 20, "virtual tokens (prompt, prefix)")
	adapterLen := fs.Int("adapter-len", 10, "adaption prompt: prompt tokens per layer")
	adapterLayers := fs.Int("adapter-layers", 0, "adaption prompt: top layers with prompts (0: all)")
	numTasks := fs.Int("num-tasks", 1, "multitask prompt tuning: tasks")
	numRanks := fs.Int("num-ranks", 1, "multitask prompt tuning: rank of each task's matrix")
	batch := fs.Int64("batch", 1, "batch size")
	seq := fs.Int64("seq", 512, "sequence length")
	dtype := fs.String("dtype", "", "float32, bfloat16 or float16 (or fp32, bf16, fp16; default float32, bfloat16 for qlora)")
	optim := fs.String("optimizer", "adamw", "adamw, adam, sgd, momentum, adagrad, rmsprop")
	mixed := fs.Bool("mixed-precision", false, "fp32 master weights and optimizer states for 16-bit trainable weights")
	ckpt := fs.Bool("checkpointing", false, "activation checkpointing")
	device := fs.String("device", "cpu", "cpu or cuda (framework overhead, allocator)")
	measure := fs.Bool("measure", false, "also train 3 steps on CPU and report the measured peak RSS")
	chart := fs.String("chart", "", "also draw the estimates as stacked bars: BASE.svg and BASE.png")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *model == "" {
		fs.Usage()
		return errors.New("estimate: --model is required")
	}
	shape, err := peft.ReadModelShape(*model)
	if err != nil {
		return err
	}
	methods := peft.Methods
	if *method != "all" {
		methods = strings.Split(*method, ",")
	}
	opts := peft.MemoryOptions{R: *r, NumVirtualTokens: *vt, Batch: *batch, Seq: *seq, DType: *dtype,
		Optimizer: *optim, MixedPrecision: *mixed, Checkpointing: *ckpt, Device: *device,
		AdapterLen: *adapterLen, AdapterLayers: *adapterLayers, NumTasks: *numTasks, NumRanks: *numRanks}
	if *targets != "" {
		opts.TargetModules = strings.Split(*targets, ",")
	}
	var rows []*peft.MemoryEstimate
	for _, m := range methods {
		o := opts
		o.Method = strings.TrimSpace(m)
		e, err := peft.EstimateMemory(shape, o)
		if err != nil {
			if *method == "all" { // e.g. BitFit on a model without biases
				continue
			}
			return err
		}
		rows = append(rows, e)
	}
	dt := *dtype
	if dt == "" {
		dt = "fp32 (bf16 for qlora)"
	}
	ck := "off"
	if *ckpt {
		ck = "on"
	}
	fmt.Fprintf(stdout, "model: %s (%s), %s parameters, %d layers, hidden %d, heads %d (kv %d), vocab %d\n",
		shape.Family, shape.ModelType, peft.Commas(shape.Params()), shape.Layers, shape.Hidden, shape.Heads, shape.KVHeads, shape.Vocab)
	fmt.Fprintf(stdout, "job: batch %d x seq %d, %s, %s, activation checkpointing %s, device %s\n\n", *batch, *seq, dt, *optim, ck, *device)
	fmt.Fprint(stdout, peft.Table(rows))
	if *chart != "" {
		files, err := charts.MemoryBars(rows, fmt.Sprintf("%s %s, batch %d x seq %d", shape.ModelType, peft.Commas(shape.Params()), *batch, *seq), *chart)
		if err != nil {
			return fmt.Errorf("estimate: %w", err)
		}
		for _, f := range files {
			fmt.Fprintln(stdout, f)
		}
	}
	if !*measure {
		return nil
	}
	if len(rows) != 1 || (rows[0].Method != "full" && rows[0].Method != "lora") {
		return errors.New("estimate: --measure needs one --method, full or lora")
	}
	if (*dtype != "" && *dtype != "fp32") || *device != "cpu" {
		return errors.New("estimate: --measure runs fp32 on the CPU")
	}
	peak, err := measurePeak(*model, shape, rows[0].Method, opts)
	if err != nil {
		return err
	}
	est := rows[0].Total
	fmt.Fprintf(stdout, "\nmeasured peak RSS over 3 training steps: %.0f MiB (estimate %.0f MiB, %+.1f%%)\n",
		float64(peak)/(1<<20), float64(est)/(1<<20), 100*(float64(est)-float64(peak))/float64(peak))
	return nil
}

// measurePeak trains 3 AdamW steps of a randomly initialised model of the
// config (full fine-tuning or LoRA) on random tokens and returns the
// process's peak RSS.
func measurePeak(path string, shape *peft.ModelShape, method string, o peft.MemoryOptions) (int64, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "config.json")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var m models.CausalLM
	var base interface{ Free() }
	switch shape.Family {
	case "llama":
		cfg, err := llama.ParseConfig(path, raw)
		if err != nil {
			return 0, err
		}
		lm, err := llama.New(cfg, 1)
		if err != nil {
			return 0, err
		}
		m, base = lm, lm
	case "bloom":
		cfg, err := bloom.ParseConfig(path, raw)
		if err != nil {
			return 0, err
		}
		bm, err := bloom.New(cfg, 1)
		if err != nil {
			return 0, err
		}
		m, base = bm, bm
	case "gpt2":
		cfg, err := gpt2.ParseConfig(path, raw)
		if err != nil {
			return 0, err
		}
		gm, err := gpt2.New(cfg, 1)
		if err != nil {
			return 0, err
		}
		m, base = gm, gm
	case "gemma":
		cfg, err := gemma.ParseConfig(path, raw)
		if err != nil {
			return 0, err
		}
		gm, err := gemma.New(cfg, 1)
		if err != nil {
			return 0, err
		}
		m, base = gm, gm
	default:
		return 0, fmt.Errorf("estimate: --measure does not build %s models", shape.Family)
	}
	defer base.Free()
	var model train.Model = m
	if method == "lora" {
		cfg := &lora.Config{R: o.R, LoraAlpha: float64(2 * o.R)}
		if len(o.TargetModules) > 0 {
			cfg.TargetModules = lora.List(o.TargetModules...)
		}
		pm, err := lora.Wrap(m, cfg)
		if err != nil {
			return 0, err
		}
		model = pm
	}
	batch := max(o.Batch, 1)
	var samples []data.Sample
	for i := int64(0); i < 3*batch; i++ {
		ids := make([]int64, o.Seq)
		for j := range ids {
			ids[j] = (i*131 + int64(j)*7919) % shape.Vocab
		}
		samples = append(samples, data.Sample{InputIDs: ids, Labels: ids})
	}
	tr := train.New(model, train.Config{LR: 1e-5, BatchSize: int(batch), MaxSteps: 3, Checkpointing: o.Checkpointing, Progress: io.Discard})
	if err := tr.Fit(&data.Dataset{Samples: samples}, nil); err != nil {
		return 0, err
	}
	return memstat.PeakRSS(), nil
}
