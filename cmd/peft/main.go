// Command peft is the library's command-line tool.
//
//	peft logits --model DIR [--adapter DIR]... [--merge] --input IN.safetensors --out OUT.safetensors
//
// logits runs a HF checkpoint folder on IN's `input_ids` (int64 [B,S]) and
// optional `attention_mask` (int64 [B,S]) and writes `logits` (float32
// [B,S,V]) to OUT, atomically.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/gopeft/peft/internal/tensor"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
)

const usage = `usage: peft <command> [flags]

commands:
  logits   --model DIR [--adapter DIR]... [--merge] --input IN.safetensors --out OUT.safetensors
           run a HF model on input_ids (+ attention_mask) and write its logits
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "peft:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "logits":
		return logits(args[1:], stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
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
	input := fs.String("input", "", "safetensors file with input_ids and optional attention_mask")
	out := fs.String("out", "", "safetensors file to write logits to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *modelDir == "":
		return errors.New("logits: --model is required")
	case *input == "":
		return errors.New("logits: --input is required")
	case *out == "":
		return errors.New("logits: --out is required")
	case len(adapters) > 0 || *merge:
		return errors.New("logits: --adapter/--merge need a PEFT method package, which this build does not have yet")
	}
	m, err := loadModel(*modelDir)
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
	if b.AttentionMask != nil && !equalShape(b.AttentionMask.Shape(), b.InputIDs.Shape()) {
		return fmt.Errorf("%s: attention_mask has shape %v, input_ids %v", *input, b.AttentionMask.Shape(), b.InputIDs.Shape())
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

func setPath(set *safetensors.Set) string {
	if fs := set.Files(); len(fs) > 0 {
		return fs[0].Path()
	}
	return "input"
}

// loadModel picks the model family from config.json's model_type.
func loadModel(dir string) (models.CausalLM, error) {
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
	case "llama", "qwen2", "mistral":
		return llama.Load(dir)
	}
	return nil, fmt.Errorf("%s: model_type %q is not supported (supported: llama, qwen2, mistral)", path, head.ModelType)
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
