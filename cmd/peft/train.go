package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gopeft/peft/adapter"
	"github.com/gopeft/peft/bitfit"
	"github.com/gopeft/peft/data"
	"github.com/gopeft/peft/dist"
	"github.com/gopeft/peft/freeze"
	"github.com/gopeft/peft/ia3"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prefix"
	"github.com/gopeft/peft/prompt"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/tokenizer"
	"github.com/gopeft/peft/train"
)

// trainConfig is `peft train`'s YAML: LLaMA-Factory's keys (and the HF
// TrainingArguments it passes on) for what the library supports.
type trainConfig struct {
	path string

	ModelNameOrPath string
	Dataset         []string // paths of alpaca or ShareGPT/OpenAI files (JSON or JSONL)
	Template        string
	CutoffLen       int
	FinetuningType  string

	LoraRank      int
	LoraAlpha     float64 // 0: 2 × rank (LLaMA-Factory)
	LoraDropout   float64
	LoraTarget    []string
	UseRSLoRA     bool
	UseDoRA       bool
	FreezeLayers  int
	FreezeModules []string
	FreezeExtra   []string
	VirtualTokens int
	// LoRA+ (LLaMA-Factory's loraplus_lr_ratio, loraplus_lr_embedding)
	LoraPlusLRRatio     float64
	LoraPlusLREmbedding float64

	BatchSize     int
	GradAccum     int
	LR            float64
	Scheduler     string
	WarmupRatio   float64
	WarmupSteps   int
	Epochs        float64
	MaxSteps      int
	LoggingSteps  int
	SaveSteps     int
	OutputDir     string
	Seed          int64
	BF16          bool
	FP16          bool
	Checkpointing bool
	PlotLoss      bool
	WeightDecay   float64
	MaxGradNorm   float64
	Beta1, Beta2  float64
	AdamEps       float64
	DDPTimeout    int    // seconds
	Resume        string // resume_from_checkpoint: a checkpoint folder, or "latest" (true)
}

// defaultTrainConfig has LLaMA-Factory's and HF TrainingArguments' defaults.
func defaultTrainConfig() *trainConfig {
	return &trainConfig{CutoffLen: 2048, FinetuningType: "lora", LoraRank: 8, LoraTarget: []string{"all"},
		FreezeLayers: 2, FreezeModules: []string{"all"}, BatchSize: 8, GradAccum: 1, LR: 5e-5, Scheduler: "linear",
		Epochs: 3, MaxSteps: -1, LoggingSteps: 500, SaveSteps: 500, Seed: 42, MaxGradNorm: 1,
		Beta1: 0.9, Beta2: 0.999, AdamEps: 1e-8, DDPTimeout: 1800}
}

// field is one known YAML key: how its value is read.
type field func(c *trainConfig, v string, n *yaml.Node) error

func str(dst func(*trainConfig) *string) field {
	return func(c *trainConfig, v string, _ *yaml.Node) error { *dst(c) = v; return nil }
}

func intField(dst func(*trainConfig) *int, min int) field {
	return func(c *trainConfig, v string, _ *yaml.Node) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f != math.Trunc(f) {
			return fmt.Errorf("want an integer, got %q", v)
		}
		if int(f) < min {
			return fmt.Errorf("must be at least %d, got %v", min, v)
		}
		*dst(c) = int(f)
		return nil
	}
}

func floatField(dst func(*trainConfig) *float64, lo, hi float64) field {
	return func(c *trainConfig, v string, _ *yaml.Node) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) {
			return fmt.Errorf("want a number, got %q", v)
		}
		if f < lo || f > hi {
			return fmt.Errorf("must be in [%v, %v], got %v", lo, hi, v)
		}
		*dst(c) = f
		return nil
	}
}

func boolField(dst func(*trainConfig) *bool) field {
	return func(c *trainConfig, v string, _ *yaml.Node) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", v)
		}
		*dst(c) = b
		return nil
	}
}

// listField reads a comma-separated string or a YAML list.
func listField(dst func(*trainConfig) *[]string) field {
	return func(c *trainConfig, v string, n *yaml.Node) error {
		var out []string
		if n.Kind == yaml.SequenceNode {
			for _, e := range n.Content {
				if e.Kind != yaml.ScalarNode {
					return errors.New("want a list of strings")
				}
				out = append(out, strings.TrimSpace(e.Value))
			}
		} else {
			for _, s := range strings.Split(v, ",") {
				if s = strings.TrimSpace(s); s != "" {
					out = append(out, s)
				}
			}
		}
		if len(out) == 0 {
			return errors.New("is empty")
		}
		*dst(c) = out
		return nil
	}
}

var trainFields = map[string]field{
	"model_name_or_path":          str(func(c *trainConfig) *string { return &c.ModelNameOrPath }),
	"dataset":                     listField(func(c *trainConfig) *[]string { return &c.Dataset }),
	"template":                    str(func(c *trainConfig) *string { return &c.Template }),
	"cutoff_len":                  intField(func(c *trainConfig) *int { return &c.CutoffLen }, 1),
	"finetuning_type":             str(func(c *trainConfig) *string { return &c.FinetuningType }),
	"lora_rank":                   intField(func(c *trainConfig) *int { return &c.LoraRank }, 1),
	"lora_alpha":                  floatField(func(c *trainConfig) *float64 { return &c.LoraAlpha }, math.SmallestNonzeroFloat64, math.MaxFloat64),
	"lora_dropout":                floatField(func(c *trainConfig) *float64 { return &c.LoraDropout }, 0, 0.999),
	"lora_target":                 listField(func(c *trainConfig) *[]string { return &c.LoraTarget }),
	"use_rslora":                  boolField(func(c *trainConfig) *bool { return &c.UseRSLoRA }),
	"use_dora":                    boolField(func(c *trainConfig) *bool { return &c.UseDoRA }),
	"freeze_trainable_layers":     intField(func(c *trainConfig) *int { return &c.FreezeLayers }, math.MinInt32),
	"freeze_trainable_modules":    listField(func(c *trainConfig) *[]string { return &c.FreezeModules }),
	"freeze_extra_modules":        listField(func(c *trainConfig) *[]string { return &c.FreezeExtra }),
	"num_virtual_tokens":          intField(func(c *trainConfig) *int { return &c.VirtualTokens }, 1),
	"per_device_train_batch_size": intField(func(c *trainConfig) *int { return &c.BatchSize }, 1),
	"gradient_accumulation_steps": intField(func(c *trainConfig) *int { return &c.GradAccum }, 1),
	"learning_rate":               floatField(func(c *trainConfig) *float64 { return &c.LR }, math.SmallestNonzeroFloat64, 10),
	"lr_scheduler_type":           str(func(c *trainConfig) *string { return &c.Scheduler }),
	"warmup_ratio":                floatField(func(c *trainConfig) *float64 { return &c.WarmupRatio }, 0, 1),
	"warmup_steps":                intField(func(c *trainConfig) *int { return &c.WarmupSteps }, 0),
	"num_train_epochs":            floatField(func(c *trainConfig) *float64 { return &c.Epochs }, math.SmallestNonzeroFloat64, 1e6),
	"max_steps":                   intField(func(c *trainConfig) *int { return &c.MaxSteps }, -1),
	"logging_steps":               intField(func(c *trainConfig) *int { return &c.LoggingSteps }, 1),
	"save_steps":                  intField(func(c *trainConfig) *int { return &c.SaveSteps }, 1),
	"output_dir":                  str(func(c *trainConfig) *string { return &c.OutputDir }),
	"seed":                        func(c *trainConfig, v string, _ *yaml.Node) error { return parseSeed(c, v) },
	"bf16":                        boolField(func(c *trainConfig) *bool { return &c.BF16 }),
	"fp16":                        boolField(func(c *trainConfig) *bool { return &c.FP16 }),
	"gradient_checkpointing":      boolField(func(c *trainConfig) *bool { return &c.Checkpointing }),
	"plot_loss":                   boolField(func(c *trainConfig) *bool { return &c.PlotLoss }),
	"weight_decay":                floatField(func(c *trainConfig) *float64 { return &c.WeightDecay }, 0, 1),
	"loraplus_lr_ratio":           floatField(func(c *trainConfig) *float64 { return &c.LoraPlusLRRatio }, math.SmallestNonzeroFloat64, math.MaxFloat64),
	"loraplus_lr_embedding":       floatField(func(c *trainConfig) *float64 { return &c.LoraPlusLREmbedding }, math.SmallestNonzeroFloat64, 10),
	"max_grad_norm":               floatField(func(c *trainConfig) *float64 { return &c.MaxGradNorm }, 0, math.MaxFloat64),
	"adam_beta1":                  floatField(func(c *trainConfig) *float64 { return &c.Beta1 }, 0, 0.999999),
	"adam_beta2":                  floatField(func(c *trainConfig) *float64 { return &c.Beta2 }, 0, 0.999999999),
	"adam_epsilon":                floatField(func(c *trainConfig) *float64 { return &c.AdamEps }, 0, 1),
	"ddp_timeout":                 intField(func(c *trainConfig) *int { return &c.DDPTimeout }, 1),
	"resume_from_checkpoint": func(c *trainConfig, v string, _ *yaml.Node) error {
		switch b, err := strconv.ParseBool(v); {
		case err != nil:
			c.Resume = v
		case b:
			c.Resume = "latest"
		default:
			c.Resume = ""
		}
		return nil
	},
	// LLaMA-Factory keys that must hold what this command does
	"stage":    func(_ *trainConfig, v string, _ *yaml.Node) error { return must(v, "sft") },
	"do_train": func(_ *trainConfig, v string, _ *yaml.Node) error { return must(strings.ToLower(v), "true") },
}

func parseSeed(c *trainConfig, v string) error {
	s, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return fmt.Errorf("want an integer, got %q", v)
	}
	c.Seed = s
	return nil
}

func must(v, want string) error {
	if v != want {
		return fmt.Errorf("peft train does %s only, got %q", want, v)
	}
	return nil
}

// parseTrainConfig reads the YAML at path: known keys are checked (an
// error names the file, line and key), unknown ones are returned sorted.
func parseTrainConfig(path string, b []byte) (*trainConfig, []string, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	c := defaultTrainConfig()
	c.path = path
	if len(doc.Content) == 0 {
		return nil, nil, fmt.Errorf("%s: empty config", path)
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("%s: want a mapping of keys to values", path)
	}
	var unknown []string
	seen := map[string]bool{}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		f, ok := trainFields[k.Value]
		if !ok {
			unknown = append(unknown, k.Value)
			continue
		}
		if seen[k.Value] {
			return nil, nil, fmt.Errorf("%s:%d: %s: given twice", path, k.Line, k.Value)
		}
		seen[k.Value] = true
		if v.Kind != yaml.ScalarNode && v.Kind != yaml.SequenceNode {
			return nil, nil, fmt.Errorf("%s:%d: %s: want a value, got a mapping", path, v.Line, k.Value)
		}
		if v.Kind == yaml.ScalarNode && (v.Tag == "!!null" || v.Value == "") {
			continue // null: the default
		}
		if err := f(c, strings.TrimSpace(v.Value), v); err != nil {
			return nil, nil, fmt.Errorf("%s:%d: %s: %w", path, v.Line, k.Value, err)
		}
	}
	sort.Strings(unknown)
	return c, unknown, c.check(seen)
}

// check validates what needs more than one key.
func (c *trainConfig) check(seen map[string]bool) error {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("%s: %s: %s", c.path, key, fmt.Sprintf(format, args...))
	}
	switch {
	case c.ModelNameOrPath == "":
		return bad("model_name_or_path", "required (a local HF model folder)")
	case len(c.Dataset) == 0:
		return bad("dataset", "required (paths of alpaca or ShareGPT/OpenAI JSON/JSONL files)")
	case c.OutputDir == "":
		return bad("output_dir", "required")
	case c.BF16 && c.FP16:
		return bad("fp16", "bf16 and fp16 are both true")
	case c.MaxSteps == 0:
		return bad("max_steps", "must be positive, or -1 for num_train_epochs")
	}
	if _, err := train.LRAt(c.scheduler(), 1, 0, 0, 1); err != nil {
		return bad("lr_scheduler_type", "%q is not supported (linear, cosine, constant, constant_with_warmup)", c.Scheduler)
	}
	if _, err := c.method(); err != nil {
		return err
	}
	if _, err := c.template(); err != nil {
		return err
	}
	if !seen["lora_alpha"] {
		c.LoraAlpha = 2 * float64(c.LoraRank)
	}
	if c.LoraPlusLRRatio > 0 && c.FinetuningType != "lora" {
		return bad("loraplus_lr_ratio", "LoRA+ needs finetuning_type lora, not %q", c.FinetuningType)
	}
	if seen["loraplus_lr_embedding"] && c.LoraPlusLRRatio == 0 {
		return bad("loraplus_lr_embedding", "is set without loraplus_lr_ratio")
	}
	return nil
}

func (c *trainConfig) scheduler() string {
	if c.Scheduler == "constant_with_warmup" {
		return train.Constant
	}
	return c.Scheduler
}

// methods are finetuning_type's values: LLaMA-Factory's names, then the
// library's other methods by their PEFT names.
var methods = []string{"lora", "freeze", "full", "ia3", "prompt_tuning", "p_tuning", "prefix_tuning", "bottleneck", "bitfit"}

// method is the PEFT config of finetuning_type (nil for full fine-tuning).
func (c *trainConfig) method() (peft.Config, error) {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("%s: %s: %s", c.path, key, fmt.Sprintf(format, args...))
	}
	prompts := peft.PromptLearningConfig{NumVirtualTokens: c.VirtualTokens, Task: peft.CausalLM}
	needTokens := func(name string) error {
		if c.VirtualTokens <= 0 {
			return bad("num_virtual_tokens", "finetuning_type %s needs num_virtual_tokens", name)
		}
		return nil
	}
	switch t := strings.ToLower(c.FinetuningType); t {
	case "lora":
		targets := lora.List(c.LoraTarget...)
		if len(c.LoraTarget) == 1 && (c.LoraTarget[0] == "all" || c.LoraTarget[0] == "all-linear") {
			targets = lora.Regex("all-linear")
		}
		return &lora.Config{R: c.LoraRank, LoraAlpha: c.LoraAlpha, LoraDropout: c.LoraDropout, TargetModules: targets,
			UseRSLoRA: c.UseRSLoRA, UseDoRA: c.UseDoRA, Task: peft.CausalLM}, nil
	case "freeze":
		return &freeze.Config{TrainableLayers: freeze.Layers(c.FreezeLayers), TrainableModules: c.FreezeModules,
			ExtraModules: c.FreezeExtra, Task: peft.CausalLM}, nil
	case "full":
		return nil, nil
	case "ia3":
		return &ia3.Config{Task: peft.CausalLM}, nil
	case "prompt_tuning":
		return &prompt.TuningConfig{PromptLearningConfig: prompts}, needTokens(t)
	case "p_tuning":
		return &prompt.EncoderConfig{PromptLearningConfig: prompts}, needTokens(t)
	case "prefix_tuning":
		return &prefix.Config{PromptLearningConfig: prompts}, needTokens(t)
	case "bottleneck", "adapter":
		return adapter.Houlsby(), nil
	case "bitfit":
		return &bitfit.Config{Task: peft.CausalLM}, nil
	}
	return nil, bad("finetuning_type", "%q is not supported (%s)", c.FinetuningType, strings.Join(methods, ", "))
}

// template maps LLaMA-Factory's template names onto data's.
func (c *trainConfig) template() (data.Template, error) {
	name := c.Template
	switch name {
	case "", "empty":
		name = data.TemplateRaw
	}
	t, err := data.TemplateByName(name)
	if err != nil {
		return nil, fmt.Errorf("%s: template: %q is not supported (alpaca, chatml, qwen, llama3, llama2, empty)", c.path, c.Template)
	}
	return t, nil
}

func (c *trainConfig) dtype() string {
	switch {
	case c.BF16:
		return "bfloat16"
	case c.FP16:
		return "float16"
	}
	return "float32"
}

// readDataset reads every dataset file (the layout of each is told by its
// first record) into conversations.
func readDataset(paths []string) ([]data.Conversation, error) {
	var all []data.Conversation
	for _, p := range paths {
		chat, err := isConversations(p)
		if err != nil {
			return nil, err
		}
		if chat {
			cs, err := data.ReadConversations(p)
			if err != nil {
				return nil, err
			}
			all = append(all, cs...)
			continue
		}
		recs, err := data.ReadInstructions(p)
		if err != nil {
			return nil, err
		}
		for i := range recs {
			all = append(all, recs[i].Conversation())
		}
	}
	return all, nil
}

// isConversations reports whether the file's first record has
// "conversations" (ShareGPT) or "messages" (OpenAI).
func isConversations(path string) (bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("dataset: %w", err)
	}
	t := bytes.TrimSpace(b)
	var first json.RawMessage
	if len(t) > 0 && t[0] == '[' {
		var arr []json.RawMessage
		if err := json.Unmarshal(t, &arr); err != nil {
			return false, fmt.Errorf("dataset: %s: %w", path, err)
		}
		if len(arr) > 0 {
			first = arr[0]
		}
	} else {
		sc := bufio.NewScanner(bytes.NewReader(t))
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		for sc.Scan() {
			if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 {
				first = append(json.RawMessage(nil), line...)
				break
			}
		}
	}
	if first == nil {
		return false, fmt.Errorf("dataset: %s has no records", path)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(first, &keys); err != nil {
		return false, fmt.Errorf("dataset: %s: the first record is not a JSON object: %w", path, err)
	}
	_, c := keys["conversations"]
	_, m := keys["messages"]
	return c || m, nil
}

const trainUsage = `usage: peft train [--nproc N] CONFIG.yaml

Fine-tunes a model as LLaMA-Factory's YAML describes (model_name_or_path, dataset, template, cutoff_len,
finetuning_type, lora_*, loraplus_lr_ratio, loraplus_lr_embedding, per_device_train_batch_size, gradient_accumulation_steps, learning_rate,
lr_scheduler_type, warmup_ratio, num_train_epochs, max_steps, logging_steps, save_steps, output_dir, seed,
bf16, gradient_checkpointing, ...) and writes the adapter (or model) and metrics.jsonl to output_dir.
--nproc N trains data-parallel in N processes on this machine; under torchrun (or RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT set by hand, on several machines) each process is one rank.
`

// trainCmd is `peft train`.
func trainCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, trainUsage) }
	nproc := fs.Int("nproc", 1, "data-parallel processes to start on this machine")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("train: want one CONFIG.yaml")
	}
	path := fs.Arg(0)
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	cfg, unknown, err := parseTrainConfig(path, b)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	env, err := dist.ReadEnv()
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if *nproc < 1 {
		return fmt.Errorf("train: --nproc %d: want at least 1", *nproc)
	}
	if *nproc > 1 {
		if env.Distributed() {
			return fmt.Errorf("train: --nproc %d, but WORLD_SIZE=%d is set: a launcher already started this process", *nproc, env.WorldSize)
		}
		return launch(*nproc, path, stdout, stderr)
	}
	if len(unknown) > 0 && env.Rank == 0 {
		fmt.Fprintf(stderr, "peft train: warning: %s: ignoring keys this library does not support: %s\n", path, strings.Join(unknown, ", "))
	}
	return runTraining(cfg, env, stderr)
}

// runTraining is one process's run (one rank of a distributed one).
func runTraining(cfg *trainConfig, env dist.Env, stderr io.Writer) error {
	device := "cpu"
	if tensor.CUDADeviceCount() > 0 {
		device = fmt.Sprintf("cuda:%d", env.LocalRank)
	}
	var group *dist.Group
	if env.Distributed() {
		dev, _ := tensor.ParseDevice(device)
		g, err := dist.Default(dist.Options{Device: dev, Timeout: time.Duration(cfg.DDPTimeout) * time.Second})
		if err != nil {
			return fmt.Errorf("train: %w", err)
		}
		group = g
	}
	tok, err := tokenizer.Load(cfg.ModelNameOrPath)
	if err != nil {
		return fmt.Errorf("train: model_name_or_path: %w", err)
	}
	convs, err := readDataset(cfg.Dataset)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	tmpl, _ := cfg.template()
	ds, err := data.Conversations(data.FromTokenizer(tok), convs, data.Options{Template: tmpl, MaxLength: cfg.CutoffLen})
	if err != nil {
		return fmt.Errorf("train: dataset: %w", err)
	}
	base, err := loadModel(cfg.ModelNameOrPath, models.WithDType(cfg.dtype()), models.WithDevice(device))
	if err != nil {
		return fmt.Errorf("train: model_name_or_path: %w", err)
	}
	defer nn.FreeParams(base)
	var model train.Model = base
	pcfg, _ := cfg.method()
	if pcfg != nil {
		peft.SetSeed(cfg.Seed) // the adapter's initialisation (rank 0's is broadcast)
		pm, err := peft.New(base, pcfg)
		if err != nil {
			return fmt.Errorf("train: finetuning_type %s: %w", cfg.FinetuningType, err)
		}
		model = pm
	}
	if mod, ok := model.(nn.Module); ok && env.Rank == 0 {
		fmt.Fprintf(stderr, "peft train: %s on %s, %d samples, %d process(es); %s\n", cfg.FinetuningType,
			cfg.ModelNameOrPath, ds.Len(), env.WorldSize, peft.TrainableSummary(mod))
	}
	tc := train.Config{LR: cfg.LR, WeightDecay: cfg.WeightDecay, Beta1: cfg.Beta1, Beta2: cfg.Beta2, Eps: cfg.AdamEps,
		Schedule: cfg.scheduler(), WarmupSteps: cfg.WarmupSteps, WarmupRatio: cfg.WarmupRatio, MaxGradNorm: cfg.MaxGradNorm,
		BatchSize: cfg.BatchSize, GradAccum: cfg.GradAccum, Seed: cfg.Seed, Checkpointing: cfg.Checkpointing,
		LogSteps: cfg.LoggingSteps, SaveSteps: cfg.SaveSteps, OutputDir: cfg.OutputDir, ResumeFrom: cfg.Resume, Progress: stderr, Dist: group,
		PlotCurves: cfg.PlotLoss, LoraPlusLRRatio: cfg.LoraPlusLRRatio, LoraPlusLREmbedding: cfg.LoraPlusLREmbedding}
	if cfg.MaxSteps > 0 {
		tc.MaxSteps = cfg.MaxSteps
	} else if cfg.Epochs == math.Trunc(cfg.Epochs) {
		tc.Epochs = int(cfg.Epochs)
	} else { // a fraction of an epoch: HF's ceil(epochs × steps per epoch)
		micro := (ds.Len() + cfg.BatchSize*env.WorldSize - 1) / (cfg.BatchSize * env.WorldSize)
		tc.MaxSteps = int(math.Ceil(cfg.Epochs * float64((micro+cfg.GradAccum-1)/cfg.GradAccum)))
	}
	if err := train.New(model, tc).Fit(ds, nil); err != nil {
		return err
	}
	if env.Rank != 0 {
		return nil
	}
	sv, ok := model.(interface{ Save(dir string) error })
	if !ok {
		return fmt.Errorf("train: the model cannot be saved")
	}
	if err := sv.Save(cfg.OutputDir); err != nil {
		return fmt.Errorf("train: output_dir: %w", err)
	}
	fmt.Fprintf(stderr, "peft train: wrote %s and %s\n", cfg.OutputDir, filepath.Join(cfg.OutputDir, train.MetricsFile))
	return nil
}

// selfExe is the program `peft train --nproc` starts once per rank (this
// one; tests point it at their own binary).
var selfExe = os.Executable

// launch is `peft train --nproc N`: it starts N copies of this program as
// the ranks of one machine, with torchrun's environment (RANK, LOCAL_RANK,
// WORLD_SIZE, MASTER_ADDR=127.0.0.1, a free MASTER_PORT, and
// OMP_NUM_THREADS = cores / N unless set), passes their output through
// (ranks > 0 prefixed), and, as torchrun does, stops the others when one
// fails.
func launch(n int, cfgPath string, stdout, stderr io.Writer) error {
	exe, err := selfExe()
	if err != nil {
		return fmt.Errorf("train: --nproc: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return fmt.Errorf("train: --nproc: %w", err)
	}
	threads := os.Getenv("OMP_NUM_THREADS")
	if threads == "" {
		threads = strconv.Itoa(max(1, runtime.NumCPU()/n))
	}
	type result struct {
		rank int
		err  error
	}
	done := make(chan result, n)
	cmds := make([]*exec.Cmd, n)
	var outMu sync.Mutex
	for r := 0; r < n; r++ {
		cmd := exec.Command(exe, "train", cfgPath)
		cmd.Env = append(os.Environ(), "RANK="+strconv.Itoa(r), "LOCAL_RANK="+strconv.Itoa(r), "WORLD_SIZE="+strconv.Itoa(n),
			"LOCAL_WORLD_SIZE="+strconv.Itoa(n), "MASTER_ADDR=127.0.0.1", "MASTER_PORT="+strconv.Itoa(port), "OMP_NUM_THREADS="+threads)
		if r == 0 {
			cmd.Stdout, cmd.Stderr = &lockedWriter{w: stdout, mu: &outMu}, &lockedWriter{w: stderr, mu: &outMu}
		} else {
			p := fmt.Sprintf("[rank %d] ", r)
			cmd.Stdout, cmd.Stderr = &prefixWriter{w: stdout, prefix: p, mu: &outMu}, &prefixWriter{w: stderr, prefix: p, mu: &outMu}
		}
		if err := cmd.Start(); err != nil {
			for _, c := range cmds[:r] {
				c.Process.Signal(syscall.SIGTERM)
				c.Wait()
			}
			return fmt.Errorf("train: --nproc: start rank %d: %w", r, err)
		}
		cmds[r] = cmd
		go func(r int) { done <- result{r, cmds[r].Wait()} }(r)
	}
	var first error
	stopped := false
	for i := 0; i < n; i++ {
		res := <-done
		if res.err == nil || first != nil {
			continue
		}
		first = fmt.Errorf("train: rank %d of %d failed: %v", res.rank, n, res.err)
		if !stopped { // the others fail on their own within moments (a peer died); stop what lingers
			stopped = true
			time.AfterFunc(10*time.Second, func() {
				for _, c := range cmds {
					if c.ProcessState == nil {
						c.Process.Signal(syscall.SIGTERM)
					}
				}
			})
		}
	}
	return first
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lockedWriter serializes writes of several processes to one writer.
type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prefixWriter writes each line with a prefix (a rank's output).
type prefixWriter struct {
	w      io.Writer
	prefix string
	mu     *sync.Mutex
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		if _, err := fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i]); err != nil {
			return 0, err
		}
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}
