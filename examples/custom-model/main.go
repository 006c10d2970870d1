// Command custom-model tunes a model family that the library does not
// know: package tinymix here defines its own module tree (with a layer of
// its own, TokenShift) using only the library's public packages. LoRA
// targets the family's own module names (w_in, w_out); the program trains
// a few steps on a repeating sequence, saves the base as a HF-style folder
// and the adapter in PEFT's format, loads both back and checks that the
// logits are identical.
//
//	go run ./examples/custom-model [-steps 40] [-out DIR]
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/gopeft/peft/examples/custom-model/tinymix"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
)

func main() {
	steps := flag.Int("steps", 40, "training steps")
	out := flag.String("out", "", "folder for base/ and adapter/ (default: a temporary folder, removed after)")
	flag.Parse()
	dir := *out
	if dir == "" {
		tmp, err := os.MkdirTemp("", "custom-model")
		if err != nil {
			fmt.Fprintln(os.Stderr, "custom-model:", err)
			os.Exit(1)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	res, err := run(dir, *steps)
	if err != nil {
		fmt.Fprintln(os.Stderr, "custom-model:", err)
		os.Exit(1)
	}
	fmt.Println(res.Summary)
	fmt.Printf("loss %.4f → %.4f in %d steps\n", res.Losses[0], res.Losses[len(res.Losses)-1], len(res.Losses))
	fmt.Printf("reloaded from %s: logits identical (max |diff| %g)\n", dir, res.MaxDiff)
}

// Result is what run measured.
type Result struct {
	Summary string    // the trainable-parameter line
	Losses  []float64 // one per step
	MaxDiff float64   // between the trained model's logits and the reloaded one's
}

// batch is the training data: two rows of a repeating sequence, the labels
// being the inputs (next-token prediction).
var batch = []int64{
	1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
	9, 10, 11, 12, 9, 10, 11, 12, 9, 10, 11, 12, 9, 10, 11, 12,
}

func run(dir string, steps int) (*Result, error) {
	cfg := tinymix.Config{VocabSize: 32, HiddenSize: 32, IntermediateSize: 64, NumHiddenLayers: 2, LayerNormEps: 1e-5}
	base, err := tinymix.New(cfg, 7)
	if err != nil {
		return nil, err
	}
	defer base.Free()
	baseDir := filepath.Join(dir, "base")
	if err := base.Save(baseDir); err != nil {
		return nil, err
	}
	base.Path = baseDir

	model, err := lora.Wrap(base, &lora.Config{R: 4, LoraAlpha: 8, TargetModules: lora.List("w_in", "w_out")})
	if err != nil {
		return nil, err
	}
	res := &Result{Summary: peft.TrainableSummary(model)}
	opt := train.NewAdamW(model.TrainableParams(), train.AdamWConfig{LR: 2e-2})
	defer opt.Free()
	for i := 0; i < steps; i++ {
		loss, err := step(model, opt)
		if err != nil {
			return nil, fmt.Errorf("step %d: %w", i, err)
		}
		res.Losses = append(res.Losses, loss)
	}

	adapterDir := filepath.Join(dir, "adapter")
	if err := model.Save(adapterDir); err != nil {
		return nil, err
	}
	want, err := logits(model)
	if err != nil {
		return nil, err
	}
	fresh, err := tinymix.Load(baseDir)
	if err != nil {
		return nil, err
	}
	defer fresh.Free()
	loaded, err := peft.Load(fresh, adapterDir)
	if err != nil {
		return nil, err
	}
	got, err := logits(loaded)
	if err != nil {
		return nil, err
	}
	if len(got) != len(want) {
		return nil, fmt.Errorf("reloaded logits: %d values, want %d", len(got), len(want))
	}
	for i := range want {
		res.MaxDiff = math.Max(res.MaxDiff, math.Abs(float64(got[i]-want[i])))
	}
	return res, nil
}

// step is one forward, backward and AdamW update; it returns the loss.
func step(model *peft.Model, opt *train.AdamW) (float64, error) {
	s := tensor.NewScope() // autograd on; owns the inputs and the outputs
	defer s.Close()
	ids := s.FromInt64(batch, 2, int64(len(batch)/2))
	out, err := model.Forward(s, models.Inputs{InputIDs: ids, Labels: ids})
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

// logits runs model on the batch without autograd.
func logits(model *peft.Model) ([]float32, error) {
	s := tensor.NoGradScope()
	defer s.Close()
	out, err := model.Forward(s, models.Inputs{InputIDs: s.FromInt64(batch, 2, int64(len(batch)/2))})
	if err != nil {
		return nil, err
	}
	v := s.Float32s(out.Logits)
	return v, s.Err()
}
