package adapter_test

import (
	"errors"
	"fmt"

	"github.com/gopeft/peft/adapter"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
)

// Houlsby adapters on a LLaMA checkpoint: two bottlenecks per layer plus
// the layer norms train; they cannot be merged.
func ExampleWrap() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := adapter.Wrap(base, adapter.Houlsby())
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()
	_, err = model.MergeAndUnload()
	fmt.Println("mergeable:", !errors.Is(err, peft.ErrNotMergeable))
	// Output:
	// trainable params: 2,576 || all params: 142,160 || trainable%: 1.8120
	// mergeable: false
}
