package gpt2_test

import (
	"fmt"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/gpt2"
	"github.com/sugarme/gotch/ts"
)

// Load a HF GPT-2 folder and run one forward pass with a loss.
func ExampleLoad() {
	m, err := gpt2.Load("../../testdata/hf/gpt2-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Free()
	ids := ts.MustOfSlice([]int64{1, 306, 450, 263, 123, 29}).MustView([]int64{1, 6}, true)
	out, err := m.Forward(models.Inputs{InputIDs: ids, Labels: ids})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("logits", out.Logits.MustSize())
	fmt.Printf("loss %.2f\n", out.Loss.Float64Values()[0])
	fmt.Println("parameters:", m.Config.NumParams())
	// Output:
	// logits [1 6 512]
	// loss 6.23
	// parameters: 141056
}

// A left-padded batch needs generate's position ids: GPT-2's positions are
// learned, so the padded row's first real token must get position 0.
func ExamplePositionIDs() {
	mask := ts.MustOfSlice([]int64{0, 0, 1, 1, 1, 1, 1, 1, 1, 1}).MustView([]int64{2, 5}, true)
	pos, err := gpt2.PositionIDs(mask)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(pos.Int64Values())
	// Output:
	// [1 1 0 1 2 0 1 2 3 4]
}
