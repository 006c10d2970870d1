package lora_test

import (
	"fmt"

	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn/quant"
)

// QLoRA: LoRA on every linear layer of a base loaded in 4 bits. The adapter
// trains and saves like any LoRA adapter; it loads on the float32 base too.
func Example_qLoRA() {
	base, err := llama.LoadQuantized("../testdata/hf/llama-tiny", quant.Config{UseDoubleQuant: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := lora.Wrap(base, &lora.Config{R: 8, LoraAlpha: 16, TargetModules: lora.Regex("all-linear")})
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters() // all params: the 4-bit weights at their logical size, as PEFT counts them
	fmt.Println(len(model.TrainableParams()), "trainable tensors: lora_A and lora_B of 14 layers")
	// Output:
	// trainable params: 16,384 || all params: 155,968 || trainable%: 10.5047
	// 28 trainable tensors: lora_A and lora_B of 14 layers
}
