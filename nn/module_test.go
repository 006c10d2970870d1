package nn_test

import (
	"errors"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// scaled is a wrapper layer in the way PEFT layers are: it holds the base
// Layer as a child and adds a parameter of its own.
type scaled struct {
	Base nn.Layer  `nn:"base_layer"`
	Gain *nn.Param `nn:"gain"`
}

func (w *scaled) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	return s.Mul(w.Base.Forward(s, x), w.Gain.T())
}

func TestChildrenFollowFieldOrder(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	m := newTestModel(s, 1)
	defer m.free()

	var got []string
	for _, c := range nn.Children(m) {
		got = append(got, c.Name)
	}
	// scale is a parameter, extra is nil, Note is untagged, Hidden is "-".
	require.Equal(t, []string{"embed", "layers", "norm", "head"}, got)

	kids := nn.Children(m)
	require.Same(t, m.Embed, kids[0].Module)
	require.Same(t, m.Layers, kids[1].Module)
	require.Same(t, m.Head, kids[3].Module)

	got = got[:0]
	for _, c := range nn.Children(m.Layers) {
		got = append(got, c.Name)
	}
	require.Equal(t, []string{"0", "1"}, got)

	// The nil optional Layer (act) of the second block is skipped.
	got = got[:0]
	for _, c := range nn.Children(m.Layers.Items[1]) {
		got = append(got, c.Name)
	}
	require.Equal(t, []string{"proj", "drop"}, got)

	// A leaf has no children; LocalParams lists only its own parameters.
	require.Empty(t, nn.Children(m.Norm))
	require.Equal(t, []string{"weight", "bias"}, names(nn.LocalParams(m.Norm)))
	require.Equal(t, []string{"scale"}, names(nn.LocalParams(m)))
	require.Equal(t, []string{"weight"}, names(nn.LocalParams(m.Head)), "nil bias skipped")
	require.Empty(t, nn.LocalParams(m.Layers))
}

func TestWalkParentsFirst(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	m := newTestModel(s, 1)
	defer m.free()

	var got []string
	err := nn.Walk(m, func(path string, mod nn.Module) error {
		got = append(got, path+"="+nn.TypeName(mod))
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []string{
		"=testModel",
		"embed=Embedding",
		"layers=ModuleList",
		"layers.0=block",
		"layers.0.proj=Linear",
		"layers.0.act=Identity",
		"layers.0.drop=Dropout",
		"layers.1=block",
		"layers.1.proj=Linear",
		"layers.1.drop=Dropout",
		"norm=LayerNorm",
		"head=Linear",
	}, got)

	require.Equal(t, []string{
		"embed", "layers", "layers.0", "layers.0.proj", "layers.0.act", "layers.0.drop",
		"layers.1", "layers.1.proj", "layers.1.drop", "norm", "head",
	}, nn.Paths(m))

	// An error from fn stops the walk and comes back unchanged.
	stop := errors.New("stop")
	var seen []string
	err = nn.Walk(m, func(path string, _ nn.Module) error {
		seen = append(seen, path)
		if path == "layers.0" {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, []string{"", "embed", "layers", "layers.0"}, seen)
}

func TestNamedParams(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	m := newTestModel(s, 1)
	defer m.free()

	nps := nn.NamedParams(m)
	// The root's own parameter comes first (as torch's named_parameters),
	// then the children's in walk order; head.weight is the embedding's
	// parameter and is listed once, under the first path met; the nil head
	// bias is skipped.
	require.Equal(t, []string{
		"scale",
		"embed.weight",
		"layers.0.proj.weight",
		"layers.0.proj.bias",
		"layers.1.proj.weight",
		"layers.1.proj.bias",
		"norm.weight",
		"norm.bias",
	}, names(nps))
	require.Same(t, m.Embed.Weight, nps[1].Param)
	require.Same(t, m.Layers.Items[1].(*block).Proj.(*nn.Linear).Bias, nps[5].Param)
	shapes := map[string][]int64{}
	for _, np := range nps {
		shapes[np.Name] = np.Param.Shape()
	}
	require.Equal(t, []int64{testV, testD}, shapes["embed.weight"])
	require.Equal(t, []int64{testD, testD}, shapes["layers.0.proj.weight"])
	require.Equal(t, []int64{testD}, shapes["layers.1.proj.bias"])
	require.Equal(t, []int64{2}, shapes["scale"])

	// The tied parameter is found under the head too when it is the root.
	require.Equal(t, []string{"weight"}, names(nn.NamedParams(m.Head)))
}

func TestGet(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	m := newTestModel(s, 1)
	defer m.free()

	got, err := nn.Get(m, "layers.1.proj")
	require.NoError(t, err)
	require.Same(t, m.Layers.Items[1].(*block).Proj.(*nn.Linear), got)

	got, err = nn.Get(m, "")
	require.NoError(t, err)
	require.Same(t, m, got)

	got, err = nn.Get(m, "layers.0")
	require.NoError(t, err)
	require.Same(t, m.Layers.Items[0].(*block), got)

	for _, bad := range []string{"layers.2.proj", "layers.0.nope", "norm.weight", "extra", "Hidden", "layers.1.act"} {
		_, err := nn.Get(m, bad)
		require.Error(t, err, bad)
		require.Contains(t, err.Error(), `"`+bad+`"`, "the error names the path")
	}
}

func TestReplaceWrapsAndUnwraps(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	m := newTestModel(s, 1)
	defer m.free()

	base := m.Layers.Items[0].(*block).Proj
	w := &scaled{Base: base, Gain: param(s, []float32{2, 2, 2, 2}, testD)}
	old, err := nn.Replace(m, "layers.0.proj", w)
	require.NoError(t, err)
	require.Same(t, base.(*nn.Linear), old)
	require.Same(t, w, m.Layers.Items[0].(*block).Proj)

	require.Equal(t, []string{
		"scale",
		"embed.weight",
		"layers.0.proj.gain",
		"layers.0.proj.base_layer.weight",
		"layers.0.proj.base_layer.bias",
		"layers.1.proj.weight",
		"layers.1.proj.bias",
		"norm.weight",
		"norm.bias",
	}, names(nn.NamedParams(m)))

	// The wrapper computes through its base: 2·(x Wᵀ + b).
	x := s.FromFloat32([]float32{1, -1, 0.5, 2}, 1, testD)
	want := s.Float32s(s.MulScalar(base.Forward(s, x), 2))
	gotY := s.Float32s(m.Layers.Items[0].(*block).Proj.Forward(s, x))
	require.NoError(t, s.Err())
	require.Equal(t, want, gotY)

	// Unwrap: put the base back.
	old, err = nn.Replace(m, "layers.0.proj", base)
	require.NoError(t, err)
	require.Same(t, w, old)
	require.Same(t, base.(*nn.Linear), m.Layers.Items[0].(*block).Proj)
	w.Gain.Free() // the wrapper's own parameter is ours again
}

func TestReplaceLayerSlotAndListItem(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	m := newTestModel(s, 1)
	defer m.free()

	// A Layer interface slot takes any Layer.
	lin := nn.NewLinear(s, testD, testD, false, 1)
	old, err := nn.Replace(m, "layers.0.act", lin)
	require.NoError(t, err)
	require.IsType(t, &nn.Identity{}, old)
	require.Same(t, lin, m.Layers.Items[0].(*block).Act)
	got, err := nn.Get(m, "layers.0.act")
	require.NoError(t, err)
	require.Same(t, lin, got)

	// A ModuleList item takes any module.
	prev := m.Layers.Items[1]
	nb := &block{Proj: nn.NewLinear(s, testD, testD, true, 1), Drop: &nn.Dropout{}}
	old, err = nn.Replace(m, "layers.1", nb)
	require.NoError(t, err)
	require.Same(t, prev.(*block), old)
	require.Same(t, nb, m.Layers.Items[1])
	nn.FreeParams(prev)

	// The replaced list item is what Walk now finds.
	got, err = nn.Get(m, "layers.1.proj")
	require.NoError(t, err)
	require.Same(t, nb.Proj.(*nn.Linear), got)
}

func TestReplaceErrors(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	m := newTestModel(s, 1)
	defer m.free()
	head := m.Head

	emb := &nn.Embedding{}
	_, err := nn.Replace(m, "head", emb)
	require.Error(t, err)
	require.Contains(t, err.Error(), `"head"`)
	require.Contains(t, err.Error(), "Embedding")
	require.Contains(t, err.Error(), "*nn.Linear")
	require.Same(t, head, m.Head, "a failed replace changes nothing")

	// A Layer slot refuses a module that is not a Layer.
	act := m.Layers.Items[0].(*block).Act
	_, err = nn.Replace(m, "layers.0.act", &nn.ModuleList{})
	require.Error(t, err)
	require.Contains(t, err.Error(), `"layers.0.act"`)
	require.Same(t, act, m.Layers.Items[0].(*block).Act)

	// No such module (list index out of range, unknown name, bad parent).
	spare := nn.NewLinear(s, 1, 1, false, 1)
	defer nn.FreeParams(spare)
	for _, p := range []string{"layers.7", "layers.0.nope", "nope.proj", "norm.weight"} {
		_, err = nn.Replace(m, p, spare)
		require.Error(t, err, p)
	}
	_, err = nn.Replace(m, "layers.7", &block{})
	require.Contains(t, err.Error(), `"layers.7"`)

	// nil is not a module.
	_, err = nn.Replace(m, "head", nil)
	require.Error(t, err)
	require.Same(t, head, m.Head)
}

func TestTypeName(t *testing.T) {
	require.Equal(t, "Linear", nn.TypeName(&nn.Linear{}))
	require.Equal(t, "Identity", nn.TypeName(nn.Identity{}))
	require.Equal(t, "ModuleList", nn.TypeName(&nn.ModuleList{}))
	require.Equal(t, "block", nn.TypeName(&block{}))
	require.Equal(t, "<nil>", nn.TypeName(nil))
}
