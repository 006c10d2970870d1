package peft_test

import (
	"fmt"
	"slices"
	"strings"

	"github.com/gopeft/peft/lora" // also registers LORA with peft.Load
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
)

// Load an adapter that Python PEFT saved, switch it off and on, and merge it.
func ExampleLoad() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := peft.Load(base, "../testdata/hf/adapters/llama-tiny/lora-default")
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg, _ := model.Config(model.ActiveAdapter())
	fmt.Println(model.ActiveAdapter(), cfg.PeftType(), cfg.TaskType())
	restore := model.DisableAdapters() // base model only
	restore()
	merged, err := model.MergeAndUnload()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(peft.TrainableSummary(merged))
	// Output:
	// default LORA CAUSAL_LM
	// trainable params: 0 || all params: 139,584 || trainable%: 0.0000
}

// Seed libtorch's generator before wrapping, as torch.manual_seed before
// get_peft_model: the random parts of an adapter (here LoRA's A) come out
// the same in every run.
func ExampleSetSeed() {
	loraA := func() [][]float64 {
		base, _ := llama.Load("../testdata/hf/llama-tiny")
		peft.SetSeed(42)
		m, err := lora.Wrap(base, &lora.Config{R: 4, LoraAlpha: 8, TargetModules: lora.List("q_proj")})
		if err != nil {
			fmt.Println(err)
			return nil
		}
		var as [][]float64
		for _, np := range nn.NamedParams(m) {
			if strings.HasSuffix(np.Name, "lora_A.default.weight") {
				as = append(as, np.Param.Tensor().Float64Values(true))
			}
		}
		return as
	}
	first, second := loraA(), loraA()
	same := len(first) > 0 && len(first) == len(second)
	for i := range first {
		same = same && slices.Equal(first[i], second[i])
	}
	fmt.Println(len(first), "lora_A matrices, identical:", same)
	// Output: 2 lora_A matrices, identical: true
}
