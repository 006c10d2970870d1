package nn_test

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// Sizes of the test model: vocabulary V, width D.
const (
	testV = 5
	testD = 4
)

// block is one layer of the test model: a Layer slot (so it can be
// wrapped), an optional Layer slot and a dropout.
type block struct {
	Proj nn.Layer    `nn:"proj"`
	Act  nn.Layer    `nn:"act"`
	Drop *nn.Dropout `nn:"drop"`
}

// testModel is a small tree: a parameter on the root placed after a child in
// field order, a ModuleList of blocks, a tied head without bias, a nil
// optional child and fields the walker must ignore.
type testModel struct {
	Embed  *nn.Embedding  `nn:"embed"`
	Scale  *nn.Param      `nn:"scale"`
	Layers *nn.ModuleList `nn:"layers"`
	Norm   *nn.LayerNorm  `nn:"norm"`
	Head   *nn.Linear     `nn:"head"`
	Extra  *nn.Linear     `nn:"extra"` // optional, left nil
	Note   string         // untagged: not a child
	Hidden *nn.Linear     `nn:"-"` // explicitly not part of the tree
}

// newTestModel builds the test model with weights drawn after seeding.
// Parameters: scale 2, embed 5·4=20, two projections 2·(4·4+4)=40,
// norm 4+4=8, head tied to embed: 70 elements in all.
func newTestModel(s *tensor.Scope, seed int64) *testModel {
	tensor.ManualSeed(seed)
	emb := nn.NewEmbedding(s, testV, testD, 1)
	b0 := &block{Proj: nn.NewLinear(s, testD, testD, true, 1), Act: &nn.Identity{}, Drop: &nn.Dropout{P: 0.1}}
	b1 := &block{Proj: nn.NewLinear(s, testD, testD, true, 1), Drop: &nn.Dropout{P: 0.1}}
	// Give the zero-initialised biases distinct values so that a state
	// round trip cannot pass by accident.
	for _, b := range []*block{b0, b1} {
		l := b.Proj.(*nn.Linear)
		s.Normal(l.Bias.T(), 0, 1)
	}
	ln := nn.NewLayerNorm(s, testD, 1e-5)
	s.Normal(ln.Weight.T(), 1, 0.1)
	s.Normal(ln.Bias.T(), 0, 0.1)
	return &testModel{
		Embed:  emb,
		Scale:  param(s, []float32{0.5 * float32(seed), -1.25 * float32(seed)}, 2),
		Layers: &nn.ModuleList{Items: []nn.Module{b0, b1}},
		Norm:   ln,
		Head:   &nn.Linear{Weight: emb.Weight},
		Note:   "ignored",
		Hidden: nn.NewLinear(s, 2, 2, true, 1),
	}
}

// param makes a float32 parameter with the given values.
func param(s *tensor.Scope, v []float32, shape ...int64) *nn.Param {
	return nn.NewParam(s.Keep(s.FromFloat32(v, shape...)))
}

// names lists the names of named parameters.
func names(nps []nn.NamedParam) []string {
	out := make([]string, len(nps))
	for i, np := range nps {
		out[i] = np.Name
	}
	return out
}

// paramBytes copies every parameter's raw bytes, by name.
func paramBytes(t *testing.T, m nn.Module) map[string][]byte {
	t.Helper()
	s := tensor.NoGradScope()
	defer s.Close()
	out := map[string][]byte{}
	for _, np := range nn.NamedParams(m) {
		out[np.Name] = s.Bytes(np.Param.T())
	}
	require.NoError(t, s.Err())
	return out
}

// requireClose checks got against want element by element within tol
// (absolute, plus tol relative to |want|).
func requireClose(t *testing.T, want []float64, got []float32, tol float64) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		d := math.Abs(float64(got[i]) - want[i])
		if d > tol*(1+math.Abs(want[i])) {
			t.Fatalf("element %d: got %v, want %v (|diff| %g > tol %g)\ngot  %v\nwant %v", i, got[i], want[i], d, tol, got, want)
		}
	}
}

// f32le encodes float32 values little-endian, independently of the code
// under test.
func f32le(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// u16le encodes raw 16-bit patterns (F16 / BF16 bits) little-endian.
func u16le(v ...uint16) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	return b
}

// free releases the model's tensors, the untracked Hidden layer included.
func (m *testModel) free() {
	nn.FreeParams(m)
	if m.Hidden != nil {
		nn.FreeParams(m.Hidden)
	}
}
