// Package lokr is LoKr — low-rank Kronecker product adaptation (the
// LyCORIS project's LoKr, KronA) — as HF PEFT's LoKrConfig and LoKr layers
// implement it. Each wrapped Linear layer of in → out features gets
//
//	ΔW = kron(W1, W2) · alpha/r        W1 [a, c], W2 [b, d], a·b = out, c·d = in
//
// beside its frozen weight, y = W x + ΔW x. The widths are split by PEFT's
// factorization (decompose_factor; -1 splits near the square root); W2 is
// stored as a rank-r product lokr_w2_a · lokr_w2_b when r < max(b, d)/2
// and whole (lokr_w2) otherwise, and W1 likewise (lokr_w1_a · lokr_w1_b)
// with decompose_both. W1 starts at zero, so a new adapter leaves the
// model unchanged. In training, rank_dropout drops output rows of ΔW and
// module_dropout skips the adapter for a whole forward, as PEFT does. LoKr
// merges into the base weights.
//
// Adapters written by PEFT < 0.14 (no rank_dropout_scale in their
// adapter_config.json) are run as those versions ran them, without the
// alpha/r factor; see Config.UnscaledKron.
//
//	model, err := lokr.Wrap(base, &lokr.Config{R: 4, Alpha: 8, TargetModules: lokr.List("q_proj", "v_proj")})
//
// Adapters are read and written in PEFT's format (`…q_proj.lokr_w1`,
// `lokr_w2` or `lokr_w2_a`/`lokr_w2_b`, …). PEFT's Conv2d layers (and
// lokr_t2, use_effective_conv2d) have no counterpart in this library's
// models; use_effective_conv2d is read and kept.
package lokr

import (
	"fmt"

	"github.com/gopeft/peft/internal/lycoris"
	"github.com/gopeft/peft/internal/lycoris/factor"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// PeftType is the peft_type of LoKr adapters.
const PeftType peft.PeftType = "LOKR"

func init() { peft.Register(PeftType, Decode) }

// Wrap freezes base and adds cfg as adapter "default" (PEFT's get_peft_model).
func Wrap(base models.Model, cfg *Config) (*peft.Model, error) {
	return peft.New(base, cfg)
}

// Factorization is PEFT's factorization(dim, factor): dim split into two
// factors, (factor, dim/factor) when factor > 0 divides dim, else the pair
// closest to √dim whose smaller member is at most factor (-1: no limit),
// smaller first.
func Factorization(dim, f int) (int, int) { return factor.Factorization(dim, f) }

// DefaultTargets are current PEFT's default target_modules per model_type
// (TRANSFORMERS_MODELS_TO_LOKR_TARGET_MODULES_MAPPING, a copy of LoRA's).
// GPT-2's c_attn is a Conv1D, which LoKr does not wrap.
var DefaultTargets = map[string][]string{
	"llama": {"q_proj", "v_proj"}, "mistral": {"q_proj", "v_proj"}, "qwen2": {"q_proj", "v_proj"}, "qwen3": {"q_proj", "v_proj"},
	"gpt2": {"c_attn"}, "bloom": {"query_key_value"}, "bert": {"query", "value"},
	"gemma": {"q_proj", "v_proj"}, "gemma2": {"q_proj", "v_proj"}, "gemma3_text": {"q_proj", "v_proj"},
}

// Prepare implements peft.TunerConfig: PEFT's defaults, validation and
// the targeting ("all-linear" expanded; Save writes the expanded list).
func (c *Config) Prepare(model nn.Module) (peft.Targeting, error) {
	c.fillDefaults()
	if !c.TargetModules.IsSet() {
		mt := peft.ModelType(model)
		d, ok := DefaultTargets[mt]
		if !ok {
			return peft.Targeting{}, fmt.Errorf("lokr: field \"target_modules\" is not set and there is no default for model_type %q", mt)
		}
		c.TargetModules = List(d...)
	}
	if err := c.Validate(); err != nil {
		return peft.Targeting{}, fmt.Errorf("lokr: %w", err)
	}
	cm := c.common()
	tg := cm.Targeting(model)
	c.TargetModules = cm.TargetModules
	return tg, nil
}

// CreateOrUpdate implements peft.TunerConfig (PEFT's LoKrModel
// _create_and_replace): a Linear becomes a lokr.Linear; a lokr.Linear
// already there gets the adapter added. rank_pattern / alpha_pattern pick
// r and alpha.
func (c *Config) CreateOrUpdate(t peft.Target) (peft.Tuner, error) {
	cm := c.common()
	r, alpha := cm.RankAlpha(t.Path)
	layer, ok := t.Module.(*Linear)
	if !ok {
		l, err := lycoris.NewLayer(kronecker{}, t.Module, t.Path)
		if err != nil {
			return nil, err
		}
		layer = &Linear{Layer: l}
	}
	if err := layer.addAdapter(t.Adapter, r, alpha, c); err != nil {
		return nil, fmt.Errorf("lokr: %s: %w", t.Path, err)
	}
	return layer, nil
}

// Linear is PEFT's lokr.Linear: a Linear layer with LoKr adapters (see
// the package comment). Its children are base_layer and the
// ParameterDicts lokr_w1, lokr_w1_a, lokr_w1_b, lokr_w2, lokr_w2_a,
// lokr_w2_b (lokr_t2 stays empty: it is Conv2d's), keyed by adapter name.
// Concurrent forwards are safe while its adapters do not change.
type Linear struct {
	lycoris.Layer
}

func (*Linear) TypeName() string { return "lokr.Linear" }

// Layout is the adapter's factor shapes on this layer for rank r and the
// config's decompose_factor / decompose_both.
func (l *Linear) layout(r int, c *Config) factor.LoKr {
	in, out := l.InOut()
	return factor.LoKrLayout(int(in), int(out), r, c.DecomposeFactor, c.DecomposeBoth)
}

// addAdapter creates adapter name's parameters (PEFT's update_layer with
// reset_adapter_parameters, its "lycoris" variant, or its random variant
// for init_weights=false).
func (l *Linear) addAdapter(name string, r int, alpha float64, c *Config) error {
	if r <= 0 {
		return fmt.Errorf("r should be a positive integer, got %d", r)
	}
	lay := l.layout(r, c)
	rr := int64(r)
	init := c.InitWeights.Value
	if init == "" {
		init = "true"
	}
	s := tensor.NoGradScope()
	defer s.Close()
	// zero is what init_weights zeroes: W1's first factor (true) or W2's
	// last (lycoris); false zeroes nothing.
	mk := func(rows, cols int64, zero bool) *tensor.T {
		if zero {
			return s.Zeros(tensor.Float32, rows, cols)
		}
		return lycoris.KaimingUniform(s, rows, cols)
	}
	p := map[string]*tensor.T{}
	if lay.FullW1 {
		p["lokr_w1"] = mk(int64(lay.OutL), int64(lay.InM), init == "true")
	} else {
		p["lokr_w1_a"] = mk(int64(lay.OutL), rr, init == "true")
		p["lokr_w1_b"] = mk(rr, int64(lay.InM), false)
	}
	if lay.FullW2 {
		p["lokr_w2"] = mk(int64(lay.OutK), int64(lay.InN), init == "lycoris")
	} else {
		p["lokr_w2_a"] = mk(int64(lay.OutK), rr, false)
		p["lokr_w2_b"] = mk(rr, int64(lay.InN), init == "lycoris")
	}
	if err := s.Err(); err != nil {
		return err
	}
	for k, t := range p {
		p[k] = s.Keep(t)
	}
	scaling := alpha / float64(r)
	a := &lycoris.Adapter{R: r, Alpha: alpha, Scaling: scaling, DeltaScale: scaling,
		RankDropout: c.RankDropout, RankDropoutScale: c.RankDropoutScale, ModuleDropout: c.ModuleDropout}
	if c.UnscaledKron {
		a.DeltaScale, a.RankDropoutScale = 1, true
	}
	if err := l.AddAdapter(name, a, p); err != nil {
		for _, t := range p {
			t.Free()
		}
		return err
	}
	return nil
}

// kronecker is LoKr's ΔW.
type kronecker struct{}

func (kronecker) Name() string { return "LoKr" }

func (kronecker) ParamNames() []string {
	return []string{"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"}
}

// Delta is kron(W1, W2) · scale (PEFT's make_kron), W1 and W2 whole or
// low-rank products.
func (kronecker) Delta(s *tensor.Scope, a *lycoris.Adapter, p func(string) *tensor.T) *tensor.T {
	w1 := p("lokr_w1")
	if w1 == nil {
		w1 = s.Matmul(p("lokr_w1_a"), p("lokr_w1_b"))
	}
	w2 := p("lokr_w2")
	if w2 == nil {
		w2 = s.Matmul(p("lokr_w2_a"), p("lokr_w2_b"))
	}
	d := Kron(s, w1, w2)
	if a.DeltaScale != 1 {
		d = s.MulScalar(d, a.DeltaScale)
	}
	return d
}

// Kron is the Kronecker product of two matrices, A [a, c] ⊗ B [b, d] =
// [a·b, c·d] with (i·b+k, j·d+l) = A[i, j]·B[k, l] (torch.kron), computed
// as a broadcast product so autograd reaches both factors.
func Kron(s *tensor.Scope, a, b *tensor.T) *tensor.T {
	if a == nil || b == nil {
		return nil // the scope holds the error
	}
	as, bs := a.Shape(), b.Shape()
	if len(as) != 2 || len(bs) != 2 {
		return s.Failf("lokr: Kron needs two matrices, got shapes %v and %v", as, bs)
	}
	prod := s.Mul(s.Reshape(a, as[0], 1, as[1], 1), s.Reshape(b, 1, bs[0], 1, bs[1]))
	return s.Reshape(prod, as[0]*bs[0], as[1]*bs[1])
}
