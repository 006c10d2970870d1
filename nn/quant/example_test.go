package quant_test

import (
	"fmt"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/nn/quant"
	"github.com/gopeft/peft/tensor"
)

// Quantize a float32 Linear to NF4 with double quantization: the layer
// keeps two 4-bit codes per byte plus 8-bit block scales, and still counts
// as 704,512 parameters, as PEFT counts a Params4bit.
func ExampleNewLinear() {
	s := tensor.NoGradScope()
	defer s.Close()
	tensor.ManualSeed(0)
	w := nn.NewLinear(s, 512, 1376, false, 0.02) // the benchmark config's up_proj
	q, err := quant.NewLinear(w.Weight.T(), nil, quant.Config{QuantType: quant.NF4, UseDoubleQuant: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nn.FreeParams(q)
	_, params := nn.CountParams(q)
	fmt.Println(nn.Format(q))
	fmt.Println("packed weight:", q.Weight.DType(), q.Weight.Shape())
	fmt.Printf("%d parameters in %d bytes: %.4f bytes per weight (float32: 4)\n",
		params, q.StorageBytes(), float64(q.StorageBytes())/float64(params))

	x := s.Randn(tensor.Float32, 2, 512)
	y := q.Forward(s, x) // dequantized on the fly
	fmt.Println("output", y.Shape())
	// Output:
	// Linear4bit(in_features=512, out_features=1376, bias=False)
	// packed weight: uint8 [352256 1]
	// 704512 parameters in 363440 bytes: 0.5159 bytes per weight (float32: 4)
	// output [2 1376]
}
