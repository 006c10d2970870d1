package gpt2_test

import (
	"fmt"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/gpt2"
	"github.com/gopeft/peft/tensor"
)

// Load a HF GPT-2 folder and run one forward pass with a loss.
func ExampleLoad() {
	m, err := gpt2.Load("../../testdata/hf/gpt2-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Free()
	s := tensor.NoGradScope() // owns the inputs and the outputs
	defer s.Close()
	ids := s.FromInt64([]int64{1, 306, 450, 263, 123, 29}, 1, 6)
	out, err := m.Forward(s, models.Inputs{InputIDs: ids, Labels: ids})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("logits", out.Logits.Shape())
	fmt.Printf("loss %.2f\n", s.Item(out.Loss))
	fmt.Println("parameters:", m.Config.NumParams())
	// Output:
	// logits [1 6 512]
	// loss 6.23
	// parameters: 141056
}

// A left-padded batch needs generate's position ids: GPT-2's positions are
// learned, so the padded row's first real token must get position 0.
func ExamplePositionIDs() {
	s := tensor.NewScope()
	defer s.Close()
	mask := s.FromInt64([]int64{0, 0, 1, 1, 1, 1, 1, 1, 1, 1}, 2, 5)
	pos, err := gpt2.PositionIDs(s, mask)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s.Int64s(pos))
	// Output:
	// [1 1 0 1 2 0 1 2 3 4]
}
