package peft

import (
	"fmt"
	"sort"
	"strings"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/nn/quant"
)

// TunerConfig is the contract of a method that wraps layers (LoRA, IA3,
// bottleneck adapters, or a user's own method): PEFT's BaseTuner with its
// `_prepare_adapter_config` and `_create_and_replace`. The method says
// which modules it wants (Prepare) and how to wrap one (CreateOrUpdate);
// InjectAdapter owns the walk over the module tree, the matching
// (`check_target_module_exists`), the replacement and the checks common
// to every method. The layers it returns are Tuners, through which Model
// activates, merges, unmerges, saves and deletes adapters.
//
// A method package implements TunerConfig on its config, registers a
// Decoder for its peft_type in init (Register), and is done: peft.New,
// Model.AddAdapter and Load drive it. Implementations need not be safe for
// concurrent use (injection mutates the model).
type TunerConfig interface {
	Config
	// Prepare fills what depends on the model (PEFT's default
	// target_modules for the model's model_type, …), validates the config
	// and returns what to target. The filled-in values are what Save writes.
	Prepare(model nn.Module) (Targeting, error)
	// CreateOrUpdate adds adapter t.Adapter at one matched module: when
	// t.Module is a base layer it returns a new Tuner wrapping it (which
	// InjectAdapter puts at t.Path); when it is already this method's Tuner
	// (a second adapter) it adds the adapter to it and returns it. The new
	// adapter's parameters are freshly initialised and may be trainable;
	// Model freezes and activates them.
	CreateOrUpdate(t Target) (Tuner, error)
}

// FanInFanOutConfig is implemented by configs with PEFT's fan_in_fan_out:
// after injection it is forced to the kind of the wrapped layers (true
// when every one is a Conv1D, false when every one is a Linear), and Save
// writes the result, as PEFT does.
type FanInFanOutConfig interface {
	SetFanInFanOut(on bool)
}

// ModelChecker is implemented by configs of methods that add no layers
// (selective methods) and check the config against the model when the
// adapter is added.
type ModelChecker interface {
	CheckModel(model nn.Module) error
}

// Targeting is what a method targets: the fields of PEFT's configs that
// check_target_module_exists reads. Match only reads it, so a Targeting
// not being changed is safe for concurrent use.
type Targeting struct {
	// TargetModules selects the modules to wrap (see Targets; "all-linear"
	// is expanded here).
	TargetModules Targets
	// ExcludeModules are never wrapped, even when TargetModules selects them.
	ExcludeModules Targets
	// LayersToTransform keeps only modules in these layer indices (with a
	// list TargetModules; PEFT's layers_to_transform).
	LayersToTransform []int
	// LayersPattern names the module list that holds the layers
	// ("layers", "h"; PEFT's layers_pattern); empty: any.
	LayersPattern []string
	// SkipLayers drops modules in these layer indices (AdapterHub's leave_out).
	SkipLayers []int
	// ModulesToSave are trained whole and never wrapped (PEFT's
	// modules_to_save, matched as whole path components).
	ModulesToSave []string
	// Field names the targeting fields in errors (default "target_modules").
	Field string
}

// Target is one matched module handed to CreateOrUpdate (a plain value;
// the modules it points to are not safe for concurrent mutation).
type Target struct {
	Model   nn.Module // the model being injected (its root)
	Path    string    // the module's path (model.layers.0.self_attn.q_proj)
	Module  nn.Module // the module there: a base layer, or a Tuner already there
	Adapter string    // the adapter's name
}

// Match is PEFT's check_target_module_exists for one module path.
func (t *Targeting) Match(path string) bool {
	if t.ExcludeModules.Matches(path) {
		return false
	}
	for _, m := range t.ModulesToSave {
		if ComponentMatch(path, m) {
			return false
		}
	}
	if !t.TargetModules.Matches(path) {
		return false
	}
	if len(t.SkipLayers) > 0 {
		if idx, ok := LayerIndex(path, t.LayersPattern); ok && containsInt(t.SkipLayers, idx) {
			return false
		}
	}
	if t.TargetModules.Regex == "" && len(t.LayersToTransform) > 0 {
		idx, ok := LayerIndex(path, t.LayersPattern)
		return ok && containsInt(t.LayersToTransform, idx)
	}
	return true
}

// InjectAdapter adds adapter name of cfg's method to model (PEFT's
// inject_adapter): cfg.Prepare says what to target; every module that
// matches (not inside a modules_to_save wrapper, not inside another
// Tuner) goes through cfg.CreateOrUpdate and the returned Tuner replaces
// it. It fails when nothing matches, when a matched module already has an
// adapter of that name, or when CreateOrUpdate fails; what was injected
// before a failure stays (Model removes it). Then a FanInFanOutConfig gets
// fan_in_fan_out forced to the wrapped layers' kind.
func InjectAdapter(model nn.Module, name string, cfg TunerConfig) error {
	if model == nil {
		return fmt.Errorf("peft: inject %q: the model is nil", name)
	}
	tg, err := cfg.Prepare(model)
	if err != nil {
		return err
	}
	field := tg.Field
	if field == "" {
		field = "target_modules"
	}
	if tg.TargetModules.Regex == AllLinear {
		tg.TargetModules = TargetList(allLinear(model)...)
	}
	var matched []Target
	visitModules(model, "", func(path string, mod nn.Module) bool {
		if _, ok := mod.(*ModulesToSave); ok {
			return false
		}
		if tg.Match(path) {
			matched = append(matched, Target{Model: model, Path: path, Module: mod, Adapter: name})
			return false
		}
		_, isTuner := mod.(Tuner)
		return !isTuner
	})
	if len(matched) == 0 {
		return fmt.Errorf("peft: Target modules %s not found in the base model. Please check the target modules and try again "+
			"(%s %s matched no module; the model's linear layers are %v)", tg.TargetModules, field, tg.TargetModules, LinearNames(model))
	}
	var convs, linears int
	for _, t := range matched {
		if tu, ok := t.Module.(Tuner); ok && contains(tu.Adapters(), name) {
			return fmt.Errorf("peft: %q already has an adapter %q", t.Path, name)
		}
		tu, err := cfg.CreateOrUpdate(t)
		if err != nil {
			return err
		}
		if tu == nil {
			return fmt.Errorf("peft: %s: CreateOrUpdate returned no layer for %q", cfg.PeftType(), t.Path)
		}
		if nn.Module(tu) != t.Module {
			if _, err := nn.Replace(model, t.Path, tu); err != nil {
				return fmt.Errorf("peft: %w", err)
			}
		}
		switch tu.BaseLayer().(type) {
		case *nn.Conv1D:
			convs++
		case *nn.Linear, *quant.Linear:
			linears++
		}
	}
	if f, ok := cfg.(FanInFanOutConfig); ok {
		if convs > 0 && linears == 0 {
			f.SetFanInFanOut(true)
		} else if linears > 0 && convs == 0 {
			f.SetFanInFanOut(false)
		}
	}
	return nil
}

// visitModules walks the tree depth-first; fn returns whether to descend.
func visitModules(m nn.Module, path string, fn func(path string, m nn.Module) bool) {
	for _, c := range nn.Children(m) {
		p := c.Name
		if path != "" {
			p = path + "." + c.Name
		}
		if fn(p, c.Module) {
			visitModules(c.Module, p, fn)
		}
	}
}

// LinearNames lists the distinct last path components of the model's
// Linear and Conv1D layers (4-bit ones included): the candidate
// target_modules, sorted.
func LinearNames(model nn.Module) []string {
	seen := map[string]bool{}
	visitModules(model, "", func(path string, m nn.Module) bool {
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

// allLinear expands "all-linear": every Linear/Conv1D name except the
// output layer.
func allLinear(model nn.Module) []string {
	var out []string
	for _, n := range LinearNames(model) {
		if n != "lm_head" {
			out = append(out, n)
		}
	}
	return out
}

func containsInt(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// ModelType is the model's config.json model_type ("" when it has none).
func ModelType(model nn.Module) string {
	if t, ok := model.(interface{ ModelType() string }); ok {
		return t.ModelType()
	}
	return ""
}

// ExpandAllLinear turns target_modules "all-linear" into the list of the
// model's Linear/Conv1D names except the output layer (PEFT's
// _maybe_include_all_linear_layers, whose result the config saves); any
// other t is returned as it is.
func ExpandAllLinear(model nn.Module, t Targets) Targets {
	if t.Regex != AllLinear {
		return t
	}
	return TargetList(allLinear(model)...)
}

// TunerAt is a Tuner with its module path (a plain value; the Tuner is
// not safe for concurrent mutation).
type TunerAt struct {
	Path  string
	Tuner Tuner
}

// Tuners lists every Tuner under model (modules_to_save wrappers
// included) with its path, outermost first; it does not look inside a
// Tuner.
func Tuners(model nn.Module) []TunerAt {
	var out []TunerAt
	for _, pt := range tuners(model) {
		out = append(out, TunerAt{pt.path, pt.tuner})
	}
	return out
}
