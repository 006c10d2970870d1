package adaptionprompt

import (
	"fmt"
	"math"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// Attention is PEFT's AdaptedAttention: it wraps a decoder layer's
// attention module (child "model", as in PEFT) and holds each adapter's
// prompt (adaption_prompt.<adapter> [1, adapter_len, hidden]) and gate
// (adaption_gate.<adapter> [1]). It is a peft.Tuner and a
// models.AttentionWrapper. Forwards may run concurrently while the
// adapters do not change; changing them (SetActive, DeleteAdapter, …) is
// not safe for concurrent use.
type Attention struct {
	Model  nn.Layer      `nn:"model"`
	Prompt *nn.ParamDict `nn:"adaption_prompt"`
	Gate   *nn.ParamDict `nn:"adaption_gate"`

	active   []string
	disabled bool
}

func (*Attention) TypeName() string { return "AdaptedAttention" }

// ExtraRepr is empty: the children print themselves.
func (*Attention) ExtraRepr() string { return "" }

// CreateOrUpdate implements peft.TunerConfig: it wraps an attention module
// with a new Attention, or adds the adapter to the one already there. The
// prompt starts N(0, 1) (the official LLaMA-Adapter's embedding init), the
// gate at zero.
func (c *Config) CreateOrUpdate(t peft.Target) (peft.Tuner, error) {
	sized, ok := t.Model.(models.Sized)
	if !ok {
		return nil, fmt.Errorf("adaption prompt: model %s does not report its sizes (models.Sized)", nn.TypeName(t.Model))
	}
	hidden := sized.Dims().HiddenSize
	w, ok := t.Module.(*Attention)
	if !ok {
		base, isLayer := t.Module.(nn.Layer)
		if !isLayer {
			return nil, fmt.Errorf("adaption prompt: %q is a %s, not an attention layer", t.Path, nn.TypeName(t.Module))
		}
		if _, wrapped := t.Module.(models.AttentionWrapper); wrapped {
			return nil, fmt.Errorf("adaption prompt: %q is already wrapped by a %s", t.Path, nn.TypeName(t.Module))
		}
		w = &Attention{Model: base, Prompt: nn.NewParamDict(), Gate: nn.NewParamDict()}
	}
	s := tensor.NoGradScope()
	defer s.Close()
	p := s.Randn(tensor.Float32, 1, int64(c.AdapterLen), hidden)
	g := s.Zeros(tensor.Float32, 1)
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("adaption prompt: %s: %w", t.Path, err)
	}
	w.Prompt.Set(t.Adapter, nn.NewParam(s.Keep(p)))
	w.Gate.Set(t.Adapter, nn.NewParam(s.Keep(g)))
	return w, nil
}

// Forward implements nn.Layer: the wrapper runs inside its decoder layer
// (see AdaptAttention), never on its own.
func (a *Attention) Forward(s *tensor.Scope, _ *tensor.T) *tensor.T {
	return s.Failf("adaption prompt: AdaptedAttention runs inside its decoder layer (models.AttentionWrapper)")
}

// WrappedAttention implements models.AttentionWrapper.
func (a *Attention) WrappedAttention() nn.Module { return a.Model }

// AdaptAttention implements models.AttentionWrapper: out plus the active
// adapter's gated attention over its prompt (see the package comment).
func (a *Attention) AdaptAttention(s *tensor.Scope, st *models.AttentionState, out *tensor.T) *tensor.T {
	names, off := peft.CallAdapters(s, a.active, a.disabled)
	if off || out == nil {
		return out
	}
	if peft.CallRows(s) != nil {
		return s.Failf("adaption prompt: AdaptedAttention cannot run a different adapter per batch row (PEFT's adapter_names)")
	}
	var here []string
	for _, n := range names {
		if _, ok := a.Prompt.Get(n); ok {
			here = append(here, n)
		}
	}
	switch len(here) {
	case 0:
		return out
	case 1:
	default:
		return s.Failf("adaption prompt: one adapter runs at a time (PEFT's set_adapter takes one name), not %v", here)
	}
	if st.KProj == nil || st.VProj == nil || st.OProj == nil || st.Query == nil {
		return s.Failf("adaption prompt: the attention exposes no separate k_proj, v_proj and o_proj")
	}
	pp, _ := a.Prompt.Get(here[0])
	gp, _ := a.Gate.Get(here[0])
	q := st.Query // [B, H, L, D]
	dt := q.DType()
	prompt := pp.T()
	if prompt.DType() != dt {
		prompt = s.To(prompt, dt)
	}
	gate := gp.T()
	if gate.DType() != dt {
		gate = s.To(gate, dt)
	}
	B, L := out.Size(0), out.Size(1)
	H, KV, D, n := st.NumHeads, st.NumKVHeads, st.HeadDim, prompt.Size(1)
	// the adapter's keys and values: [1, kv_heads, n, D], repeated to the
	// query heads as repeat_interleave does (head h reads kv head h / rep)
	k := s.Transpose(s.View(st.KProj.Forward(s, prompt), 1, n, KV, D), 1, 2)
	v := s.Transpose(s.View(st.VProj.Forward(s, prompt), 1, n, KV, D), 1, 2)
	if s.Err() != nil {
		return nil
	}
	if H != KV {
		rep := H / KV
		k = s.Reshape(s.Expand(s.Unsqueeze(k, 2), 1, KV, rep, n, D), 1, H, n, D)
		v = s.Reshape(s.Expand(s.Unsqueeze(v, 2), 1, KV, rep, n, D), 1, H, n, D)
	}
	scores := s.DivScalar(s.Matmul(q, s.Transpose(k, 2, 3)), math.Sqrt(float64(D))) // [B, H, L, n]
	p := s.Softmax(scores, -1, tensor.Float32)
	if dt != tensor.Float32 {
		p = s.To(p, dt)
	}
	p = s.Mul(gate, p)
	o := s.Reshape(s.Transpose(s.Matmul(p, v), 1, 2), B, L, H*D)
	y := s.Add(out, st.OProj.Forward(s, o))
	if y != nil && y.DType() != out.DType() {
		y = s.To(y, out.DType())
	}
	return y
}

// BaseLayer implements peft.Tuner: the wrapped attention.
func (a *Attention) BaseLayer() nn.Layer { return a.Model }

// Adapters implements peft.Tuner.
func (a *Attention) Adapters() []string { return a.Prompt.Keys() }

// SetActive implements peft.Tuner.
func (a *Attention) SetActive(names []string) { a.active = append([]string(nil), names...) }

// SetDisabled implements peft.Tuner.
func (a *Attention) SetDisabled(off bool) { a.disabled = off }

// DeleteAdapter implements peft.Tuner.
func (a *Attention) DeleteAdapter(name string) {
	for _, d := range []*nn.ParamDict{a.Prompt, a.Gate} {
		if p, ok := d.Get(name); ok {
			p.Free()
			d.Delete(name)
		}
	}
}

// Merge implements peft.Tuner: adaption prompts are not weight deltas.
func (a *Attention) Merge(names []string, _ bool) error {
	if len(names) == 0 {
		return nil
	}
	return fmt.Errorf("adaption prompt adapters %v are %w: they add gated attention over learned prompts, not a weight delta (Unload gives the base model back)", names, peft.ErrNotMergeable)
}

// Unmerge implements peft.Tuner (nothing is ever merged).
func (a *Attention) Unmerge() error { return nil }

// Merged implements peft.Tuner (nothing is ever merged).
func (a *Attention) Merged() []string { return nil }

// AdapterState implements peft.Tuner: PEFT's saved names adaption_prompt
// and adaption_gate.
func (a *Attention) AdapterState(name string) []nn.NamedParam {
	p, ok := a.Prompt.Get(name)
	if !ok {
		return nil
	}
	g, _ := a.Gate.Get(name)
	return []nn.NamedParam{{Name: "adaption_prompt", Param: p}, {Name: "adaption_gate", Param: g}}
}

// SetTrainable implements peft.Tuner.
func (a *Attention) SetTrainable(name string, on bool) error {
	s := tensor.NewScope()
	defer s.Close()
	for _, d := range []*nn.ParamDict{a.Prompt, a.Gate} {
		if p, ok := d.Get(name); ok {
			s.SetRequiresGrad(p.T(), on)
		}
	}
	return s.Err()
}

var (
	_ peft.Tuner              = (*Attention)(nil)
	_ models.AttentionWrapper = (*Attention)(nil)
)
