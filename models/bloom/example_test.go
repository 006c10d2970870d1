package bloom_test

import (
	"fmt"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/tensor"
)

// Load a HF BLOOM folder and run one forward pass with a loss.
func ExampleLoad() {
	m, err := bloom.Load("../../testdata/hf/bloom-tiny")
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
	fmt.Println("bias parameters (BitFit):", m.Config.NumBiasParams())
	// Output:
	// logits [1 6 512]
	// loss 6.24
	// bias parameters (BitFit): 1536
}
