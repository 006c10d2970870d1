// Package lora is LoRA for the library (HF PEFT's LoraConfig and LoRA
// layers): low-rank matrices A [r, in] and B [out, r] beside a frozen
// weight, y = W x + (α/r)·B A x, with rsLoRA (α/√r), DoRA (a learned
// magnitude per output row), bias policies, modules_to_save, and exact
// merge/unmerge into the base weights. Reparameterization in the seed
// notes' taxonomy: it trains ~0.1–1% of the parameters and merges away.
//
//	model, err := lora.Wrap(base, &lora.Config{R: 8, LoraAlpha: 16, TargetModules: lora.List("q_proj", "v_proj")})
//
// Adapters are read and written in PEFT's format (see package peft), so
// an adapter trained with Python PEFT loads here and the other way round.
//
// init_lora_weights also takes PEFT's data-dependent inits, which read the
// base weight and rewrite it: "pissa" / "pissa_niter_N", "olora" and
// "loftq" (see init.go and loftq.go); SaveConverted turns a trained
// PiSSA/OLoRA adapter into a plain LoRA for the original base.
package lora

import (
	"fmt"
	"math"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/nn/quant"
	"github.com/gopeft/peft/peft"
)

func init() { peft.Register(peft.LoRA, Decode) }

// Wrap freezes base and adds cfg as adapter "default" (PEFT's get_peft_model).
func Wrap(base models.CausalLM, cfg *Config) (*peft.Model, error) {
	return peft.New(base, cfg)
}

// DefaultTargets are PEFT's default target_modules per model_type.
var DefaultTargets = map[string][]string{
	"llama": {"q_proj", "v_proj"}, "mistral": {"q_proj", "v_proj"}, "qwen2": {"q_proj", "v_proj"}, "qwen3": {"q_proj", "v_proj"},
	"gpt2": {"c_attn"}, "bloom": {"query_key_value"}, "bert": {"query", "value"},
	"gemma": {"q_proj", "v_proj"}, "gemma2": {"q_proj", "v_proj"}, "gemma3_text": {"q_proj", "v_proj"},
}

// Inject adds adapter name to a module tree outside a peft.Model (what
// peft.New and Model.AddAdapter do through peft.InjectAdapter).
func (c *Config) Inject(model nn.Module, name string) error {
	return peft.InjectAdapter(model, name, c)
}

// Prepare implements peft.TunerConfig: PEFT's defaults (target_modules for
// the model_type, "all-linear" expanded), validation, and the targeting.
func (c *Config) Prepare(model nn.Module) (peft.Targeting, error) {
	c.fillDefaults()
	if err := c.Validate(); err != nil {
		return peft.Targeting{}, fmt.Errorf("lora: %w", err)
	}
	if !c.TargetModules.IsSet() {
		mt := peft.ModelType(model)
		d, ok := DefaultTargets[mt]
		if !ok {
			return peft.Targeting{}, fmt.Errorf("lora: no target_modules given and no default for model_type %q", mt)
		}
		c.TargetModules = List(d...)
	}
	c.TargetModules = peft.ExpandAllLinear(model, c.TargetModules)
	return peft.Targeting{
		TargetModules: c.TargetModules, ExcludeModules: c.ExcludeModules,
		LayersToTransform: c.LayersToTransform, LayersPattern: c.LayersPattern,
		ModulesToSave: c.ModulesToSave_,
	}, nil
}

// CreateOrUpdate implements peft.TunerConfig (PEFT's LoraModel
// _create_and_replace): a Linear, Conv1D or 4-bit Linear (QLoRA) becomes a
// lora.Linear, an Embedding a lora.Embedding; a LoRA layer already there
// gets the adapter added. rank_pattern / alpha_pattern pick r and alpha.
func (c *Config) CreateOrUpdate(t peft.Target) (peft.Tuner, error) {
	r, alpha := c.R, c.LoraAlpha
	if v, ok := c.RankPattern.Lookup(t.Path); ok {
		r = int(v)
	}
	if v, ok := c.AlphaPattern.Lookup(t.Path); ok {
		alpha = v
	}
	switch m := t.Module.(type) {
	case *nn.Embedding, *Embedding:
		if c.UseDoRA {
			return nil, fmt.Errorf("lora: %q: DoRA on an Embedding is not supported", t.Path)
		}
		layer, ok := m.(*Embedding)
		if !ok {
			layer = newEmbedding(m.(*nn.Embedding))
		}
		if err := layer.addAdapter(t.Adapter, r, alpha, c); err != nil {
			return nil, fmt.Errorf("lora: %s: %w", t.Path, err)
		}
		return layer, nil
	}
	var layer *Linear
	switch m := t.Module.(type) {
	case *Linear:
		layer = m
	case *nn.Linear, *nn.Conv1D, *quant.Linear: // a 4-bit base makes it QLoRA
		layer = newLinear(m.(nn.Layer))
	default:
		return nil, fmt.Errorf("lora: target module %q is a %s; LoRA supports Linear and Conv1D layers", t.Path, nn.TypeName(t.Module))
	}
	if err := layer.addAdapter(t.Adapter, r, alpha, c); err != nil {
		return nil, fmt.Errorf("lora: %s: %w", t.Path, err)
	}
	return layer, nil
}

// SetFanInFanOut implements peft.FanInFanOutConfig.
func (c *Config) SetFanInFanOut(on bool) { c.FanInFanOut = on }

func (c *Config) fillDefaults() {
	if c.R == 0 {
		c.R = 8
	}
	if c.LoraAlpha == 0 {
		c.LoraAlpha = 8
	}
	if c.Bias == "" {
		c.Bias = "none"
	}
	if c.InitLoraWeights.Value == "" {
		c.InitLoraWeights.Value = "true"
	}
	if c.Task == "" {
		c.Task = peft.CausalLM
	}
	if c.RankPattern.Values == nil {
		c.RankPattern.Values = map[string]float64{}
	}
	if c.AlphaPattern.Values == nil {
		c.AlphaPattern.Values = map[string]float64{}
	}
}

func sqrt(x float64) float64 { return math.Sqrt(x) }
