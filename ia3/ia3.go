// Package ia3 is (IA)³ — "Infused Adapter by Inhibiting and Amplifying
// Inner Activations" (Liu et al. 2022, the T-Few recipe) — as HF PEFT's
// IA3Config and IA3 layers implement it: a learned vector, initialised to
// ones, rescales the output of the attention key/value projections and the
// input of the feed-forward output projection (`feedforward_modules`), so a
// wrapped model starts exactly equal to its base.
//
// In the seed notes' taxonomy IA3 is its own kind, rescaling: additive in
// spirit (it adds parameters, ~0.01% of the model) but, like LoRA, it folds
// into the base weights (Merge multiplies rows or columns of W) and then
// costs nothing at inference. Defaults per model family follow PEFT
// (llama: k_proj, v_proj, down_proj; bloom: query_key_value,
// mlp.dense_4h_to_h), and adapters are read and written in PEFT's format
// (`…k_proj.ia3_l` [out, 1], `…down_proj.ia3_l` [1, in]).
//
//	model, err := ia3.Wrap(base, &ia3.Config{})   // PEFT's defaults for the model type
//
// The package also has T-Few's training objective for multiple-choice data
// (TFewLoss: language-model loss on the right answer + unlikelihood loss on
// the wrong ones + length-normalized softmax loss over the choices) and rank
// classification with length normalization (RankClassify).
package ia3

import (
	"fmt"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

func init() { peft.Register(peft.IA3, Decode) }

// Wrap freezes base and adds cfg as adapter "default" (PEFT's get_peft_model).
func Wrap(base models.CausalLM, cfg *Config) (*peft.Model, error) {
	return peft.New(base, cfg)
}

// DefaultTargets are PEFT's default target_modules per model_type
// (TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING).
var DefaultTargets = map[string][]string{
	"llama": {"k_proj", "v_proj", "down_proj"}, "mistral": {"k_proj", "v_proj", "down_proj"},
	"qwen2": {"q_proj", "v_proj", "down_proj"}, "bloom": {"query_key_value", "mlp.dense_4h_to_h"},
	"gpt2": {"c_attn", "mlp.c_proj"}, "bert": {"key", "value", "output.dense"},
	"t5": {"k", "v", "wo"}, "gpt_neox": {"query_key_value", "dense_4h_to_h"},
	"falcon": {"query_key_value", "dense_4h_to_h"}, "opt": {"q_proj", "k_proj", "fc2"}, "qwen3": {"q_proj", "v_proj", "down_proj"},
	"gemma": {"q_proj", "v_proj", "down_proj"}, "gemma2": {"q_proj", "v_proj", "down_proj"}, "gemma3_text": {"q_proj", "v_proj", "down_proj"},
}

// DefaultFeedforward are PEFT's default feedforward_modules per model_type
// (TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING).
var DefaultFeedforward = map[string][]string{
	"llama": {"down_proj"}, "mistral": {"down_proj"}, "qwen2": {"down_proj"},
	"bloom": {"mlp.dense_4h_to_h"}, "gpt2": {"mlp.c_proj"}, "bert": {"output.dense"},
	"t5": {"wo"}, "gpt_neox": {"dense_4h_to_h"}, "falcon": {"dense_4h_to_h"}, "opt": {"fc2"}, "qwen3": {"down_proj"},
	"gemma": {"down_proj"}, "gemma2": {"down_proj"}, "gemma3_text": {"down_proj"},
}

// Prepare implements peft.TunerConfig: unset target_modules /
// feedforward_modules take PEFT's defaults for the model type, and the
// filled-in values are what Save writes (as PEFT does).
func (c *Config) Prepare(model nn.Module) (peft.Targeting, error) {
	if c.Task == "" {
		c.Task = peft.CausalLM
	}
	mt := peft.ModelType(model)
	if !c.TargetModules.IsSet() {
		d, ok := DefaultTargets[mt]
		if !ok {
			return peft.Targeting{}, fmt.Errorf("ia3: no target_modules given and no default for model_type %q", mt)
		}
		c.TargetModules = List(d...)
	}
	if err := c.Validate(); err != nil {
		return peft.Targeting{}, fmt.Errorf("ia3: %w", err)
	}
	if !c.FeedforwardModules.IsSet() {
		d, ok := DefaultFeedforward[mt]
		if !ok {
			return peft.Targeting{}, fmt.Errorf("ia3: no feedforward_modules given and no default for model_type %q", mt)
		}
		// PEFT fills the whole default even when it is not a subset of a
		// list target_modules, and then cannot load the config it saved;
		// keep only the defaults that are targets.
		ff := []string{}
		for _, f := range d {
			if c.TargetModules.Regex != "" || contains(c.TargetModules.List, f) {
				ff = append(ff, f)
			}
		}
		c.FeedforwardModules = List(ff...)
	}
	// after the defaults, as PEFT's inject_adapter; the saved config lists the layers
	c.TargetModules = peft.ExpandAllLinear(model, c.TargetModules)
	return peft.Targeting{TargetModules: c.TargetModules, ExcludeModules: c.ExcludeModules, ModulesToSave: c.ModulesToSave_}, nil
}

// CreateOrUpdate implements peft.TunerConfig (PEFT's IA3Model
// _create_and_replace): a Linear or Conv1D becomes an ia3.Linear scaling
// its output (or, for feedforward_modules, its input); an ia3.Linear
// already there gets the adapter added.
func (c *Config) CreateOrUpdate(t peft.Target) (peft.Tuner, error) {
	ff := matchesFeedforward(c.FeedforwardModules, t.Path)
	var layer *Linear
	switch m := t.Module.(type) {
	case *Linear:
		layer = m
		if layer.feedforward != ff {
			return nil, fmt.Errorf("ia3: %q: adapter %q treats it as feedforward=%v, an earlier adapter as feedforward=%v", t.Path, t.Adapter, ff, layer.feedforward)
		}
	case *nn.Linear, *nn.Conv1D:
		layer = newLinear(m.(nn.Layer), ff)
	default:
		return nil, fmt.Errorf("ia3: target module %q is a %s; IA3 supports Linear and Conv1D layers", t.Path, nn.TypeName(t.Module))
	}
	if err := layer.addAdapter(t.Adapter, c.initOnes()); err != nil {
		return nil, fmt.Errorf("ia3: %s: %w", t.Path, err)
	}
	return layer, nil
}

// SetFanInFanOut implements peft.FanInFanOutConfig.
func (c *Config) SetFanInFanOut(on bool) { c.FanInFanOut = on }

// AddWeightedAdapter adds adapter newName whose vectors are Σ wᵢ·lᵢ over
// the given adapters (PEFT's IA3 add_weighted_adapter, linear combination
// only). The adapters must have the same targets; the new adapter takes the
// first one's config and is not active.
func AddWeightedAdapter(m *peft.Model, adapters []string, weights []float64, newName string) error {
	if len(adapters) == 0 || len(adapters) != len(weights) {
		return fmt.Errorf("ia3: %d adapters and %d weights (need the same non-zero number)", len(adapters), len(weights))
	}
	first, ok := m.Config(adapters[0])
	if !ok {
		return fmt.Errorf("ia3: no adapter %q", adapters[0])
	}
	fc, ok := first.(*Config)
	if !ok {
		return fmt.Errorf("ia3: adapter %q is a %s adapter", adapters[0], first.PeftType())
	}
	for _, a := range adapters[1:] {
		c, ok := m.Config(a)
		if !ok {
			return fmt.Errorf("ia3: no adapter %q", a)
		}
		if _, ok := c.(*Config); !ok {
			return fmt.Errorf("ia3: adapter %q is a %s adapter", a, c.PeftType())
		}
	}
	cfg := *fc
	cfg.raw = fc.raw
	if err := m.AddAdapter(newName, &cfg); err != nil {
		return err
	}
	var err error
	for _, at := range peft.Tuners(m.Base()) {
		l, ok := at.Tuner.(*Linear)
		if !ok {
			continue
		}
		if dst, ok := l.L.Get(newName); ok {
			if err = weightedSum(l, dst, adapters, weights); err != nil {
				err = fmt.Errorf("ia3: %s: %w", at.Path, err)
				break
			}
		}
	}
	if err != nil {
		_ = m.DeleteAdapter(newName)
	}
	return err
}

// weightedSum writes Σ wᵢ·lᵢ over the layer's adapters into dst.
func weightedSum(l *Linear, dst *nn.Param, adapters []string, weights []float64) error {
	s := tensor.NoGradScope()
	defer s.Close()
	var sum *tensor.T
	for i, a := range adapters {
		p, ok := l.L.Get(a)
		if !ok {
			return fmt.Errorf("no adapter %q (the adapters target different modules)", a)
		}
		term := s.MulScalar(p.T(), weights[i])
		if sum == nil {
			sum = term
		} else {
			sum = s.Add(sum, term)
		}
	}
	s.CopyInto(dst.T(), sum)
	return s.Err()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
