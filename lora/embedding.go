package lora

import (
	"fmt"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// Embedding is a LoRA layer around an nn.Embedding (PEFT's lora.Embedding):
// y = E[x] + (A_eᵀ[x] · B_eᵀ)·scaling with A_e [r, num_embeddings] and
// B_e [embedding_dim, r]. PEFT initialises A_e to zero and B_e from N(0, 1)
// (the roles of A and B are swapped relative to Linear).
type Embedding struct {
	Base *nn.Embedding `nn:"base_layer"`
	A    *nn.ParamDict `nn:"lora_embedding_A"`
	B    *nn.ParamDict `nn:"lora_embedding_B"`

	scaling  map[string]float64
	active   []string
	disabled bool
	merged   []string
}

func (*Embedding) TypeName() string { return "lora.Embedding" }

func newEmbedding(base *nn.Embedding) *Embedding {
	return &Embedding{Base: base, A: nn.NewParamDict(), B: nn.NewParamDict(), scaling: map[string]float64{}}
}

func (e *Embedding) addAdapter(name string, r int, alpha float64, cfg *Config) error {
	// PEFT's Embedding runs its usual init for pissa/olora (they read no
	// weight there) and breaks on loftq (it sets .weight on a Parameter)
	if kind, _, err := parseInit(cfg.InitLoraWeights.Value); err != nil {
		return err
	} else if kind == initLoftQ {
		return fmt.Errorf("init_lora_weights \"loftq\" on an Embedding is not supported")
	}
	sh := e.Base.Weight.Shape()
	num, dim := sh[0], sh[1]
	s := tensor.NoGradScope()
	defer s.Close()
	var a, b *tensor.T
	if cfg.InitLoraWeights.Value == "false" {
		a, b = s.Randn(tensor.Float32, int64(r), num), s.Randn(tensor.Float32, dim, int64(r))
	} else {
		a, b = s.Zeros(tensor.Float32, int64(r), num), s.Randn(tensor.Float32, dim, int64(r))
	}
	if err := s.Err(); err != nil {
		return err
	}
	e.A.Set(name, nn.NewParam(s.Keep(a)))
	e.B.Set(name, nn.NewParam(s.Keep(b)))
	e.scaling[name] = cfg.Scaling(r, alpha)
	return nil
}

// Forward implements nn.Layer.
func (e *Embedding) Forward(s *tensor.Scope, ids *tensor.T) *tensor.T {
	y := e.Base.Forward(s, ids)
	if len(e.merged) > 0 {
		return mergedCall(s, "lora.Embedding", e.merged, y)
	}
	names, off := peft.CallAdapters(s, e.active, e.disabled)
	if off {
		return y
	}
	rows := peft.CallRows(s)
	if rows != nil {
		return e.mixedForward(s, ids, y, rows)
	}
	for _, name := range names {
		a, ok := e.A.Get(name)
		if !ok {
			continue
		}
		b, _ := e.B.Get(name)
		after := s.Embedding(s.Transpose(a.T(), 0, 1), ids) // [.., r]
		y = s.Add(y, s.MulScalar(s.Matmul(after, s.Transpose(b.T(), 0, 1)), e.scaling[name]))
	}
	return y
}

// delta is (B_e A_e)ᵀ·scaling, [num_embeddings, embedding_dim].
func (e *Embedding) delta(s *tensor.Scope, name string) *tensor.T {
	a, _ := e.A.Get(name)
	b, _ := e.B.Get(name)
	return s.MulScalar(s.Transpose(s.Matmul(b.T(), a.T()), 0, 1), e.scaling[name])
}

// Merge folds adapters into the embedding table.
func (e *Embedding) Merge(names []string, safe bool) error {
	s := tensor.NoGradScope()
	defer s.Close()
	for _, name := range names {
		if _, ok := e.A.Get(name); !ok {
			continue
		}
		nw := s.Contiguous(s.Add(e.Base.Weight.T(), e.delta(s, name)))
		if err := s.Err(); err != nil {
			return err
		}
		if safe {
			if err := peft.CheckFinite(s, nw, fmt.Sprintf("adapter %q", name)); err != nil {
				return err
			}
		}
		e.Base.Weight.Set(s.Keep(nw))
		e.merged = append(e.merged, name)
	}
	return s.Err()
}

// Unmerge subtracts merged adapters, last first.
func (e *Embedding) Unmerge() error {
	s := tensor.NoGradScope()
	defer s.Close()
	for len(e.merged) > 0 {
		name := e.merged[len(e.merged)-1]
		nw := s.Contiguous(s.Sub(e.Base.Weight.T(), e.delta(s, name)))
		if err := s.Err(); err != nil {
			return err
		}
		e.Base.Weight.Set(s.Keep(nw))
		e.merged = e.merged[:len(e.merged)-1]
	}
	return s.Err()
}

func (e *Embedding) BaseLayer() nn.Layer      { return e.Base }
func (e *Embedding) Adapters() []string       { return e.A.Keys() }
func (e *Embedding) SetActive(names []string) { e.active = append([]string(nil), names...) }
func (e *Embedding) Merged() []string         { return append([]string(nil), e.merged...) }

// SetDisabled turns the adapters off; a merged layer is unmerged first.
func (e *Embedding) SetDisabled(off bool) {
	if off && len(e.merged) > 0 {
		_ = e.Unmerge()
	}
	e.disabled = off
}

// DeleteAdapter drops an adapter's parameters.
func (e *Embedding) DeleteAdapter(name string) {
	e.A.Delete(name)
	e.B.Delete(name)
	delete(e.scaling, name)
}

// AdapterState lists the adapter's tensors under PEFT's file names.
func (e *Embedding) AdapterState(name string) []nn.NamedParam {
	a, ok := e.A.Get(name)
	if !ok {
		return nil
	}
	b, _ := e.B.Get(name)
	return []nn.NamedParam{{Name: "lora_embedding_A", Param: a}, {Name: "lora_embedding_B", Param: b}}
}

// SetTrainable marks the adapter's parameters trainable or frozen.
func (e *Embedding) SetTrainable(name string, on bool) error {
	s := tensor.NewScope()
	defer s.Close()
	for _, np := range e.AdapterState(name) {
		s.SetRequiresGrad(np.Param.T(), on)
	}
	return s.Err()
}
