package bloom_test

import (
	"fmt"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bloom"
	"github.com/sugarme/gotch/ts"
)

// Load a HF BLOOM folder and run one forward pass with a loss.
func ExampleLoad() {
	m, err := bloom.Load("../../testdata/hf/bloom-tiny")
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
	fmt.Println("bias parameters (BitFit):", m.Config.NumBiasParams())
	// Output:
	// logits [1 6 512]
	// loss 6.24
	// bias parameters (BitFit): 1536
}
