// Command freeze fine-tunes a LLaMA model the way LLaMA-Factory's freeze
// tuning does — the last N decoder layers (optionally only some of their
// sub-modules) plus extra modules train, the rest stays frozen — on a small
// task (continue a repeating 4-token pattern), prints the loss before and
// after, and writes the result as a full HF checkpoint (LLaMA-Factory's
// output) that loads back to the same loss.
//
//	go run ./examples/freeze [-model DIR] [-layers 1] [-modules mlp] [-extra lm_head] [-steps 30]
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/gopeft/peft/freeze"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
)

func main() {
	model := flag.String("model", "testdata/hf/llama-tiny", "HF LLaMA folder")
	layers := flag.Int("layers", 1, "train the last N layers (negative: the first |N|)")
	modules := flag.String("modules", "all", "comma-separated sub-modules of those layers that train")
	extra := flag.String("extra", "lm_head", "comma-separated modules outside the layers that train")
	steps := flag.Int("steps", 30, "AdamW steps")
	lr := flag.Float64("lr", 0.005, "learning rate")
	flag.Parse()
	if err := run(*model, *layers, *modules, *extra, *steps, *lr); err != nil {
		fmt.Fprintln(os.Stderr, "freeze:", err)
		os.Exit(1)
	}
}

func task() []int64 {
	var ids []int64
	for r := 0; r < 4; r++ {
		for i := 0; i < 16; i++ {
			ids = append(ids, []int64{11, 42, 97, 256}[(i+r)%4])
		}
	}
	return ids
}

func loss(m interface {
	ForwardT(*tensor.Scope, *models.Batch) *models.Output
}, backward bool) (float64, error) {
	s := tensor.NewScope()
	defer s.Close()
	x := s.FromInt64(task(), 4, 16)
	out := m.ForwardT(s, &models.Batch{InputIDs: x, Labels: x})
	if backward {
		s.Backward(out.Loss)
	}
	v := s.Item(out.Loss)
	return v, s.Err()
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func run(dir string, layers int, modules, extra string, steps int, lr float64) error {
	base, err := llama.Load(dir)
	if err != nil {
		return err
	}
	m, err := freeze.Wrap(base, &freeze.Config{TrainableLayers: freeze.Layers(layers),
		TrainableModules: split(modules), ExtraModules: split(extra)})
	if err != nil {
		return err
	}
	m.PrintTrainableParameters()
	before, err := loss(m, false)
	if err != nil {
		return err
	}
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: lr})
	defer opt.Free()
	for i := 0; i < steps; i++ {
		if _, err := loss(m, true); err != nil {
			return err
		}
		if err := opt.Step(); err != nil {
			return err
		}
		if err := nn.ZeroGrad(m); err != nil {
			return err
		}
	}
	after, err := loss(m, false)
	if err != nil {
		return err
	}
	fmt.Printf("loss before %.4f, after %d steps %.4f\n", before, steps, after)

	merged, err := m.MergeAndUnload() // nothing to merge: the trained weights are the model's
	if err != nil {
		return err
	}
	out, err := os.MkdirTemp("", "freeze")
	if err != nil {
		return err
	}
	defer os.RemoveAll(out)
	if err := merged.Save(out); err != nil {
		return err
	}
	reread, err := llama.Load(out)
	if err != nil {
		return err
	}
	l, err := loss(reread, false)
	if err != nil {
		return err
	}
	fmt.Printf("wrote a full HF checkpoint to %s; reloaded loss %.4f\n", out, l)
	return nil
}
