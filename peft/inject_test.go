package peft_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// A method written entirely outside the library through its public
// contract (peft.TunerConfig + peft.Tuner + peft.Register): a learned
// scalar gate g per adapter on a Linear's output, y = (1 + g)·W x, g
// starting at 0. It merges as W ← (1 + g)·W.

const gateType peft.PeftType = "TOY_GATE"

func init() { peft.Register(gateType, decodeGate) }

type gateConfig struct {
	TargetModules     peft.Targets `json:"target_modules"`
	ExcludeModules    peft.Targets `json:"exclude_modules"`
	LayersToTransform []int        `json:"layers_to_transform"`
	BaseModel         string       `json:"base_model_name_or_path"`
}

func decodeGate(data []byte) (peft.Config, error) {
	c := &gateConfig{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *gateConfig) PeftType() peft.PeftType   { return gateType }
func (c *gateConfig) TaskType() peft.TaskType   { return peft.CausalLM }
func (c *gateConfig) BaseModelName() string     { return c.BaseModel }
func (c *gateConfig) SetBaseModelName(n string) { c.BaseModel = n }

func (c *gateConfig) MarshalJSON() ([]byte, error) {
	type plain gateConfig
	return json.Marshal(struct {
		PeftType peft.PeftType `json:"peft_type"`
		TaskType peft.TaskType `json:"task_type"`
		*plain
	}{gateType, peft.CausalLM, (*plain)(c)})
}

func (c *gateConfig) Prepare(nn.Module) (peft.Targeting, error) {
	return peft.Targeting{TargetModules: c.TargetModules, ExcludeModules: c.ExcludeModules, LayersToTransform: c.LayersToTransform}, nil
}

func (c *gateConfig) CreateOrUpdate(t peft.Target) (peft.Tuner, error) {
	g, ok := t.Module.(*gate)
	if !ok {
		lin, isLinear := t.Module.(*nn.Linear)
		if !isLinear {
			return nil, fmt.Errorf("gate: %q is a %s, not a Linear", t.Path, nn.TypeName(t.Module))
		}
		g = &gate{Base: lin, G: nn.NewParamDict()}
	}
	s := tensor.NoGradScope()
	defer s.Close()
	z := s.Zeros(tensor.Float32, 1)
	if err := s.Err(); err != nil {
		return nil, err
	}
	g.G.Set(t.Adapter, nn.NewParam(s.Keep(z)))
	return g, nil
}

type gate struct {
	Base *nn.Linear    `nn:"base_layer"`
	G    *nn.ParamDict `nn:"gate"`

	active   []string
	disabled bool
	merged   []string
}

func (g *gate) factor(s *tensor.Scope, names []string) *tensor.T {
	var f *tensor.T
	for _, n := range names {
		p, ok := g.G.Get(n)
		if !ok {
			continue
		}
		if f == nil {
			f = s.AddScalar(p.T(), 1)
		} else {
			f = s.Mul(f, s.AddScalar(p.T(), 1))
		}
	}
	return f
}

func (g *gate) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	y := g.Base.Forward(s, x)
	if g.disabled || len(g.merged) > 0 {
		return y
	}
	if f := g.factor(s, g.active); f != nil {
		y = s.Mul(y, f)
	}
	return y
}

func (g *gate) BaseLayer() nn.Layer      { return g.Base }
func (g *gate) Adapters() []string       { return g.G.Keys() }
func (g *gate) SetActive(names []string) { g.active = append([]string(nil), names...) }
func (g *gate) SetDisabled(off bool)     { g.disabled = off }
func (g *gate) DeleteAdapter(name string) {
	g.G.Delete(name)
}
func (g *gate) Merged() []string { return append([]string(nil), g.merged...) }

func (g *gate) Merge(names []string, _ bool) error {
	s := tensor.NoGradScope()
	defer s.Close()
	for _, n := range names {
		if f := g.factor(s, []string{n}); f != nil {
			s.CopyInto(g.Base.Weight.T(), s.Mul(g.Base.Weight.T(), f))
			g.merged = append(g.merged, n)
		}
	}
	return s.Err()
}

func (g *gate) Unmerge() error {
	s := tensor.NoGradScope()
	defer s.Close()
	for len(g.merged) > 0 {
		n := g.merged[len(g.merged)-1]
		s.CopyInto(g.Base.Weight.T(), s.Div(g.Base.Weight.T(), g.factor(s, []string{n})))
		g.merged = g.merged[:len(g.merged)-1]
	}
	return s.Err()
}

func (g *gate) AdapterState(name string) []nn.NamedParam {
	if p, ok := g.G.Get(name); ok {
		return []nn.NamedParam{{Name: "gate", Param: p}}
	}
	return nil
}

func (g *gate) SetTrainable(name string, on bool) error {
	p, ok := g.G.Get(name)
	if !ok {
		return nil
	}
	s := tensor.NewScope()
	defer s.Close()
	s.SetRequiresGrad(p.T(), on)
	return s.Err()
}

const llamaTiny = "../testdata/hf/llama-tiny"

func loadTiny(t *testing.T) *llama.Model {
	t.Helper()
	base, err := llama.Load(llamaTiny)
	require.NoError(t, err)
	return base
}

var gateIDs = []int64{1, 5, 9, 2, 7, 3, 8, 4}

// logits runs m on gateIDs (with labels when loss is wanted).
func logits(t *testing.T, s *tensor.Scope, m interface {
	ForwardT(*tensor.Scope, *models.Batch) *models.Output
}) []float32 {
	t.Helper()
	out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(gateIDs, 1, int64(len(gateIDs)))})
	require.NoError(t, s.Err())
	return s.Float32s(out.Logits)
}

func maxAbs(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		if v := float64(a[i] - b[i]); v > d {
			d = v
		} else if -v > d {
			d = -v
		}
	}
	return d
}

func tunerPaths(m *peft.Model) []string {
	var out []string
	for _, at := range peft.Tuners(m.Base()) {
		out = append(out, at.Path)
	}
	return out
}

func TestToyMethodThroughPublicContract(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	base := loadTiny(t)
	want := logits(t, s, base)

	cfg := &gateConfig{TargetModules: peft.TargetList("q_proj", "v_proj"), LayersToTransform: []int{1}}
	m, err := peft.New(base, cfg)
	require.NoError(t, err)
	require.Equal(t, []string{"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"}, tunerPaths(m))
	require.Equal(t, llamaTiny, cfg.BaseModel, "base_model_name_or_path filled")
	var names []string
	for _, np := range m.TrainableParams() {
		names = append(names, np.Name)
	}
	require.Equal(t, []string{
		"base_model.model.model.layers.1.self_attn.q_proj.gate.default",
		"base_model.model.model.layers.1.self_attn.v_proj.gate.default",
	}, names)
	require.Zero(t, maxAbs(want, logits(t, s, m)), "g = 0 starts at the base model")

	// train: one normalised gradient step on the gates lowers the loss
	labels := s.FromInt64(gateIDs, 1, int64(len(gateIDs)))
	loss := func() *tensor.T {
		out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(gateIDs, 1, int64(len(gateIDs))), Labels: labels})
		require.NoError(t, s.Err())
		return out.Loss
	}
	l0 := loss()
	before := s.Item(l0)
	s.Backward(l0)
	require.NoError(t, s.Err())
	ng := tensor.NoGradScope()
	for _, np := range m.TrainableParams() {
		g := ng.Grad(np.Param.T())
		require.NotNil(t, g, np.Name)
		gv := ng.Item(g)
		require.NotZero(t, gv, np.Name)
		ng.CopyInto(np.Param.T(), ng.AddScalar(np.Param.T(), -0.01*gv/abs(gv)))
	}
	require.NoError(t, ng.Err())
	ng.Close()
	after := s.Item(loss())
	require.Less(t, after, before)
	for _, np := range nn.NamedParams(m) {
		if np.Param.RequiresGrad() {
			require.Contains(t, np.Name, ".gate.", "only the gates train")
		}
	}
	trained := logits(t, s, m)
	require.Greater(t, maxAbs(want, trained), 1e-6)

	// merge: W ← (1+g) W gives the same logits; unmerge restores W
	q := peft.Tuners(m.Base())[0].Tuner.(*gate)
	w0 := s.Float32s(q.Base.Weight.T()) // a copy in Go memory
	gp, _ := q.G.Get("default")
	gq := s.Item(gp.T())
	require.NoError(t, m.Merge(true))
	require.Equal(t, []string{"default"}, q.Merged())
	w1 := s.Float32s(q.Base.Weight.T())
	for i := range w0 {
		require.InDelta(t, float64(w0[i])*(1+gq), float64(w1[i]), 1e-6)
	}
	require.Less(t, maxAbs(trained, logits(t, s, m)), 1e-5)
	require.NoError(t, m.Unmerge())
	require.Less(t, maxAbs(w0, s.Float32s(q.Base.Weight.T())), 1e-6)

	// a second adapter goes into the same layers (the update path)
	require.NoError(t, m.AddAdapter("other", &gateConfig{TargetModules: peft.TargetList("q_proj"), LayersToTransform: []int{1}}))
	require.Equal(t, []string{"default", "other"}, q.Adapters())
	oc, _ := m.Config("other")
	require.Equal(t, llamaTiny, oc.(*gateConfig).BaseModel, "AddAdapter fills base_model_name_or_path too")
	require.NoError(t, m.SetAdapter("default", "other"))
	require.Equal(t, []string{"default", "other"}, m.ActiveAdapters())
	require.Less(t, maxAbs(trained, logits(t, s, m)), 1e-6, "other's gate is 0")
	require.Len(t, m.TrainableParams(), 3, "both active adapters train")
	require.ErrorContains(t, m.AddAdapter("other", &gateConfig{TargetModules: peft.TargetList("q_proj")}), `adapter "other" already exists`)

	// save and reload through the registry, under another name
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	require.FileExists(t, filepath.Join(dir, "other", peft.ConfigName))
	raw, err := os.ReadFile(filepath.Join(dir, peft.ConfigName))
	require.NoError(t, err)
	require.Contains(t, string(raw), `"peft_type":"TOY_GATE"`)
	back, err := peft.Load(loadTiny(t), dir, peft.WithAdapterName("g"))
	require.NoError(t, err)
	require.Equal(t, []string{"g"}, back.ActiveAdapters())
	require.Empty(t, back.TrainableParams(), "loaded for inference by default")
	require.Less(t, maxAbs(trained, logits(t, s, back)), 1e-6)
	merged, err := back.MergeAndUnload()
	require.NoError(t, err)
	require.Less(t, maxAbs(trained, logits(t, s, merged)), 1e-5)
	tr, err := peft.Load(loadTiny(t), dir, peft.Trainable())
	require.NoError(t, err)
	require.Len(t, tr.TrainableParams(), 2)
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// The matching rules PEFT's check_target_module_exists has, and its error.
func TestInjectTargeting(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  *gateConfig
		want []string
	}{
		{"regex", &gateConfig{TargetModules: peft.TargetRegex(`.*layers\.0\.mlp\.(up|down)_proj`)},
			[]string{"model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"}},
		{"exclude", &gateConfig{TargetModules: peft.TargetList("q_proj"), ExcludeModules: peft.TargetList("layers.0.self_attn.q_proj")},
			[]string{"model.layers.1.self_attn.q_proj"}},
		{"all-linear", &gateConfig{TargetModules: peft.TargetRegex(peft.AllLinear), LayersToTransform: []int{0}},
			[]string{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj",
				"model.layers.0.self_attn.o_proj", "model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := peft.New(loadTiny(t), tc.cfg)
			require.NoError(t, err)
			require.ElementsMatch(t, tc.want, tunerPaths(m))
		})
	}
	_, err := peft.New(loadTiny(t), &gateConfig{TargetModules: peft.TargetList("nope")})
	require.ErrorContains(t, err, `Target modules ["nope"] not found in the base model. Please check the target modules and try again`)
	require.ErrorContains(t, err, "q_proj", "the error lists the candidates")
	_, err = peft.New(loadTiny(t), &gateConfig{TargetModules: peft.TargetList("embed_tokens")})
	require.ErrorContains(t, err, `"model.embed_tokens" is a Embedding, not a Linear`)
}

// A config that says nothing about what it does to the model is refused.
type bareConfig struct{}

func (bareConfig) PeftType() peft.PeftType      { return "BARE" }
func (bareConfig) TaskType() peft.TaskType      { return peft.CausalLM }
func (bareConfig) MarshalJSON() ([]byte, error) { return []byte(`{"peft_type":"BARE"}`), nil }

func TestConfigWithoutBehaviourIsRefused(t *testing.T) {
	_, err := peft.New(loadTiny(t), bareConfig{})
	require.ErrorContains(t, err, "implements none of peft.TunerConfig")
}
