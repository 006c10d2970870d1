// Package vera is VeRA — Vector-based Random Matrix Adaptation (Kopiczko
// et al. 2024) — as HF PEFT 0.13.2's VeraConfig and VeRA layers implement
// it: one pair of frozen random projections, vera_A [r, in] and vera_B
// [out, r], is shared by every adapted layer (each uses its top-left
// corner; they are drawn kaiming-uniform at the largest targeted shape),
// and each layer trains only two vectors, vera_lambda_d [r] and
// vera_lambda_b [out]:
//
//	y = W x + λ_b ⊙ B (λ_d ⊙ A x)
//
// λ_b starts at zero, so a new adapter leaves the model unchanged. With r
// = 256 a layer trains out + 256 numbers, far fewer than LoRA. VeRA
// merges into the base weights like LoRA.
//
// The projections come from torch's CPU generator seeded with
// projection_prng_key; this package draws them with the same generator in
// pure Go (internal/torchrand), bit for bit, so an adapter saved with
// save_projection=false (no vera_A/vera_B in the file) loads to PEFT's
// projections too. With save_projection (the default) they are saved as
// base_model.vera_A / base_model.vera_B, as PEFT does.
//
// Each adapter of a model holds its own projections, drawn from its own
// key at the largest shape its targets need (PEFT 0.13.2 keeps one pair
// per adapter too but requires every adapter of a model to have the same
// projection_prng_key; here adapters with different keys coexist).
//
//	model, err := vera.Wrap(base, &vera.Config{R: 16, TargetModules: peft.TargetList("q_proj", "v_proj")})
package vera

import (
	"fmt"

	"github.com/gopeft/peft/internal/torchrand"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

func init() { peft.Register(PeftType, Decode) }

// Wrap freezes base and adds cfg as adapter "default" (PEFT's get_peft_model).
func Wrap(base models.Model, cfg *Config) (*peft.Model, error) {
	return peft.New(base, cfg)
}

// DefaultTargets are PEFT's default target_modules per model_type
// (TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING, the families this
// library loads).
var DefaultTargets = map[string][]string{
	"llama": {"q_proj", "v_proj"}, "mistral": {"q_proj", "v_proj"}, "qwen2": {"q_proj", "v_proj"},
	"gemma": {"q_proj", "v_proj"}, "gemma2": {"q_proj", "v_proj"}, "phi3": {"qkv_proj"},
	"bloom": {"query_key_value"}, "gpt2": {"c_attn"}, "bert": {"query", "value"},
}

// Prepare implements peft.TunerConfig (PEFT's _prepare_adapter_config and
// _pre_injection_hook): unset target_modules take PEFT's default for the
// model type, and the adapter's projections are drawn at the largest
// [out, in] of the targeted Linear/Conv1D layers.
func (c *Config) Prepare(model nn.Module) (peft.Targeting, error) {
	if c.Task == "" {
		c.Task = peft.CausalLM
	}
	if !c.TargetModules.IsSet() {
		mt := peft.ModelType(model)
		d, ok := DefaultTargets[mt]
		if !ok {
			return peft.Targeting{}, fmt.Errorf("vera: no target_modules given and no default for model_type %q", mt)
		}
		c.TargetModules = peft.TargetList(d...)
	}
	if err := c.Validate(); err != nil {
		return peft.Targeting{}, fmt.Errorf("vera: %w", err)
	}
	if !c.saveProjection() && c.ProjectionPRNGKey < 0 {
		return peft.Targeting{}, fmt.Errorf("vera: field \"projection_prng_key\": %d: save_projection=false needs a non-negative key to draw PEFT's projections again", c.ProjectionPRNGKey)
	}
	c.TargetModules = peft.ExpandAllLinear(model, c.TargetModules)
	tg := peft.Targeting{TargetModules: c.TargetModules, LayersToTransform: c.LayersToTransform,
		LayersPattern: c.LayersPattern, ModulesToSave: c.ModulesToSave_}
	c.proj = nil
	var maxOut, maxIn int64
	var dev tensor.Device
	found := false
	_ = nn.Walk(model, func(path string, m nn.Module) error {
		if path == "" || !tg.Match(path) {
			return nil
		}
		var base nn.Layer
		switch t := m.(type) {
		case *Linear:
			base = t.Base
		case *nn.Linear, *nn.Conv1D:
			base = t.(nn.Layer)
		default:
			return nil
		}
		out, in, err := layerShape(base)
		if err != nil {
			return nil
		}
		if !found {
			w, _, _ := baseWeight(base)
			dev = w.T().Device()
		}
		found = true
		maxOut, maxIn = max(maxOut, out), max(maxIn, in)
		return nil
	})
	if !found { // nothing to adapt: InjectAdapter or CreateOrUpdate say why
		return tg, nil
	}
	p, err := newProjections(c.ProjectionPRNGKey, int64(c.rank()), maxOut, maxIn, dev)
	if err != nil {
		return peft.Targeting{}, fmt.Errorf("vera: projections: %w", err)
	}
	p.save = c.saveProjection()
	c.proj = p
	return tg, nil
}

// newProjections draws vera_A [r, in] then vera_B [out, r] as PEFT's
// _init_vera_A_vera_B does: kaiming-uniform from one CPU generator seeded
// with key.
func newProjections(key, r, out, in int64, dev tensor.Device) (*projections, error) {
	g := torchrand.New(uint64(key))
	a := g.KaimingUniform(int(r), int(in))
	b := g.KaimingUniform(int(out), int(r))
	s := tensor.NoGradScope()
	defer s.Close()
	s.SetDevice(dev)
	at, bt := s.FromFloat32(a, r, in), s.FromFloat32(b, out, r)
	if err := s.Err(); err != nil {
		return nil, err
	}
	return &projections{A: nn.NewParam(s.Keep(at)), B: nn.NewParam(s.Keep(bt))}, nil
}

// CreateOrUpdate implements peft.TunerConfig (PEFT's _create_and_replace):
// a Linear or Conv1D becomes a vera.Linear; a vera.Linear already there
// gets the adapter added.
func (c *Config) CreateOrUpdate(t peft.Target) (peft.Tuner, error) {
	var layer *Linear
	switch m := t.Module.(type) {
	case *Linear:
		layer = m
	case *nn.Linear, *nn.Conv1D:
		var err error
		if layer, err = newLinear(m.(nn.Layer)); err != nil {
			return nil, fmt.Errorf("vera: %s: %w", t.Path, err)
		}
	default:
		return nil, fmt.Errorf("vera: target module %q is a %s; VeRA supports Linear and Conv1D layers", t.Path, nn.TypeName(t.Module))
	}
	if c.proj == nil {
		return nil, fmt.Errorf("vera: %s: the adapter's projections were not made (Prepare found no Linear or Conv1D target)", t.Path)
	}
	if err := layer.addAdapter(t.Adapter, c, c.proj); err != nil {
		return nil, fmt.Errorf("vera: %s: %w", t.Path, err)
	}
	return layer, nil
}
