package llama_test

import (
	"fmt"

	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/nn/quant"
	"github.com/gopeft/peft/peft"
)

// Load a HF checkpoint with its linear layers in 4 bits (NF4, double
// quantization), lm_head kept in float32 as transformers does.
func ExampleLoadQuantized() {
	m, err := llama.LoadQuantized("../../testdata/hf/llama-tiny", quant.Config{UseDoubleQuant: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Free()
	fmt.Println(len(quant.Layers(m)), "layers in 4 bits; lm_head:", nn.Format(m.LMHead))
	// 4-bit weights count at their logical size and never train; the float
	// ones train until a PEFT method freezes them (PyTorch's default)
	fmt.Println(peft.TrainableSummary(m))
	fmt.Println("weight bytes:", quant.WeightBytes(m), "of", 4*139584)
	// Output:
	// 14 layers in 4 bits; lm_head: Linear(in_features=64, out_features=512, bias=False)
	// trainable params: 65,856 || all params: 139,584 || trainable%: 47.1802
	// weight bytes: 301552 of 558336
}
