// Command adapter trains bottleneck adapters (Houlsby or Pfeiffer
// placement) on a LLaMA or BLOOM model for a small task — continue a
// repeating 4-token pattern — and prints the loss before and after, that
// the adapters cannot be merged, and that the saved adapter loads back to
// the same loss.
//
//	go run ./examples/adapter [-model DIR] [-placement houlsby|pfeiffer] [-steps 40]
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gopeft/peft/adapter"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
)

func main() {
	model := flag.String("model", "testdata/hf/llama-tiny", "HF LLaMA or BLOOM folder")
	placement := flag.String("placement", "houlsby", "houlsby (after attention and FFN, norms trained) or pfeiffer (after the FFN)")
	steps := flag.Int("steps", 40, "AdamW steps")
	lr := flag.Float64("lr", 0.01, "learning rate")
	flag.Parse()
	if err := run(*model, *placement, *steps, *lr); err != nil {
		fmt.Fprintln(os.Stderr, "adapter:", err)
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

func run(dir, placement string, steps int, lr float64) error {
	var cfg *adapter.Config
	switch placement {
	case "houlsby":
		cfg = adapter.Houlsby()
	case "pfeiffer":
		cfg = adapter.Pfeiffer()
	default:
		return fmt.Errorf("-placement %q: want houlsby or pfeiffer", placement)
	}
	base, err := load(dir)
	if err != nil {
		return err
	}
	peft.SetSeed(1) // the adapter's random init: the same numbers every run
	m, err := adapter.Wrap(base, cfg)
	if err != nil {
		return err
	}
	m.PrintTrainableParameters()
	before, err := loss(m, false)
	if err != nil {
		return err
	}
	nn.SetTraining(m, true)
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
	nn.SetTraining(m, false)
	after, err := loss(m, false)
	if err != nil {
		return err
	}
	fmt.Printf("loss before %.4f, after %d steps %.4f\n", before, steps, after)
	if _, err := m.MergeAndUnload(); errors.Is(err, peft.ErrNotMergeable) {
		fmt.Println("merge refused: bottleneck adapters are not mergeable")
	}

	out, err := os.MkdirTemp("", "adapter")
	if err != nil {
		return err
	}
	defer os.RemoveAll(out)
	if err := m.Save(out); err != nil {
		return err
	}
	fresh, err := load(dir)
	if err != nil {
		return err
	}
	loaded, err := peft.Load(fresh, out)
	if err != nil {
		return err
	}
	l, err := loss(loaded, false)
	if err != nil {
		return err
	}
	fmt.Printf("saved to %s and loaded back: loss %.4f\n", out, l)
	return nil
}
