// Command ia3 trains IA3 (PEFT's defaults for the model type) with T-Few's
// objective — language-model loss on the right answer + unlikelihood loss
// on the wrong ones + length-normalized softmax loss over the choices — on
// a small multiple-choice task, and prints the losses and the rank
// classification accuracy before and after, then merges the vectors into
// the weights and checks the merged model ranks the same.
//
//	go run ./examples/ia3 [-model DIR] [-steps 60] [-lr 0.3]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gopeft/peft/ia3"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
)

func main() {
	model := flag.String("model", "testdata/hf/bloom-tiny", "HF BLOOM or LLaMA folder")
	steps := flag.Int("steps", 60, "AdamW steps")
	lr := flag.Float64("lr", 0.3, "learning rate")
	flag.Parse()
	if err := run(*model, *steps, *lr); err != nil {
		fmt.Fprintln(os.Stderr, "ia3:", err)
		os.Exit(1)
	}
}

func load(dir string) (models.CausalLM, error) {
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	var head struct {
		ModelType string `json:"model_type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, err
	}
	if head.ModelType == "bloom" {
		return bloom.Load(dir)
	}
	return llama.Load(dir)
}

// examples: "question" tokens whose answer is one of three choices of
// different lengths, chosen by the question's first token.
func examples() []ia3.MultipleChoice {
	choices := [][]int64{{100}, {200, 201}, {300, 301, 302}}
	var out []ia3.MultipleChoice
	for i, q := range [][]int64{{5, 17, 33}, {6, 40}, {7, 9, 12}, {8, 50}, {9, 60, 61}, {10, 70}} {
		out = append(out, ia3.MultipleChoice{Input: q, Choices: choices, Label: i % 3})
	}
	return out
}

func accuracy(m interface {
	ForwardT(*tensor.Scope, *models.Batch) *models.Output
}) (float64, error) {
	ex := examples()
	pred, _, err := ia3.RankClassify(m, ex, 3)
	if err != nil {
		return 0, err
	}
	right := 0
	for i, p := range pred {
		if p == ex[i].Label {
			right++
		}
	}
	return float64(right) / float64(len(ex)), nil
}

func run(dir string, steps int, lr float64) error {
	base, err := load(dir)
	if err != nil {
		return err
	}
	cfg := &ia3.Config{}
	m, err := ia3.Wrap(base, cfg)
	if err != nil {
		return err
	}
	fmt.Println("IA3 on", cfg.TargetModules.List, "feed-forward", cfg.FeedforwardModules.List)
	m.PrintTrainableParameters()
	batch, err := ia3.NewChoiceBatch(examples(), 3)
	if err != nil {
		return err
	}
	step := func(backward bool) ([4]float64, error) {
		s := tensor.NewScope()
		defer s.Close()
		l := ia3.TFewLoss(s, m, batch)
		if backward {
			s.Backward(l.Total)
		}
		v := [4]float64{s.Item(l.Total), s.Item(l.LM), s.Item(l.Unlikelihood), s.Item(l.LengthNormalized)}
		return v, s.Err()
	}
	report := func(when string) error {
		v, err := step(false)
		if err != nil {
			return err
		}
		acc, err := accuracy(m)
		if err != nil {
			return err
		}
		fmt.Printf("%-6s T-Few loss %.4f (LM %.4f + UL %.4f + LN %.4f), rank-classification accuracy %.2f\n", when, v[0], v[1], v[2], v[3], acc)
		return nil
	}
	if err := report("before"); err != nil {
		return err
	}
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: lr, WeightDecay: 0})
	defer opt.Free()
	for i := 0; i < steps; i++ {
		if _, err := step(true); err != nil {
			return err
		}
		if err := opt.Step(); err != nil {
			return err
		}
		if err := nn.ZeroGrad(m); err != nil {
			return err
		}
	}
	if err := report("after"); err != nil {
		return err
	}
	merged, err := m.MergeAndUnload()
	if err != nil {
		return err
	}
	acc, err := accuracy(merged)
	if err != nil {
		return err
	}
	fmt.Printf("merged into the weights (no extra inference cost): accuracy %.2f\n", acc)
	return nil
}
