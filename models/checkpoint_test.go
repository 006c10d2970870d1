package models

import (
	"math"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// toyLayer is x + W2·dropout(tanh(W1·x)), with W1, W2 trainable.
type toyLayer struct {
	W1 *nn.Linear `nn:"w1"`
	W2 *nn.Linear `nn:"w2"`
}

func (l *toyLayer) forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	h := s.Dropout(s.Tanh(l.W1.Forward(s, x)), 0.5, true)
	return s.Add(x, l.W2.Forward(s, h))
}

// Dropout inside checkpointed layers: the recomputation replays the
// forward pass's masks, so the gradients equal those of a plain pass in
// which every layer is seeded as the checkpoint seeds it.
func TestCheckpointReplaysDropoutMasks(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	tensor.ManualSeed(3)
	layers := []*toyLayer{}
	for i := 0; i < 3; i++ {
		l := &toyLayer{W1: nn.NewLinear(s, 8, 16, true, 0.3), W2: nn.NewLinear(s, 16, 8, false, 0.3)}
		require.NoError(t, nn.Unfreeze(l))
		layers = append(layers, l)
	}
	defer func() {
		for _, l := range layers {
			nn.FreeParams(l)
		}
	}()
	x0 := s.Randn(tensor.Float32, 4, 8)
	run := func(ck *Checkpoint, plainSeed bool) (float64, [][]float32) {
		for _, l := range layers {
			require.NoError(t, nn.ZeroGrad(l))
		}
		x := x0
		for i, l := range layers {
			if plainSeed {
				tensor.ManualSeed(ck.layerSeed(i))
				x = l.forward(s, x)
				continue
			}
			x = ck.Layer(s, l, x, l.forward)
		}
		loss := s.Sum(s.Mul(x, x), false)
		if plainSeed {
			s.Backward(loss)
		} else {
			ck.Backward(s, loss)
		}
		require.NoError(t, s.Err())
		var gs [][]float32
		for _, l := range layers {
			for _, np := range nn.NamedParams(l) {
				gs = append(gs, s.Float32s(s.Grad(np.Param.T())))
			}
		}
		return s.Item(loss), gs
	}
	ck := NewCheckpoint(9)
	defer ck.Free()
	lc, gc := run(ck, false)
	lp, gp := run(NewCheckpoint(9), true)
	// relative: the checkpointed forward runs without autograd, where Linear
	// may take its few-rows kernel (rounding differs in the last bits)
	require.InEpsilon(t, lp, lc, 1e-6)
	for i := range gp {
		for j := range gp[i] {
			require.InDelta(t, gp[i][j], gc[i][j], 1e-5*math.Max(1, math.Abs(float64(gp[i][j]))))
		}
	}
	// a different seed draws other masks
	other := NewCheckpoint(10)
	defer other.Free()
	lo, _ := run(other, false)
	require.Greater(t, math.Abs(lo-lc), 1e-6)
}

// A nil checkpoint runs the layer as is and back-propagates normally.
func TestNilCheckpointIsPlain(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	var ck *Checkpoint
	w := s.FromFloat32([]float32{2}, 1)
	s.SetRequiresGrad(w, true)
	y := ck.Layer(s, nil, w, func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Mul(x, x) })
	ck.Backward(s, s.Sum(y, false))
	require.NoError(t, s.Err())
	require.Equal(t, []float32{4}, s.Float32s(s.Grad(w)))
	require.Equal(t, 0, ck.Len())
	ck.Free()
}

// The checkpoint holds the side tensors its layers read, so that the
// forward's scope can be freed before Backward; a side tensor not passed
// to Layer dies with the scope and the recomputation fails.
func TestCheckpointHoldsSideTensors(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	tensor.ManualSeed(5)
	l := &toyLayer{W1: nn.NewLinear(s, 8, 16, true, 0.3), W2: nn.NewLinear(s, 16, 8, false, 0.3)}
	require.NoError(t, nn.Unfreeze(l))
	defer nn.FreeParams(l)
	x0 := s.Keep(s.Randn(tensor.Float32, 4, 8))
	defer x0.Free()
	run := func(ck *Checkpoint, pass, free bool) ([]float32, error) {
		require.NoError(t, nn.ZeroGrad(l))
		s := tensor.NewScope()
		defer s.Close()
		scale := s.Full(tensor.Float32, 0.5, 1, 8)           // made in the forward's scope, read by the layers
		fn := func(s *tensor.Scope, x *tensor.T) *tensor.T { // no dropout: the plain pass's gradients
			return s.Mul(s.Add(x, l.W2.Forward(s, s.Tanh(l.W1.Forward(s, x)))), scale)
		}
		var side []*tensor.T
		if pass {
			side = []*tensor.T{scale, nil}
		}
		x := x0
		for i := 0; i < 2; i++ {
			x = ck.Layer(s, l, x, fn, side...)
		}
		loss := s.Keep(s.Sum(s.Mul(x, x), false))
		defer loss.Free()
		if free {
			s.FreeAll()
		}
		ck.Backward(s, loss)
		if err := s.Err(); err != nil {
			return nil, err
		}
		return s.Float32s(s.Grad(l.W1.Weight.T())), s.Err()
	}
	want, err := run(nil, false, false)
	require.NoError(t, err)
	ck := NewCheckpoint(1)
	defer ck.Free()
	got, err := run(ck, true, true)
	require.NoError(t, err)
	require.Len(t, got, len(want))
	for i := range want {
		require.InDelta(t, want[i], got[i], 1e-5*math.Max(1, math.Abs(float64(want[i]))))
	}
	bare := NewCheckpoint(1)
	defer bare.Free()
	_, err = run(bare, false, true)
	require.Error(t, err, "a side tensor freed with the scope")
}
