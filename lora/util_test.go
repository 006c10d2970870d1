package lora_test

import (
	"math"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

func nanValue() float64 { return math.NaN() }

func setParam(t *testing.T, p *nn.Param, data []float32) {
	s := tensor.NoGradScope()
	defer s.Close()
	s.CopyInto(p.T(), s.View(s.FromFloat32(data, int64(len(data))), p.Shape()...))
	require.NoError(t, s.Err())
}
