// Package loha is LoHa — low-rank Hadamard product adaptation (FedPara,
// Hyeon-Woo et al. 2022, as the LyCORIS project uses it) — as HF PEFT's
// LoHaConfig and LoHa layers implement it. Each wrapped Linear layer gets
//
//	ΔW = (hada_w1_a · hada_w1_b) ⊙ (hada_w2_a · hada_w2_b) · alpha/r
//
// beside its frozen weight, y = W x + ΔW x: two rank-r products multiplied
// element-wise, so the update can reach rank r² with 2·r·(in+out)
// parameters. hada_w2_b starts at zero, so a new adapter leaves the model
// unchanged. In training, rank_dropout drops output rows of ΔW (the kept
// ones rescaled by the kept share) and module_dropout skips the adapter
// for a whole forward, as PEFT does. LoHa merges into the base weights.
//
//	model, err := loha.Wrap(base, &loha.Config{R: 4, Alpha: 8, TargetModules: loha.List("q_proj", "v_proj")})
//
// Adapters are read and written in PEFT's format (`…q_proj.hada_w1_a`
// [out, r], `hada_w1_b` [r, in], `hada_w2_a`, `hada_w2_b`). PEFT's Conv2d
// layers (and hada_t1/hada_t2, use_effective_conv2d) have no counterpart
// in this library's models; use_effective_conv2d is read and kept.
package loha

import (
	"fmt"

	"github.com/gopeft/peft/internal/lycoris"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// PeftType is the peft_type of LoHa adapters.
const PeftType peft.PeftType = "LOHA"

func init() { peft.Register(PeftType, Decode) }

// Wrap freezes base and adds cfg as adapter "default" (PEFT's get_peft_model).
func Wrap(base models.Model, cfg *Config) (*peft.Model, error) {
	return peft.New(base, cfg)
}

// DefaultTargets are current PEFT's default target_modules per model_type
// (TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING, a copy of LoRA's).
// GPT-2's c_attn is a Conv1D, which LoHa does not wrap.
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
			return peft.Targeting{}, fmt.Errorf("loha: field \"target_modules\" is not set and there is no default for model_type %q", mt)
		}
		c.TargetModules = List(d...)
	}
	cm := c.common()
	if err := cm.Validate(); err != nil {
		return peft.Targeting{}, fmt.Errorf("loha: %w", err)
	}
	tg := cm.Targeting(model)
	c.TargetModules = cm.TargetModules
	return tg, nil
}

// CreateOrUpdate implements peft.TunerConfig (PEFT's LoHaModel
// _create_and_replace): a Linear becomes a loha.Linear; a loha.Linear
// already there gets the adapter added. rank_pattern / alpha_pattern pick
// r and alpha.
func (c *Config) CreateOrUpdate(t peft.Target) (peft.Tuner, error) {
	cm := c.common()
	r, alpha := cm.RankAlpha(t.Path)
	layer, ok := t.Module.(*Linear)
	if !ok {
		l, err := lycoris.NewLayer(hadamard{}, t.Module, t.Path)
		if err != nil {
			return nil, err
		}
		layer = &Linear{Layer: l}
	}
	if err := layer.addAdapter(t.Adapter, r, alpha, c); err != nil {
		return nil, fmt.Errorf("loha: %s: %w", t.Path, err)
	}
	return layer, nil
}

// Linear is PEFT's loha.Linear: a Linear layer with LoHa adapters (see
// the package comment). Its children are base_layer and the
// ParameterDicts hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b (hada_t1,
// hada_t2 stay empty: they are Conv2d's), keyed by adapter name.
// Concurrent forwards are safe while its adapters do not change.
type Linear struct {
	lycoris.Layer
}

func (*Linear) TypeName() string { return "loha.Linear" }

// addAdapter creates adapter name's parameters (PEFT's update_layer with
// reset_adapter_parameters, or its random variant for init_weights=false).
func (l *Linear) addAdapter(name string, r int, alpha float64, c *Config) error {
	if r <= 0 {
		return fmt.Errorf("r should be a positive integer, got %d", r)
	}
	in, out := l.InOut()
	rr := int64(r)
	s := tensor.NoGradScope()
	defer s.Close()
	p := map[string]*tensor.T{
		"hada_w1_a": lycoris.KaimingUniform(s, out, rr),
		"hada_w1_b": lycoris.KaimingUniform(s, rr, in),
		"hada_w2_a": lycoris.KaimingUniform(s, out, rr),
	}
	if c.InitWeights.IsTrue() {
		p["hada_w2_b"] = s.Zeros(tensor.Float32, rr, in)
	} else {
		p["hada_w2_b"] = lycoris.KaimingUniform(s, rr, in)
	}
	if err := s.Err(); err != nil {
		return err
	}
	for k, t := range p {
		p[k] = s.Keep(t)
	}
	scaling := alpha / float64(r)
	a := &lycoris.Adapter{R: r, Alpha: alpha, Scaling: scaling, DeltaScale: scaling,
		RankDropout: c.RankDropout, RankDropoutScale: true, ModuleDropout: c.ModuleDropout}
	if err := l.AddAdapter(name, a, p); err != nil {
		for _, t := range p {
			t.Free()
		}
		return err
	}
	return nil
}

// hadamard is LoHa's ΔW.
type hadamard struct{}

func (hadamard) Name() string { return "LoHa" }

func (hadamard) ParamNames() []string {
	return []string{"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"}
}

// Delta is (w1_a·w1_b) ⊙ (w2_a·w2_b) · scale (PEFT's make_weight).
func (hadamard) Delta(s *tensor.Scope, a *lycoris.Adapter, p func(string) *tensor.T) *tensor.T {
	w1 := s.Matmul(p("hada_w1_a"), p("hada_w1_b"))
	w2 := s.Matmul(p("hada_w2_a"), p("hada_w2_b"))
	return s.MulScalar(s.Mul(w1, w2), a.DeltaScale)
}
