package tinymix_test

import (
	"fmt"

	"github.com/gopeft/peft/examples/custom-model/tinymix"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// A family defined outside the library takes LoRA on its own module names.
func ExampleNew() {
	base, err := tinymix.New(tinymix.Config{VocabSize: 8, HiddenSize: 4, IntermediateSize: 8, NumHiddenLayers: 1, LayerNormEps: 1e-5}, 1)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer base.Free()
	model, err := lora.Wrap(base, &lora.Config{R: 2, LoraAlpha: 4, TargetModules: lora.List("w_in")})
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()
	wIn, err := nn.Get(base, "layers.0.w_in")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(nn.TypeName(wIn))

	s := tensor.NoGradScope()
	defer s.Close()
	out, err := model.Forward(s, models.Inputs{InputIDs: s.FromInt64([]int64{1, 2, 3}, 1, 3)})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(out.Logits.Shape())
	// Output:
	// trainable params: 24 || all params: 184 || trainable%: 13.0435
	// lora.Linear
	// [1 3 8]
}
