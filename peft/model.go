package peft

import (
	"fmt"
	"math"
	"strings"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// File names and the first adapter's name, as in HF PEFT.
const (
	ConfigName     = "adapter_config.json"
	WeightsName    = "adapter_model.safetensors"
	DefaultAdapter = "default"
	// KeyPrefix is what PEFT puts before a module path in saved keys.
	KeyPrefix = "base_model.model."
)

// Model is a base model with one or more named adapters of one method
// (HF's PeftModel). Its module tree is PEFT's: base_model.model.<HF path>,
// so parameter names equal PEFT's in-memory names
// (base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight).
// Prompt-learning methods (prompt tuning, P-tuning, prefix tuning) leave
// the layers alone and keep one prompt encoder per adapter in
// PromptEncoder (prompt_encoder.default.embedding.weight, …).
type Model struct {
	BaseModel     *TunerModel    `nn:"base_model"`
	PromptEncoder *nn.ModuleDict `nn:"prompt_encoder"` // nil unless the method is prompt learning

	configs  map[string]Config
	names    []string // adapter names in insertion order
	active   []string // the active adapters, in the order SetAdapter got them
	disabled bool
	task     TaskType // the first adapter's task type (see task.go)
}

// TunerModel holds the wrapped base model (HF's LoraModel, IA3Model, …):
// a causal LM, or an encoder with or without a classification head.
type TunerModel struct {
	Model models.Model `nn:"model"`
	kind  PeftType
}

// TypeName prints PEFT's class names in the module tree.
func (t *TunerModel) TypeName() string {
	switch t.kind {
	case LoRA:
		return "LoraModel"
	case IA3:
		return "IA3Model"
	}
	return "PeftTunerModel"
}

// New wraps base with cfg as adapter "default": every base parameter is
// frozen and the adapter's own parameters (and modules_to_save copies, and
// biases per the bias policy) train. cfg's task type decides the task
// behaviour (see TaskType): for SEQ_CLS and TOKEN_CLS the classifier head
// trains and is saved with the adapter.
func New(base models.Model, cfg Config) (*Model, error) {
	if err := nn.Freeze(base); err != nil {
		return nil, err
	}
	m := &Model{BaseModel: &TunerModel{Model: base, kind: cfg.PeftType()}, configs: map[string]Config{}, task: cfg.TaskType()}
	if err := m.AddAdapter(DefaultAdapter, cfg); err != nil {
		return nil, err
	}
	if err := m.SetAdapter(DefaultAdapter); err != nil {
		return nil, err
	}
	return m, nil
}

// fillBaseModelName records the base model's path in the config, as
// get_peft_model and save_pretrained do with model.name_or_path, when the
// config has none (every adapter: the first, added or loaded ones).
func fillBaseModelName(base models.Model, cfg Config) {
	n, ok1 := base.(interface{ NameOrPath() string })
	c, ok2 := cfg.(interface {
		BaseModelName() string
		SetBaseModelName(string)
	})
	if ok1 && ok2 && c.BaseModelName() == "" && n.NameOrPath() != "" {
		c.SetBaseModelName(n.NameOrPath())
	}
}

// Base is the wrapped model (with its layers replaced by Tuners).
func (m *Model) Base() models.Model { return m.BaseModel.Model }

// Config returns the configuration of adapter name.
func (m *Model) Config(name string) (Config, bool) {
	c, ok := m.configs[name]
	return c, ok
}

// Adapters lists the adapter names in the order they were added.
func (m *Model) Adapters() []string { return append([]string(nil), m.names...) }

// ActiveAdapter is the first active adapter ("" when none): with one
// active adapter, the adapter that runs in forward and trains.
func (m *Model) ActiveAdapter() string {
	if len(m.active) == 0 {
		return ""
	}
	return m.active[0]
}

// ActiveAdapters lists the active adapters (PEFT's active_adapters): they
// all run in forward (their outputs summed, for LoRA) and train.
func (m *Model) ActiveAdapters() []string { return append([]string(nil), m.active...) }

// AddAdapter injects a second (third, …) adapter of the same method. It is
// not active and its parameters are frozen until SetAdapter.
func (m *Model) AddAdapter(name string, cfg Config) error {
	if err := m.addAdapter(name, cfg, false); err != nil {
		return err
	}
	return nn.ToDevice(m, m.Device()) // adapters live beside the base
}

// addAdapter adds an adapter; inference builds a prompt-learning adapter in
// the form saved adapters load into (its prompt_embeddings table only).
func (m *Model) addAdapter(name string, cfg Config, inference bool) error {
	if name == "" || strings.Contains(name, ".") {
		return fmt.Errorf("peft: adapter name %q must be non-empty and without dots", name)
	}
	if _, ok := m.configs[name]; ok {
		return fmt.Errorf("peft: adapter %q already exists", name)
	}
	if m.BaseModel.kind != cfg.PeftType() {
		return fmt.Errorf("peft: cannot add a %s adapter to a %s model (one method per model)", cfg.PeftType(), m.BaseModel.kind)
	}
	if err := m.checkSelective(name, cfg); err != nil {
		return err
	}
	fillBaseModelName(m.BaseModel.Model, cfg)
	if b, ok := cfg.(BiasConfig); ok && b.BiasMode() != "none" {
		for n, c := range m.configs {
			if ob, ok := c.(BiasConfig); ok && ob.BiasMode() != "none" {
				return fmt.Errorf("peft: adapter %q already trains biases (bias=%q); only one adapter may have bias != \"none\"", n, ob.BiasMode())
			}
		}
	}
	if pc, ok := cfg.(PromptConfig); ok {
		if err := checkPromptTask(m.BaseModel.Model, cfg); err != nil {
			return err
		}
		if err := m.addPromptAdapter(name, pc, inference); err != nil {
			return err
		}
		if err := wrapModulesToSave(m.BaseModel.Model, m.withHeads(nil), name); err != nil {
			m.dropAdapter(name)
			return err
		}
		m.configs[name] = cfg
		m.names = append(m.names, name)
		return nil
	}
	base := m.BaseModel.Model
	var err error
	switch c := cfg.(type) {
	case TunerConfig:
		err = InjectAdapter(base, name, c)
	case ModelChecker:
		err = c.CheckModel(base)
	default:
		if _, selective := cfg.(SelectiveConfig); !selective {
			err = fmt.Errorf("peft: the %s config (%T) implements none of peft.TunerConfig, peft.PromptConfig, peft.SelectiveConfig: nothing says what it does to the model", cfg.PeftType(), cfg)
		}
	}
	if err != nil {
		m.dropAdapter(name)
		return err
	}
	if _, selective := cfg.(SelectiveConfig); !selective { // selective methods train the heads themselves
		var entries []string
		if mts, ok := cfg.(ModulesToSaveConfig); ok {
			entries = mts.ModulesToSave()
		}
		if err := wrapModulesToSave(base, m.withHeads(entries), name); err != nil {
			m.dropAdapter(name)
			return err
		}
	}
	m.configs[name] = cfg
	m.names = append(m.names, name)
	for _, pt := range tuners(base) {
		if contains(pt.tuner.Adapters(), name) {
			if err := pt.tuner.SetTrainable(name, false); err != nil {
				return err
			}
			pt.tuner.SetActive(m.active)
		}
	}
	return nil
}

// SetAdapter makes the named adapters active (PEFT's set_adapter, which
// takes one name or a list): they run in forward — several LoRA/IA3/
// bottleneck adapters are combined, LoRA's updates summed — and train
// (with their bias policies); every other adapter is frozen. A
// prompt-learning model has one active adapter at a time.
func (m *Model) SetAdapter(names ...string) error {
	if len(names) == 0 {
		return fmt.Errorf("peft: SetAdapter needs at least one adapter name (have %v)", m.names)
	}
	var cfgs []Config
	for i, name := range names {
		cfg, ok := m.configs[name]
		if !ok {
			return fmt.Errorf("peft: no adapter %q (have %v)", name, m.names)
		}
		if contains(names[:i], name) {
			return fmt.Errorf("peft: adapter %q named twice in %v", name, names)
		}
		if _, isPrompt := cfg.(PromptConfig); isPrompt && len(names) > 1 {
			return fmt.Errorf("peft: %q is a %s adapter: prompt-learning models have one active adapter, not %v", name, cfg.PeftType(), names)
		}
		cfgs = append(cfgs, cfg)
	}
	for _, pt := range tuners(m.BaseModel.Model) {
		if w, ok := pt.tuner.(*ModulesToSave); ok && len(names) > 1 {
			var here []string
			for _, n := range names {
				if contains(w.Adapters(), n) {
					here = append(here, n)
				}
			}
			if len(here) > 1 { // PEFT's ModulesToSaveWrapper refuses it too
				return fmt.Errorf("peft: modules_to_save %q has a copy for each of %v; only one of them can be active", pt.path, here)
			}
		}
	}
	m.active = append([]string(nil), names...)
	for _, pt := range tuners(m.BaseModel.Model) {
		pt.tuner.SetActive(m.active)
		for _, a := range pt.tuner.Adapters() {
			if err := pt.tuner.SetTrainable(a, contains(names, a)); err != nil {
				return err
			}
		}
	}
	if err := m.setPromptTrainable(names[0]); err != nil {
		return err
	}
	for _, cfg := range cfgs {
		if err := m.applyBias(cfg, true); err != nil {
			return err
		}
	}
	return nil
}

// DisableAdapters runs the base model alone until the returned restore
// function is called (HF's `with model.disable_adapter():`). Biases trained
// with bias="all"/"lora_only" stay, as in PEFT; prompt-learning adapters
// inject nothing.
func (m *Model) DisableAdapters() (restore func()) {
	prev := m.disabled
	m.setDisabled(true)
	return func() { m.setDisabled(prev) }
}

func (m *Model) setDisabled(off bool) {
	m.disabled = off
	for _, pt := range tuners(m.BaseModel.Model) {
		pt.tuner.SetDisabled(off)
	}
}

// DeleteAdapter removes an adapter. A merged adapter cannot be deleted.
// When the active adapter goes, the first remaining one becomes active.
func (m *Model) DeleteAdapter(name string) error {
	if _, ok := m.configs[name]; !ok {
		return fmt.Errorf("peft: no adapter %q (have %v)", name, m.names)
	}
	for _, pt := range tuners(m.BaseModel.Model) {
		if contains(pt.tuner.Merged(), name) {
			return fmt.Errorf("peft: adapter %q is merged into %s: unmerge first", name, pt.path)
		}
	}
	m.dropAdapter(name)
	if contains(m.active, name) {
		var rest []string
		for _, a := range m.active {
			if a != name {
				rest = append(rest, a)
			}
		}
		m.active = nil
		if len(rest) == 0 && len(m.names) > 0 {
			rest = m.names[:1]
		}
		if len(rest) > 0 {
			return m.SetAdapter(rest...)
		}
	}
	return nil
}

// dropAdapter removes an adapter's parameters and config; Tuners left with
// no adapter are replaced by their base layer.
func (m *Model) dropAdapter(name string) {
	base := m.BaseModel.Model
	for _, pt := range tuners(base) {
		if !contains(pt.tuner.Adapters(), name) {
			continue
		}
		pt.tuner.DeleteAdapter(name)
		if len(pt.tuner.Adapters()) == 0 {
			_, _ = nn.Replace(base, pt.path, pt.tuner.BaseLayer())
		}
	}
	m.dropPromptEncoder(name)
	delete(m.configs, name)
	for i, n := range m.names {
		if n == name {
			m.names = append(m.names[:i], m.names[i+1:]...)
			break
		}
	}
}

// Merge folds the active adapter (or the named ones) into the base weights;
// the adapters stay and can be unmerged. safe refuses non-finite results.
// Prompt-learning adapters cannot be merged: the error wraps
// ErrNotMergeable.
func (m *Model) Merge(safe bool, names ...string) error {
	if len(names) == 0 {
		names = m.active
	}
	for _, n := range names {
		cfg, ok := m.configs[n]
		if !ok {
			return fmt.Errorf("peft: no adapter %q to merge", n)
		}
		if _, isPrompt := cfg.(PromptConfig); isPrompt {
			return notMergeable(n, cfg)
		}
	}
	for _, pt := range tuners(m.BaseModel.Model) {
		var todo []string
		for _, n := range names {
			if contains(pt.tuner.Adapters(), n) && !contains(pt.tuner.Merged(), n) {
				todo = append(todo, n)
			}
		}
		if err := pt.tuner.Merge(todo, safe); err != nil {
			return fmt.Errorf("peft: merge %s: %w", pt.path, err)
		}
	}
	return nil
}

// Unmerge subtracts every merged adapter from the base weights.
func (m *Model) Unmerge() error {
	for _, pt := range tuners(m.BaseModel.Model) {
		if err := pt.tuner.Unmerge(); err != nil {
			return fmt.Errorf("peft: unmerge %s: %w", pt.path, err)
		}
	}
	return nil
}

// Unloader is implemented by Tuners whose unloaded form is not their base
// layer (modules_to_save gives back the active adapter's copy).
type Unloader interface {
	Unloaded() nn.Layer
}

// MergeAndUnload merges the active adapter and returns the plain base model
// with every Tuner replaced by its (merged) base layer. m must not be used
// afterwards. For prompt-learning adapters it returns an error wrapping
// ErrNotMergeable and leaves m as it was.
func (m *Model) MergeAndUnload() (models.Model, error) {
	if err := m.Merge(false); err != nil {
		return nil, err
	}
	return m.unload()
}

// Unload returns the base model without the adapters (nothing merged;
// prompt encoders are freed).
func (m *Model) Unload() (models.Model, error) {
	if err := m.Unmerge(); err != nil {
		return nil, err
	}
	return m.unload()
}

func (m *Model) unload() (models.Model, error) {
	base := m.BaseModel.Model
	for _, pt := range tuners(base) {
		repl := pt.tuner.BaseLayer()
		if u, ok := pt.tuner.(Unloader); ok {
			repl = u.Unloaded()
		}
		if _, err := nn.Replace(base, pt.path, repl); err != nil {
			return nil, err
		}
	}
	if m.PromptEncoder != nil {
		nn.FreeParams(m.PromptEncoder)
		m.PromptEncoder = nil
	}
	m.configs, m.names, m.active = map[string]Config{}, nil, nil
	return base, nil
}

// TrainableParams lists the parameters that train, with PEFT's names.
func (m *Model) TrainableParams() []nn.NamedParam { return nn.TrainableParams(m) }

// PrintTrainableParameters prints PEFT's line:
// "trainable params: … || all params: … || trainable%: …".
func (m *Model) PrintTrainableParameters() { fmt.Println(TrainableSummary(m)) }

// Device is where the base model's weights live (adapters are created
// beside them).
func (m *Model) Device() tensor.Device { return models.DeviceOf(m.BaseModel.Model) }

// ForwardT runs the wrapped model in scope s. With a prompt-learning
// adapter active, the batch first gets its virtual tokens (see
// promptBatch): prompt tuning / P-tuning logits have P extra leading
// positions, as in PEFT; a first call with UseCache puts the virtual tokens
// into the cache, and later calls with that cache inject nothing more.
// Attention masks always cover the caller's tokens only.
func (m *Model) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	if d := m.Device(); d.IsCUDA() { // the prompt paths create tensors before the base runs
		defer s.SetDevice(s.SetDevice(d))
		b.ToDevice(s, d)
	}
	if pc, enc := m.activePrompt(); pc != nil {
		b = m.promptBatch(s, pc, enc, b)
		if s.Err() != nil {
			return &models.Output{}
		}
	}
	out := m.BaseModel.Model.ForwardT(s, b)
	m.addLossTerms(s, out) // a method's term in the loss (LossTermer)
	return out
}

// Forward runs the wrapped model (public entry point).
func (m *Model) Forward(s *tensor.Scope, in models.Inputs) (*models.Outputs, error) {
	if pc, _ := m.activePrompt(); pc == nil && !m.hasLossTerm() {
		return m.BaseModel.Model.Forward(s, in)
	}
	return models.Run(s, "peft", m.ForwardT, in)
}

// applyBias makes biases trainable per cfg's bias policy.
func (m *Model) applyBias(cfg Config, on bool) error {
	for _, np := range m.biasParams(cfg) {
		s := tensor.NewScope()
		s.SetRequiresGrad(np.Param.T(), on)
		err := s.Err()
		s.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// biasParams lists the biases cfg's bias policy trains and saves, under
// their in-memory names relative to the wrapped model.
func (m *Model) biasParams(cfg Config) []nn.NamedParam {
	if sc, ok := cfg.(SelectiveConfig); ok { // BitFit, freeze tuning (hooks.go), plus the task head
		out := SelectedParams(m.BaseModel.Model, sc)
		for _, np := range m.headParams() {
			dup := false
			for _, o := range out {
				dup = dup || o.Param == np.Param
			}
			if !dup {
				out = append(out, np)
			}
		}
		return out
	}
	b, ok := cfg.(BiasConfig)
	if !ok || b.BiasMode() == "none" || b.BiasMode() == "" {
		return nil
	}
	base := m.BaseModel.Model
	if b.BiasMode() == "all" {
		var out []nn.NamedParam
		for _, np := range baseParams(base) {
			if np.Name == "bias" || strings.HasSuffix(np.Name, ".bias") {
				out = append(out, np)
			}
		}
		return out
	}
	var out []nn.NamedParam // "<prefix>_only": biases of the wrapped layers
	for _, pt := range tuners(base) {
		if _, isMTS := pt.tuner.(*ModulesToSave); isMTS {
			continue
		}
		for _, np := range nn.LocalParams(pt.tuner.BaseLayer()) {
			if np.Name == "bias" {
				out = append(out, nn.NamedParam{Name: pt.path + ".base_layer.bias", Param: np.Param})
			}
		}
	}
	return out
}

// baseParams lists the base model's own parameters (adapter parameters and
// modules_to_save copies excluded) under in-memory names.
func baseParams(base nn.Module) []nn.NamedParam {
	adapterOwned := map[*nn.Param]bool{}
	for _, pt := range tuners(base) {
		for _, a := range pt.tuner.Adapters() {
			for _, np := range pt.tuner.AdapterState(a) {
				adapterOwned[np.Param] = true
			}
		}
	}
	var out []nn.NamedParam
	for _, np := range nn.NamedParams(base) {
		if !adapterOwned[np.Param] {
			out = append(out, np)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// CheckFinite returns an error naming what when t has NaN or Inf values:
// a Tuner's Merge(names, safe=true) calls it on the merged weight before
// it replaces the base weight (PEFT's safe_merge).
func CheckFinite(s *tensor.Scope, t *tensor.T, what string) error {
	v := s.Item(s.Sum(s.Abs(t), false))
	if err := s.Err(); err != nil {
		return err
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("%s: merged weights are not finite (NaN or Inf); nothing was merged", what)
	}
	return nil
}
