package adalora_test

import (
	"fmt"
	"io"
	"os"

	"github.com/gopeft/peft/adalora"
	"github.com/gopeft/peft/data"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
)

// Wrap llama-tiny with AdaLoRA, train 10 steps with the Trainer (which runs
// the rank allocator after every step), and save: the adapter keeps 2
// ranks per layer on average, cut to them in the file, and loads back.
func ExampleWrap() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg := adalora.NewConfig(10) // total_step
	cfg.InitR, cfg.TargetR, cfg.Tinit, cfg.Tfinal = 4, 2, 2, 3
	tensor.ManualSeed(0)
	model, err := adalora.Wrap(base, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()

	var samples []data.Sample
	for i := 0; i < 8; i++ {
		ids := []int64{1, int64(10 + i), int64(20 + i), int64(30 + i), 2}
		samples = append(samples, data.Sample{InputIDs: ids, Labels: ids})
	}
	tr := train.New(model, train.Config{LR: 1e-2, BatchSize: 4, MaxSteps: 10, Progress: io.Discard})
	if err := tr.Fit(&data.Dataset{Samples: samples}, nil); err != nil {
		fmt.Println(err)
		return
	}
	kept := 0
	for _, n := range cfg.KeptRanks() {
		kept += n
	}
	fmt.Println("layers:", len(cfg.KeptRanks()), "ranks kept:", kept)

	dir, _ := os.MkdirTemp("", "adalora")
	defer os.RemoveAll(dir)
	if err := model.Save(dir); err != nil {
		fmt.Println(err)
		return
	}
	fresh, _ := llama.Load("../testdata/hf/llama-tiny")
	loaded, err := peft.Load(fresh, dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	rank := 0
	for _, t := range peft.Tuners(loaded.Base()) {
		rank += t.Tuner.(*adalora.SVDLinear).Rank(peft.DefaultAdapter)
	}
	fmt.Println("loaded ranks:", rank)
	// Output:
	// trainable params: 1,808 || all params: 141,396 || trainable%: 1.2787
	// layers: 4 ranks kept: 8
	// loaded ranks: 8
}
