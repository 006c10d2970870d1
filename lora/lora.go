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
package lora

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

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
	"llama": {"q_proj", "v_proj"}, "mistral": {"q_proj", "v_proj"}, "qwen2": {"q_proj", "v_proj"},
	"gpt2": {"c_attn"}, "bloom": {"query_key_value"}, "bert": {"query", "value"},
	"gemma": {"q_proj", "v_proj"}, "gemma2": {"q_proj", "v_proj"}, "gemma3_text": {"q_proj", "v_proj"},
}

// Inject implements peft.Config: wraps every targeted Linear/Conv1D in a
// lora.Linear (or adds the adapter to one already there).
func (c *Config) Inject(model nn.Module, name string) error {
	c.fillDefaults()
	if err := c.Validate(); err != nil {
		return fmt.Errorf("lora: %w", err)
	}
	if !c.TargetModules.set() {
		mt := ""
		if t, ok := model.(interface{ ModelType() string }); ok {
			mt = t.ModelType()
		}
		d, ok := DefaultTargets[mt]
		if !ok {
			return fmt.Errorf("lora: no target_modules given and no default for model_type %q", mt)
		}
		c.TargetModules = List(d...)
	}
	if c.TargetModules.Regex == "all-linear" {
		c.TargetModules = List(allLinear(model)...)
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
			_, isLoRA := mod.(*Linear)
			return !isLoRA && !isEmbedding(mod)
		}
		r, alpha := c.R, c.LoraAlpha
		if v, ok := c.RankPattern.Lookup(path); ok {
			r = int(v)
		}
		if v, ok := c.AlphaPattern.Lookup(path); ok {
			alpha = v
		}
		if emb, ok := mod.(*nn.Embedding); ok || isEmbedding(mod) {
			if c.UseDoRA {
				walkErr = fmt.Errorf("lora: %q: DoRA on an Embedding is not supported", path)
				return false
			}
			layer, isLoRA := mod.(*Embedding)
			if !isLoRA {
				layer = newEmbedding(emb)
				if _, err := nn.Replace(model, path, layer); err != nil {
					walkErr = err
					return false
				}
			}
			if _, ok := layer.A.Get(name); ok {
				walkErr = fmt.Errorf("lora: %q already has an adapter %q", path, name)
				return false
			}
			if err := layer.addAdapter(name, r, alpha, c); err != nil {
				walkErr = fmt.Errorf("lora: %s: %w", path, err)
				return false
			}
			matched++
			return false
		}
		var layer *Linear
		switch m := mod.(type) {
		case *Linear:
			layer = m
		case *nn.Linear, *nn.Conv1D, *quant.Linear: // a 4-bit base makes it QLoRA
			layer = newLinear(m.(nn.Layer))
			if _, err := nn.Replace(model, path, layer); err != nil {
				walkErr = err
				return false
			}
		default:
			walkErr = fmt.Errorf("lora: target module %q is a %s; LoRA supports Linear and Conv1D layers", path, nn.TypeName(mod))
			return false
		}
		if _, ok := layer.A.Get(name); ok {
			walkErr = fmt.Errorf("lora: %q already has an adapter %q", path, name)
			return false
		}
		if _, conv := layer.Base.(*nn.Conv1D); conv {
			convs++
		} else {
			linears++
		}
		if err := layer.addAdapter(name, r, alpha, c); err != nil {
			walkErr = fmt.Errorf("lora: %s: %w", path, err)
			return false
		}
		matched++
		return false
	})
	if walkErr != nil {
		return walkErr
	}
	if matched == 0 {
		return fmt.Errorf("lora: target_modules %s matched no module; the model's linear layers are %v",
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

func isEmbedding(m nn.Module) bool {
	_, ok := m.(*Embedding)
	return ok
}

// targets is PEFT's check_target_module_exists for a module path.
func (c *Config) targets(path string) bool {
	if matchTargets(c.ExcludeModules, path) {
		return false
	}
	for _, m := range c.ModulesToSave_ {
		if peft.ComponentMatch(path, m) {
			return false
		}
	}
	if !matchTargets(c.TargetModules, path) {
		return false
	}
	if c.TargetModules.Regex == "" && len(c.LayersToTransform) > 0 {
		idx, ok := layerIndex(path, c.LayersPattern)
		if !ok {
			return false
		}
		for _, l := range c.LayersToTransform {
			if l == idx {
				return true
			}
		}
		return false
	}
	return true
}

func matchTargets(t Targets, path string) bool {
	if t.Regex != "" {
		re, err := regexp.Compile(`^(?:` + t.Regex + `)$`)
		return err == nil && re.MatchString(path)
	}
	for _, n := range t.List {
		if path == n || strings.HasSuffix(path, "."+n) {
			return true
		}
	}
	return false
}

// anyLayer is PEFT's default layer-index regex (a constant pattern).
var anyLayer = regexp.MustCompile(`^.*?\.[^.]*\.(\d+)\.`)

// layerIndex extracts the layer number from a module path as PEFT does.
func layerIndex(path string, patterns []string) (int, bool) {
	var res []*regexp.Regexp
	if len(patterns) == 0 {
		res = append(res, anyLayer)
	}
	for _, p := range patterns {
		re, err := layerRegexp(p) // Validate refused a bad one; a Config built in Go may skip it
		if err != nil {
			return 0, false
		}
		res = append(res, re)
	}
	for _, re := range res {
		if m := re.FindStringSubmatch(path); m != nil {
			n, err := strconv.Atoi(m[1])
			return n, err == nil
		}
	}
	return 0, false
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
		case *nn.Linear, *nn.Conv1D, *quant.Linear:
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

// allLinear expands "all-linear": every Linear/Conv1D name except the output layer.
func allLinear(model nn.Module) []string {
	var out []string
	for _, n := range linearNames(model) {
		if n != "lm_head" {
			out = append(out, n)
		}
	}
	return out
}

func targetString(t Targets) string {
	if t.Regex != "" {
		return strconv.Quote(t.Regex)
	}
	return fmt.Sprintf("%q", t.List)
}

func sqrt(x float64) float64 { return math.Sqrt(x) }
