// Command consumer is a program in its own Go module that uses gopeft the
// way any other module does (see README.md here): it loads a small HF
// checkpoint, wraps it with LoRA, trains a few steps, saves the adapter in
// PEFT's format, loads it back onto a fresh base and checks that the
// outputs are identical. `make test` builds and runs it from a copy made
// outside the repository, with README's steps.
package main

import (
	"flag"
	"fmt"
	"math"
	"os"

	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
)

func main() {
	model := flag.String("model", "../../testdata/hf/llama-tiny", "a HF checkpoint folder (config.json + model.safetensors)")
	out := flag.String("out", "", "where to save the adapter (default: a temporary folder, removed after)")
	flag.Parse()
	if err := run(*model, *out); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

func run(dir, out string) error {
	base, err := llama.Load(dir)
	if err != nil {
		return err
	}
	defer base.Free()
	model, err := lora.Wrap(base, &lora.Config{R: 8, LoraAlpha: 16, TargetModules: lora.List("q_proj", "v_proj")})
	if err != nil {
		return err
	}
	model.PrintTrainableParameters()

	ids := []int64{1, 306, 450, 263, 123, 29, 87, 23}
	opt := train.NewAdamW(model.TrainableParams(), train.AdamWConfig{LR: 1e-2})
	defer opt.Free()
	var first, last float64
	for step := 0; step < 5; step++ {
		loss, err := trainStep(model, opt, ids)
		if err != nil {
			return fmt.Errorf("step %d: %w", step, err)
		}
		if step == 0 {
			first = loss
		}
		last = loss
		fmt.Printf("step %d: loss %.4f\n", step, loss)
	}
	if !(last < first) {
		return fmt.Errorf("the loss did not go down: %.4f, then %.4f", first, last)
	}

	if out == "" {
		if out, err = os.MkdirTemp("", "consumer-adapter"); err != nil {
			return err
		}
		defer os.RemoveAll(out)
	}
	if err := model.Save(out); err != nil {
		return err
	}
	want, err := logits(model, ids)
	if err != nil {
		return err
	}

	fresh, err := llama.Load(dir)
	if err != nil {
		return err
	}
	defer fresh.Free()
	loaded, err := peft.Load(fresh, out)
	if err != nil {
		return err
	}
	got, err := logits(loaded, ids)
	if err != nil {
		return err
	}
	diff := 0.0
	for i := range want {
		diff = math.Max(diff, math.Abs(float64(want[i]-got[i])))
	}
	if diff != 0 {
		return fmt.Errorf("the reloaded adapter's logits differ by up to %g", diff)
	}
	fmt.Printf("saved %s and loaded it back: %d logits identical\n", out, len(got))
	return nil
}

// trainStep runs one forward and backward pass on ids (the labels are the
// inputs: next-token prediction) and one optimizer update.
func trainStep(model *peft.Model, opt *train.AdamW, ids []int64) (float64, error) {
	s := tensor.NewScope() // owns the inputs and the outputs; autograd on
	defer s.Close()
	x := s.FromInt64(ids, 1, int64(len(ids)))
	out, err := model.Forward(s, models.Inputs{InputIDs: x, Labels: x})
	if err != nil {
		return 0, err
	}
	loss := s.Item(out.Loss)
	s.Backward(out.Loss)
	if err := s.Err(); err != nil {
		return 0, err
	}
	if err := opt.Step(); err != nil {
		return 0, err
	}
	return loss, opt.ZeroGrad()
}

// logits runs model on ids without autograd and copies the logits out.
func logits(model *peft.Model, ids []int64) ([]float32, error) {
	s := tensor.NoGradScope()
	defer s.Close()
	out, err := model.Forward(s, models.Inputs{InputIDs: s.FromInt64(ids, 1, int64(len(ids)))})
	if err != nil {
		return nil, err
	}
	v := s.Float32s(out.Logits)
	return v, s.Err()
}
