package nn_test

import (
	"errors"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

func TestFreezeUnfreezeCount(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	m := newTestModel(s, 1)
	defer m.free()

	// By hand: scale 2 + embed 5·4 + 2 projections·(4·4+4) + norm 2·4 = 70;
	// the tied head adds nothing.
	const total = 2 + 20 + 40 + 8

	require.NoError(t, nn.Freeze(m))
	tr, all := nn.CountParams(m)
	require.Equal(t, int64(0), tr)
	require.Equal(t, int64(total), all)
	require.Empty(t, nn.TrainableParams(m))
	for _, np := range nn.NamedParams(m) {
		require.False(t, np.Param.RequiresGrad(), np.Name)
	}

	require.NoError(t, nn.Unfreeze(m))
	tr, all = nn.CountParams(m)
	require.Equal(t, int64(total), tr)
	require.Equal(t, int64(total), all)
	require.Len(t, nn.TrainableParams(m), 8)

	// Freeze everything, then unfreeze one sub-tree by path.
	require.NoError(t, nn.Freeze(m))
	l1, err := nn.Get(m, "layers.1")
	require.NoError(t, err)
	require.NoError(t, nn.Unfreeze(l1))
	tr, _ = nn.CountParams(m)
	require.Equal(t, int64(4*4+4), tr)
	require.Equal(t, []string{"layers.1.proj.weight", "layers.1.proj.bias"}, names(nn.TrainableParams(m)))

	// Unfreezing the tied head unfreezes the embedding: one parameter.
	require.NoError(t, nn.Freeze(m))
	require.NoError(t, nn.Unfreeze(m.Head))
	tr, _ = nn.CountParams(m)
	require.Equal(t, int64(testV*testD), tr)
	require.Equal(t, []string{"embed.weight"}, names(nn.TrainableParams(m)))
	require.True(t, m.Embed.Weight.RequiresGrad())

	// SetRequiresGrad is the same switch.
	require.NoError(t, nn.SetRequiresGrad(m.Norm, true))
	tr, _ = nn.CountParams(m)
	require.Equal(t, int64(testV*testD+2*testD), tr)
}

func TestSetTrainingTogglesDropout(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	m := newTestModel(s, 1)
	defer m.free()

	drops := func() []bool {
		var out []bool
		for _, it := range m.Layers.Items {
			out = append(out, it.(*block).Drop.Train)
		}
		return out
	}
	require.Equal(t, []bool{false, false}, drops())
	nn.SetTraining(m, true)
	require.Equal(t, []bool{true, true}, drops())
	nn.SetTraining(m, false)
	require.Equal(t, []bool{false, false}, drops())
	// Only the sub-tree given is switched.
	nn.SetTraining(m.Layers.Items[1], true)
	require.Equal(t, []bool{false, true}, drops())
}

func TestZeroGrad(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	l := &nn.Linear{
		Weight: param(s, []float32{1, 2, 3, 4, 5, 6}, 2, 3),
		Bias:   param(s, []float32{0, 0}, 2),
	}
	defer nn.FreeParams(l)
	require.NoError(t, nn.Unfreeze(l))

	x := s.FromFloat32([]float32{1, 2, 3, -1, 0.5, 4}, 2, 3)
	s.Backward(s.Sum(l.Forward(s, x), false))
	// d sum(x Wᵀ + b) / dW[o][i] = Σ_b x[b][i]; / db[o] = batch size.
	require.Equal(t, []float32{0, 2.5, 7, 0, 2.5, 7}, s.Float32s(s.Grad(l.Weight.T())))
	require.Equal(t, []float32{2, 2}, s.Float32s(s.Grad(l.Bias.T())))
	require.NoError(t, s.Err())

	require.NoError(t, nn.ZeroGrad(l))
	require.Equal(t, []float32{0, 0, 0, 0, 0, 0}, s.Float32s(s.Grad(l.Weight.T())))
	require.Equal(t, []float32{0, 0}, s.Float32s(s.Grad(l.Bias.T())))
	require.NoError(t, s.Err())

	// A parameter that never had a gradient is left alone.
	fresh := &nn.Linear{Weight: param(s, []float32{1}, 1, 1)}
	defer nn.FreeParams(fresh)
	require.NoError(t, nn.ZeroGrad(fresh))
	require.Nil(t, s.Grad(fresh.Weight.T()))
}

func TestNoGrad(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	w := param(s, []float32{1, 2}, 2)
	defer w.Free()
	s.SetRequiresGrad(w.T(), true)
	require.True(t, s.Mul(w.T(), w.T()).RequiresGrad())

	err := nn.NoGrad(func(ng *tensor.Scope) error {
		y := ng.Mul(w.T(), w.T())
		require.False(t, y.RequiresGrad())
		require.Equal(t, []float32{1, 4}, ng.Float32s(y))
		return nil
	})
	require.NoError(t, err)
	require.True(t, s.Mul(w.T(), w.T()).RequiresGrad(), "grad mode comes back after NoGrad")

	// fn's error comes back; so does an op error left in the scope.
	bad := errors.New("bad")
	require.ErrorIs(t, nn.NoGrad(func(*tensor.Scope) error { return bad }), bad)
	err = nn.NoGrad(func(ng *tensor.Scope) error {
		ng.Matmul(ng.Zeros(tensor.Float32, 2, 3), ng.Zeros(tensor.Float32, 4, 5))
		return nil
	})
	require.Error(t, err)
	require.Contains(t, err.Error(), "matmul")
	require.NoError(t, s.Err())
}

func TestParamAccessors(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	p := param(s, []float32{1, 2, 3, 4, 5, 6}, 2, 3)
	require.Equal(t, []int64{2, 3}, p.Shape())
	require.Equal(t, int64(6), p.Numel())
	require.Equal(t, tensor.Float32, p.DType())
	require.False(t, p.RequiresGrad())

	// Set swaps the tensor (freeing the old one).
	p.Set(s.Keep(s.FromFloat32([]float32{7, 8}, 2)))
	require.Equal(t, []int64{2}, p.Shape())
	require.Equal(t, []float32{7, 8}, s.Float32s(p.T()))

	// Tensor is a second handle to the same data, for the public boundary.
	x := p.Tensor()
	require.Equal(t, []int64{2}, x.MustSize())
	require.Equal(t, []float64{7, 8}, x.Float64Values())
	p.Free()
	require.Nil(t, p.T())
	// The gotch handle keeps the storage alive after the parameter lets go.
	require.Equal(t, []float64{7, 8}, x.Float64Values())
	require.NoError(t, x.Drop())
}
