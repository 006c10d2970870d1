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
	"sort"
	"strings"

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
}

// DefaultFeedforward are PEFT's default feedforward_modules per model_type
// (TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING).
var DefaultFeedforward = map[string][]string{
	"llama": {"down_proj"}, "mistral": {"down_proj"}, "qwen2": {"down_proj"},
	"bloom": {"mlp.dense_4h_to_h"}, "gpt2": {"mlp.c_proj"}, "bert": {"output.dense"},
	"t5": {"wo"}, "gpt_neox": {"dense_4h_to_h"}, "falcon": {"dense_4h_to_h"}, "opt": {"fc2"}, "qwen3": {"down_proj"},
}

func modelType(m nn.Module) string {
	if t, ok := m.(interface{ ModelType() string }); ok {
		return t.ModelType()
	}
	return ""
}

// Inject implements peft.Config: wraps every targeted Linear/Conv1D in an
// ia3.Linear (or adds the adapter to one already there). Unset
// target_modules / feedforward_modules take PEFT's defaults for the model
// type, and the filled-in values are what Save writes (as PEFT does).
func (c *Config) Inject(model nn.Module, name string) error {
	if c.Task == "" {
		c.Task = peft.CausalLM
	}
	mt := modelType(model)
	if !c.TargetModules.set() {
		d, ok := DefaultTargets[mt]
		if !ok {
			return fmt.Errorf("ia3: no target_modules given and no default for model_type %q", mt)
		}
		c.TargetModules = List(d...)
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("ia3: %w", err)
	}
	if !c.FeedforwardModules.set() {
		d, ok := DefaultFeedforward[mt]
		if !ok {
			return fmt.Errorf("ia3: no feedforward_modules given and no default for model_type %q", mt)
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
	matched := 0
	var convs, linears int
	var walkErr error
	visit(model, "", func(path string, mod nn.Module) bool {
		if walkErr != nil {
			return false
		}
		if _, ok := mod.(*peft.ModulesToSave); ok {
			return false
		}
		if !c.targets(path) {
			_, isIA3 := mod.(*Linear)
			return !isIA3
		}
		ff := c.FeedforwardModules.matchesFeedforward(path)
		var layer *Linear
		switch m := mod.(type) {
		case *Linear:
			layer = m
			if layer.feedforward != ff {
				walkErr = fmt.Errorf("ia3: %q: adapter %q treats it as feedforward=%v, an earlier adapter as feedforward=%v", path, name, ff, layer.feedforward)
				return false
			}
		case *nn.Linear, *nn.Conv1D:
			layer = newLinear(m.(nn.Layer), ff)
			if _, err := nn.Replace(model, path, layer); err != nil {
				walkErr = err
				return false
			}
		default:
			walkErr = fmt.Errorf("ia3: target module %q is a %s; IA3 supports Linear and Conv1D layers", path, nn.TypeName(mod))
			return false
		}
		if _, ok := layer.L.Get(name); ok {
			walkErr = fmt.Errorf("ia3: %q already has an adapter %q", path, name)
			return false
		}
		if _, conv := layer.Base.(*nn.Conv1D); conv {
			convs++
		} else {
			linears++
		}
		if err := layer.addAdapter(name, c.initOnes()); err != nil {
			walkErr = fmt.Errorf("ia3: %s: %w", path, err)
			return false
		}
		matched++
		return false
	})
	if walkErr != nil {
		return walkErr
	}
	if matched == 0 {
		return fmt.Errorf("ia3: target_modules %s matched no module; the model's linear layers are %v",
			targetString(c.TargetModules), linearNames(model))
	}
	// PEFT forces fan_in_fan_out to the layer kind (and saves the result)
	if convs > 0 && linears == 0 {
		c.FanInFanOut = true
	} else if linears > 0 && convs == 0 {
		c.FanInFanOut = false
	}
	return nil
}

// targets is PEFT's check_target_module_exists for a module path.
func (c *Config) targets(path string) bool {
	if c.ExcludeModules.matches(path) {
		return false
	}
	for _, m := range c.ModulesToSave_ {
		if peft.ComponentMatch(path, m) {
			return false
		}
	}
	return c.TargetModules.matches(path)
}

// visit walks the tree; fn returns whether to descend into mod.
func visit(m nn.Module, path string, fn func(path string, m nn.Module) bool) {
	for _, c := range nn.Children(m) {
		p := c.Name
		if path != "" {
			p = path + "." + c.Name
		}
		if fn(p, c.Module) {
			visit(c.Module, p, fn)
		}
	}
}

// linearNames lists the distinct last path components of the model's
// Linear/Conv1D layers (candidate target_modules for error messages).
func linearNames(model nn.Module) []string {
	seen := map[string]bool{}
	visit(model, "", func(path string, m nn.Module) bool {
		switch m.(type) {
		case *nn.Linear, *nn.Conv1D:
			seen[path[strings.LastIndex(path, ".")+1:]] = true
		}
		return true
	})
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func targetString(t Targets) string {
	if t.Regex != "" {
		return fmt.Sprintf("%q", t.Regex)
	}
	return fmt.Sprintf("%q", t.List)
}

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
	visit(m.Base(), "", func(path string, mod nn.Module) bool {
		l, ok := mod.(*Linear)
		if !ok || err != nil {
			return err == nil
		}
		dst, ok := l.L.Get(newName)
		if !ok {
			return false
		}
		s := tensor.NoGradScope()
		defer s.Close()
		var sum *tensor.T
		for i, a := range adapters {
			p, ok := l.L.Get(a)
			if !ok {
				err = fmt.Errorf("ia3: %s has no adapter %q (the adapters target different modules)", path, a)
				return false
			}
			term := s.MulScalar(p.T(), weights[i])
			if sum == nil {
				sum = term
			} else {
				sum = s.Add(sum, term)
			}
		}
		s.CopyInto(dst.T(), sum)
		if e := s.Err(); e != nil {
			err = fmt.Errorf("ia3: %s: %w", path, e)
		}
		return false
	})
	if err != nil {
		_ = m.DeleteAdapter(newName)
	}
	return err
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
