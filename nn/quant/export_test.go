package quant

import "github.com/gopeft/peft/tensor"

// Offset exposes the double-quantization offset (the mean absmax, whose
// float32 summation order is libtorch's) to the tests, which recompute
// everything else independently.
func Offset(l *Linear) float32 {
	if l.nestedOffset == nil {
		return 0
	}
	s := tensor.NewScope()
	defer s.Close()
	return s.Float32s(l.nestedOffset)[0]
}
