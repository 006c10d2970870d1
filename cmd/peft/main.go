// Command peft is the library's command-line tool.
//
//	peft logits --model DIR [--adapter DIR]... [--merge] [--dtype auto|float32|bfloat16|float16] [--device cpu|cuda[:N]] --input IN.safetensors --out OUT.safetensors
//	peft merge --model DIR --adapter DIR [--adapter DIR]... --out DIR
//	peft inspect DIR
//	peft estimate --model DIR|config.json --method lora --r 8 --batch 4 --seq 512 --dtype bf16 [--checkpointing]
//	peft serve --model DIR [--adapter NAME=DIR]... [--addr HOST:PORT] [--max-batch N] [--max-queue N] [--max-adapters N] [--admin-token T]
//
// logits runs a HF checkpoint folder, with PEFT adapters when given (the
// first is "default" and active; --merge folds it into the weights first),
// on IN's `input_ids` (int64 [B,S]), optional `attention_mask` (int64
// [B,S]), optional `position_ids` (int64 [B,S] or [1,S]) and optional
// `task_ids` (int64 [B], multitask prompt tuning's per-row tasks) and writes `logits` (float32 [B,S,V]) to OUT, atomically.
// merge writes a HF checkpoint with the adapter merged in. inspect prints
// an adapter's config and its trainable-parameter line (with --model) or a
// model's parameter count.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	_ "github.com/gopeft/peft/adapter" // registers BOTTLENECK
	_ "github.com/gopeft/peft/auto"    // registers every method of the library (LOHA, LOKR, …)
	_ "github.com/gopeft/peft/bitfit"  // registers BITFIT
	_ "github.com/gopeft/peft/freeze"  // registers FREEZE
	_ "github.com/gopeft/peft/ia3"     // registers IA3
	_ "github.com/gopeft/peft/lora"    // registers LORA with peft.Load
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bert"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/models/gemma"
	"github.com/gopeft/peft/models/gpt2"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	_ "github.com/gopeft/peft/prefix" // registers PREFIX_TUNING
	_ "github.com/gopeft/peft/prompt" // registers PROMPT_TUNING and P_TUNING
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"

	_ "github.com/gopeft/peft/adaptionprompt" // registers ADAPTION_PROMPT
)

const usage = `usage: peft <command> [flags]

commands:
  logits   --model DIR [--adapter DIR]... [--merge] --input IN.safetensors --out OUT.safetensors
           run a HF model (with adapters) on input_ids (+ attention_mask) and write its logits
  merge    --model DIR --adapter DIR [--adapter DIR]... --out DIR
           merge the first adapter into the model and write a HF checkpoint
  inspect  [--model DIR] DIR
           print an adapter's config and trainable-parameter line, or a model's size
  generate --model DIR [--adapter DIR]... [--merge] --input IN.safetensors --max-new-tokens N [--num-beams K]
           [--num-return-sequences K] [--do-sample --temperature T --top-k K --top-p P --repetition-penalty R
           --seed S] [--scores] --out OUT.safetensors
           continue left-padded input_ids (+ attention_mask) as HF generate does; write sequences (and scores)
  tokenize --tokenizer PATH/tokenizer.json [--add-special-tokens]
           read one JSON string per line on stdin, write one JSON array of token ids per line
  every command that loads a model takes --dtype auto|float32|bfloat16|float16 (default auto: config.json's
  torch_dtype) and --device cpu|cuda|cuda:N (default cpu)
  estimate --model DIR|config.json [--method lora|all] [--r 8] [--batch 4] [--seq 512] [--dtype bf16]
           [--optimizer adamw] [--checkpointing] [--measure]
           [--chart BASE]
           the peak memory of a training step by component (weights, activations, gradients, optimizer);
           --chart also draws it as stacked bars per method (BASE.svg, BASE.png)
  serve    --model DIR [--adapter NAME=DIR]... [--addr HOST:PORT] [--max-batch N] [--max-queue N]
           [--max-adapters N] [--admin-token T] [--chat-template NAME]
           an OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, /v1/models,
           /v1/adapters, /health, /metrics) batching requests of every adapter over one base model
  plot     [--out BASE] [--title T] RUN_DIR|metrics.jsonl
           draw a training run's loss, eval loss and learning rate (BASE.svg, BASE.png)
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, errorLine(err))
		os.Exit(1)
	}
}

// errorLine is the line printed for a failed command: "peft: " once, also
// for the library's errors, which already start with it.
func errorLine(err error) string {
	return "peft: " + strings.TrimPrefix(err.Error(), "peft: ")
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "logits":
		return logits(args[1:], stderr)
	case "merge":
		return merge(args[1:], stdout, stderr)
	case "inspect":
		return inspect(args[1:], stdout, stderr)
	case "generate":
		return generateCmd(args[1:], stderr)
	case "tokenize":
		return tokenize(args[1:], stdout, os.Stdin, stderr)
	case "estimate":
		return estimate(args[1:], stdout, stderr)
	case "plot":
		return plotCmd(args[1:], stdout, stderr)
	case "train":
		return trainCmd(args[1:], stdout, stderr)
	case "serve":
		return serveCmd(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// loadFlags are --dtype and --device, the model-loading options every
// command that loads a model takes (models.WithDType / WithDevice).
type loadFlags struct{ dtype, device *string }

func addLoadFlags(fs *flag.FlagSet) loadFlags {
	return loadFlags{
		dtype:  fs.String("dtype", "auto", "weights' dtype: auto (config.json's torch_dtype), float32, bfloat16 or float16"),
		device: fs.String("device", "cpu", "cpu, cuda or cuda:N (needs a CUDA libtorch)"),
	}
}

// options checks the flags and returns the load options they select.
func (l loadFlags) options() ([]models.LoadOption, error) {
	if _, err := models.ParseDType(*l.dtype); err != nil {
		return nil, fmt.Errorf("--dtype: %w", err)
	}
	if _, err := tensor.ParseDevice(*l.device); err != nil {
		return nil, fmt.Errorf("--device: %w", err)
	}
	return []models.LoadOption{models.WithDType(*l.dtype), models.WithDevice(*l.device)}, nil
}

type multi []string

func (m *multi) String() string     { return fmt.Sprint(*m) }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func logits(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("logits", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelDir := fs.String("model", "", "HF model folder (config.json + safetensors)")
	var adapters multi
	fs.Var(&adapters, "adapter", "PEFT adapter folder (repeatable)")
	merge := fs.Bool("merge", false, "merge the adapters into the base weights before running")
	input := fs.String("input", "", "safetensors file with input_ids and optional attention_mask, position_ids and task_ids")
	out := fs.String("out", "", "safetensors file to write logits to")
	lf := addLoadFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	lopts, err := lf.options()
	if err != nil {
		return fmt.Errorf("logits: %w", err)
	}
	switch {
	case *modelDir == "":
		return errors.New("logits: --model is required")
	case *input == "":
		return errors.New("logits: --input is required")
	case *out == "":
		return errors.New("logits: --out is required")
	case *merge && len(adapters) == 0:
		return errors.New("logits: --merge needs an --adapter")
	}
	m, err := loadWithAdapters(*modelDir, adapters, *merge, lopts...)
	if err != nil {
		return err
	}
	in, err := safetensors.OpenFiles(*input)
	if err != nil {
		return err
	}
	defer in.Close()

	s := tensor.NoGradScope()
	defer s.Close()
	b := &models.Batch{}
	if b.InputIDs, err = readIDs(s, in, "input_ids", true); err != nil {
		return err
	}
	if b.AttentionMask, err = readIDs(s, in, "attention_mask", false); err != nil {
		return err
	}
	if b.AttentionMask != nil && !nn.SameShape(b.AttentionMask.Shape(), b.InputIDs.Shape()) {
		return fmt.Errorf("%s: attention_mask has shape %v, input_ids %v", *input, b.AttentionMask.Shape(), b.InputIDs.Shape())
	}
	if b.PositionIDs, err = readIDs(s, in, "position_ids", false); err != nil {
		return err
	}
	if p := b.PositionIDs; p != nil {
		ps, is := p.Shape(), b.InputIDs.Shape()
		if ps[1] != is[1] || (ps[0] != is[0] && ps[0] != 1) {
			return fmt.Errorf("%s: position_ids has shape %v, want [%d, %d] or [1, %d] (input_ids %v)", *input, ps, is[0], is[1], is[1], is)
		}
	}
	if b.TaskIDs, err = readTaskIDs(s, in, b.InputIDs.Size(0)); err != nil {
		return err
	}
	res := m.ForwardT(s, b)
	if err := s.Err(); err != nil {
		return fmt.Errorf("logits: %w", err)
	}
	data := s.Bytes(res.Logits)
	if err := s.Err(); err != nil {
		return err
	}
	return safetensors.Write(*out, []safetensors.Tensor{{
		Name: "logits", DType: safetensors.F32, Shape: res.Logits.Shape(), Data: data,
	}}, nil)
}

// runner is what logits needs of a model: the base or a PEFT model.
type runner interface {
	ForwardT(s *tensor.Scope, b *models.Batch) *models.Output
}

// loadWithAdapters loads the base model and the adapters (the first is
// "default" and active); with merge it returns the merged plain model.
func loadWithAdapters(modelDir string, adapters []string, merge bool, lopts ...models.LoadOption) (runner, error) {
	base, err := loadModel(modelDir, lopts...)
	if err != nil {
		return nil, err
	}
	if len(adapters) == 0 {
		return base, nil
	}
	pm, err := peft.Load(base, adapters[0])
	if err != nil {
		return nil, err
	}
	for i, dir := range adapters[1:] {
		if err := pm.LoadAdapter(dir, fmt.Sprintf("adapter%d", i+1)); err != nil {
			return nil, err
		}
	}
	if merge {
		return pm.MergeAndUnload()
	}
	return pm, nil
}

func merge(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("merge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelDir := fs.String("model", "", "HF model folder")
	var adapters multi
	fs.Var(&adapters, "adapter", "PEFT adapter folder (the first is merged)")
	out := fs.String("out", "", "folder to write the merged HF checkpoint to")
	lf := addLoadFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *modelDir == "" || len(adapters) == 0 || *out == "" {
		return errors.New("merge: --model, --adapter and --out are required")
	}
	lopts, err := lf.options()
	if err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	m, err := loadWithAdapters(*modelDir, adapters[:1], true, lopts...)
	if err != nil {
		return err
	}
	if err := m.(models.CausalLM).Save(*out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "merged %s into %s: wrote %s\n", adapters[0], *modelDir, *out)
	return nil
}

func inspect(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelDir := fs.String("model", "", "base model folder, to count trainable parameters")
	lf := addLoadFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	lopts, err := lf.options()
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	if fs.NArg() != 1 {
		return errors.New("inspect: give one adapter or model folder")
	}
	dir := fs.Arg(0)
	if _, err := os.Stat(filepath.Join(dir, peft.ConfigName)); err != nil {
		m, err := loadModel(dir, lopts...) // a model folder
		if err != nil {
			return err
		}
		_, total := nn.CountParams(m)
		fmt.Fprintf(stdout, "%s: %s parameters\n%s\n", dir, peft.Commas(total), nn.Format(m))
		return nil
	}
	cfg, err := peft.ReadConfig(dir)
	if err != nil {
		return err
	}
	js, err := cfg.MarshalJSON()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %s adapter, task %s\n%s\n", dir, cfg.PeftType(), cfg.TaskType(), js)
	if *modelDir != "" {
		base, err := loadModel(*modelDir, lopts...)
		if err != nil {
			return err
		}
		pm, err := peft.Load(base, dir, peft.LoadOptions{Trainable: true})
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, peft.TrainableSummary(pm))
	}
	return nil
}

// readIDs reads an int64 [B,S] tensor by key (required or optional).
func readIDs(s *tensor.Scope, set *safetensors.Set, key string, required bool) (*tensor.T, error) {
	info, f, ok := set.Info(key)
	if !ok {
		if required {
			return nil, fmt.Errorf("%s: no tensor %q", setPath(set), key)
		}
		return nil, nil
	}
	if info.DType != safetensors.I64 || len(info.Shape) != 2 {
		return nil, fmt.Errorf("%s: tensor %q must be I64 [batch, seq], got %s %v", f.Path(), key, info.DType, info.Shape)
	}
	return nn.TensorFromFile(s, set, key, 0)
}

// readTaskIDs reads the optional task_ids (int64 [B], one task per row:
// PEFT's forward(..., task_ids=...) for multitask prompt tuning).
func readTaskIDs(s *tensor.Scope, set *safetensors.Set, rows int64) (*tensor.T, error) {
	info, f, ok := set.Info("task_ids")
	if !ok {
		return nil, nil
	}
	if info.DType != safetensors.I64 || len(info.Shape) != 1 || info.Shape[0] != rows {
		return nil, fmt.Errorf("%s: tensor \"task_ids\" must be I64 [%d] (one task per row), got %s %v", f.Path(), rows, info.DType, info.Shape)
	}
	return nn.TensorFromFile(s, set, "task_ids", 0)
}

func setPath(set *safetensors.Set) string {
	if fs := set.Files(); len(fs) > 0 {
		return fs[0].Path()
	}
	return "input"
}

// loadModel picks the model family from config.json's model_type.
func loadModel(dir string, lopts ...models.LoadOption) (models.CausalLM, error) {
	path := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var head struct {
		ModelType string `json:"model_type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch head.ModelType {
	case "llama", "qwen2", "qwen3", "mistral", "phi3":
		return llama.Load(dir, lopts...)
	case "bloom":
		return bloom.Load(dir, lopts...)
	case "gpt2":
		return gpt2.Load(dir, lopts...)
	case "bert": // the class config.json's architectures names; SEQ_CLS logits are [B, num_labels]
		return bert.Load(dir, lopts...)
	case "gemma2", "gemma3_text":
		return gemma.Load(dir, lopts...)
	}
	return nil, fmt.Errorf("%s: model_type %q is not supported (supported: llama, qwen2, qwen3, mistral, phi3, bloom, gpt2, bert, gemma2, gemma3_text)", path, head.ModelType)
}
