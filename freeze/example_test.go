package freeze_test

import (
	"fmt"

	"github.com/gopeft/peft/freeze"
	"github.com/gopeft/peft/models/llama"
)

// Train the last decoder layer's MLP and the output head, freeze the rest.
func ExampleWrap() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := freeze.Wrap(base, &freeze.Config{
		TrainableLayers:  freeze.Layers(1),
		TrainableModules: []string{"mlp"},
		ExtraModules:     []string{"lm_head"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()
	for _, np := range model.TrainableParams() {
		fmt.Println(np.Name)
	}
	// Output:
	// trainable params: 57,344 || all params: 139,584 || trainable%: 41.0821
	// base_model.model.model.layers.1.mlp.gate_proj.weight
	// base_model.model.model.layers.1.mlp.up_proj.weight
	// base_model.model.model.layers.1.mlp.down_proj.weight
	// base_model.model.lm_head.weight
}
