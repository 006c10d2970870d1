package auto_test

import (
	"fmt"

	"github.com/gopeft/peft/auto"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
)

// Load adapters of two methods the same way, with no import of their
// packages: the adapter's own config says which method it is.
func ExampleLoad() {
	for _, dir := range []string{"lora-default", "ia3", "prefix-proj"} {
		base, err := llama.Load("../testdata/hf/llama-tiny")
		if err != nil {
			fmt.Println(err)
			return
		}
		model, err := auto.Load(base, "../testdata/hf/adapters/llama-tiny/"+dir, peft.WithAdapterName("mine"))
		if err != nil {
			fmt.Println(err)
			return
		}
		cfg, _ := model.Config("mine")
		fmt.Println(cfg.PeftType(), model.ActiveAdapters(), len(model.TrainableParams()), "trainable")
	}
	// Output:
	// LORA [mine] 0 trainable
	// IA3 [mine] 0 trainable
	// PREFIX_TUNING [mine] 0 trainable
}

// The peft_types auto.Load reads.
func ExampleMethods() {
	fmt.Println(auto.Methods())
	// Output: [ADALORA ADAPTION_PROMPT BITFIT BOFT BOTTLENECK FOURIERFT FREEZE HRA IA3 LN_TUNING LOHA LOKR LORA MULTITASK_PROMPT_TUNING OFT PREFIX_TUNING PROMPT_TUNING P_TUNING VERA]
}
