package nn_test

import (
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// note is a module with both an extra line and children, like a PEFT layer
// that prints its settings above its sub-modules.
type note struct {
	Inner *nn.Linear `nn:"inner"`
}

func (note) ExtraRepr() string { return "r=8, alpha=16" }

// renamed prints under a name of its own choosing.
type renamed struct{}

func (renamed) TypeName() string { return "Custom" }

func TestFormatMatchesPyTorch(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	m := newTestModel(s, 1)
	defer m.free()

	want := `testModel(
  (embed): Embedding(5, 4)
  (layers): ModuleList(
    (0): block(
      (proj): Linear(in_features=4, out_features=4, bias=True)
      (act): Identity()
      (drop): Dropout(p=0.1, inplace=False)
    )
    (1): block(
      (proj): Linear(in_features=4, out_features=4, bias=True)
      (drop): Dropout(p=0.1, inplace=False)
    )
  )
  (norm): LayerNorm((4,), eps=1e-05, elementwise_affine=True)
  (head): Linear(in_features=4, out_features=5, bias=False)
)`
	require.Equal(t, want, nn.Format(m))

	// A wrapped layer shows its base and its own parameters' modules.
	base := m.Layers.Items[1].(*block).Proj
	w := &scaled{Base: base, Gain: param(s, []float32{1, 1, 1, 1}, testD)}
	_, err := nn.Replace(m, "layers.1.proj", w)
	require.NoError(t, err)
	require.Contains(t, nn.Format(m), `
    (1): block(
      (proj): scaled(
        (base_layer): Linear(in_features=4, out_features=4, bias=True)
      )
      (drop): Dropout(p=0.1, inplace=False)
    )
`)
}

func TestFormatLeavesAndExtras(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	l := &nn.Linear{Weight: param(s, make([]float32, 6), 3, 2)}
	defer nn.FreeParams(l)
	c := &nn.Conv1D{Weight: param(s, make([]float32, 6), 2, 3)}
	defer nn.FreeParams(c)
	r := &nn.RMSNorm{Weight: param(s, make([]float32, 3), 3), Eps: 1e-6}
	defer nn.FreeParams(r)

	require.Equal(t, "Linear(in_features=2, out_features=3, bias=False)", nn.Format(l))
	require.Equal(t, "Conv1D(nf=3, nx=2)", nn.Format(c))
	require.Equal(t, "RMSNorm((3,), eps=1e-06)", nn.Format(r))
	require.Equal(t, "Identity()", nn.Format(nn.Identity{}))
	require.Equal(t, "Custom()", nn.Format(renamed{}))
	require.Equal(t, "ModuleList()", nn.Format(&nn.ModuleList{}))

	// torch prints extra_repr lines before the children.
	require.Equal(t, `note(
  r=8, alpha=16
  (inner): Linear(in_features=2, out_features=3, bias=False)
)`, nn.Format(&note{Inner: l}))
	// With no children the extra goes inside the parentheses.
	require.Equal(t, "note(r=8, alpha=16)", nn.Format(&note{}))
}
