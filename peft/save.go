package peft

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/gopeft/peft/internal/fsutil"
	"github.com/gopeft/peft/internal/tensor"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
)

// Save writes every adapter as PEFT does: "default" into dir, any other
// adapter into dir/<name>/. Each gets adapter_config.json and
// adapter_model.safetensors with PEFT's keys; base weights are never
// written (except biases under bias="all"/"lora_only" and
// modules_to_save copies, as in PEFT).
func (m *Model) Save(dir string) error {
	for _, name := range m.names {
		sub := dir
		if name != DefaultAdapter {
			sub = filepath.Join(dir, name)
		}
		if err := m.SaveAdapter(sub, name); err != nil {
			return err
		}
	}
	return nil
}

// SaveAdapter writes one adapter to dir (files replaced atomically).
func (m *Model) SaveAdapter(dir, name string) error {
	cfg, ok := m.configs[name]
	if !ok {
		return fmt.Errorf("peft: no adapter %q to save", name)
	}
	var state []nn.NamedParam
	if _, isPrompt := cfg.(PromptConfig); isPrompt {
		p, owned, err := m.promptEmbeddings(name)
		if err != nil {
			return err
		}
		if owned {
			defer p.Free()
		}
		state = append([]nn.NamedParam{{Name: PromptEmbeddingsKey, Param: p}}, m.promptHeadState(name)...)
	} else {
		var err error
		if state, err = m.AdapterStateDict(name); err != nil {
			return err
		}
	}
	tensors, err := nn.StateTensors(state, "")
	if err != nil {
		return fmt.Errorf("peft: save %q: %w", name, err)
	}
	js, err := cfg.MarshalJSON()
	if err != nil {
		return fmt.Errorf("peft: save %q config: %w", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("peft: %w", err)
	}
	if err := safetensors.Write(filepath.Join(dir, WeightsName), tensors, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("peft: %w", err)
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, ConfigName), append(js, '\n'))
}

// AdapterStateDict lists what PEFT saves for adapter name, under the file's
// keys (base_model.model.<path>.<local name>, adapter name removed). For a
// prompt-learning adapter it is the one tensor prompt_embeddings: the
// adapter's table, or — when an encoder network computes it (P-tuning,
// prefix projection) — a computed copy that the caller owns and frees
// with Param.Free.
func (m *Model) AdapterStateDict(name string) ([]nn.NamedParam, error) {
	cfg, ok := m.configs[name]
	if !ok {
		return nil, fmt.Errorf("peft: no adapter %q", name)
	}
	if _, isPrompt := cfg.(PromptConfig); isPrompt {
		p, _, err := m.promptEmbeddings(name)
		if err != nil {
			return nil, err
		}
		return append([]nn.NamedParam{{Name: PromptEmbeddingsKey, Param: p}}, m.promptHeadState(name)...), nil
	}
	var out []nn.NamedParam
	seen := map[string]bool{}
	add := func(key string, p *nn.Param) {
		if !seen[key] {
			seen[key] = true
			out = append(out, nn.NamedParam{Name: key, Param: p})
		}
	}
	for _, pt := range tuners(m.BaseModel.Model) {
		for _, np := range pt.tuner.AdapterState(name) {
			add(KeyPrefix+pt.path+"."+np.Name, np.Param)
		}
	}
	for _, np := range m.biasParams(cfg) {
		add(stateKeyPrefix(cfg)+np.Name, np.Param)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// LoadOptions controls Load and LoadAdapter.
type LoadOptions struct {
	// Trainable keeps the loaded adapter trainable (PEFT's is_trainable);
	// by default it is loaded for inference, frozen. A prompt-learning
	// adapter then trains its saved prompt_embeddings table directly (PEFT
	// refuses is_trainable for these: the encoder network is not saved).
	Trainable bool
}

// Load wraps base with the adapter saved in dir (any registered method,
// chosen by adapter_config.json's peft_type) as "default".
func Load(base models.Model, dir string, opts ...LoadOptions) (*Model, error) {
	cfg, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	if err := nn.Freeze(base); err != nil {
		return nil, err
	}
	m := &Model{BaseModel: &TunerModel{Model: base, kind: cfg.PeftType()}, configs: map[string]Config{}, task: cfg.TaskType()}
	if err := m.loadAdapter(dir, DefaultAdapter, cfg, opts...); err != nil {
		return nil, err
	}
	return m, nil
}

// LoadAdapter adds the adapter saved in dir under name (not activated
// unless it is the only one).
func (m *Model) LoadAdapter(dir, name string, opts ...LoadOptions) error {
	cfg, err := ReadConfig(dir)
	if err != nil {
		return err
	}
	return m.loadAdapter(dir, name, cfg, opts...)
}

func (m *Model) loadAdapter(dir, name string, cfg Config, opts ...LoadOptions) error {
	var opt LoadOptions
	if len(opts) > 0 {
		opt = opts[0]
	}
	path := filepath.Join(dir, WeightsName)
	set, err := safetensors.OpenFiles(path)
	if err != nil {
		return fmt.Errorf("peft: %w", err)
	}
	defer set.Close()
	if err := m.addAdapter(name, cfg, true); err != nil {
		return err
	}
	if err := m.fill(set, path, name); err != nil {
		m.dropAdapter(name) // nothing half-loaded
		return err
	}
	if err := nn.ToDevice(m, m.Device()); err != nil { // adapters live beside the base
		return err
	}
	if m.active == "" {
		if err := m.SetAdapter(name); err != nil {
			return err
		}
	}
	if !opt.Trainable {
		for _, pt := range tuners(m.BaseModel.Model) {
			if err := pt.tuner.SetTrainable(name, false); err != nil {
				return err
			}
		}
		if enc, ok := m.promptEncoder(name); ok {
			if err := nn.Freeze(enc); err != nil {
				return err
			}
		}
		return m.applyBias(cfg, false)
	}
	return nil
}

// fill copies the file's tensors into adapter name's parameters, after
// checking every key and shape first.
func (m *Model) fill(set *safetensors.Set, path, name string) error {
	want, err := m.AdapterStateDict(name)
	if err != nil {
		return err
	}
	byKey := map[string]*nn.Param{}
	for _, np := range want {
		byKey[np.Name] = np.Param
	}
	// keys with no adapter counterpart load into the base model by name
	// (PEFT's strict=False load), e.g. biases of another bias policy
	baseByName := map[string]*nn.Param{}
	for _, np := range baseParams(m.BaseModel.Model) {
		baseByName[KeyPrefix+np.Name] = np.Param
	}
	plan := map[string]*nn.Param{}
	for _, np := range want {
		info, _, ok := set.Info(np.Name)
		if !ok {
			return fmt.Errorf("peft: %s: missing tensor %q", path, np.Name)
		}
		if !nn.SameShape(info.Shape, np.Param.Shape()) {
			return fmt.Errorf("peft: %s: tensor %q has shape %v, the model expects %v (adapter made for another model?)", path, np.Name, info.Shape, np.Param.Shape())
		}
		plan[np.Name] = np.Param
	}
	for _, key := range set.Names() {
		if _, ok := byKey[key]; ok {
			continue
		}
		p, ok := baseByName[key]
		if !ok {
			return fmt.Errorf("peft: %s: unexpected tensor %q (no such module or adapter parameter)", path, key)
		}
		info, _, _ := set.Info(key)
		if !nn.SameShape(info.Shape, p.Shape()) {
			return fmt.Errorf("peft: %s: tensor %q has shape %v, the model expects %v", path, key, info.Shape, p.Shape())
		}
		plan[key] = p
	}
	s := tensor.NoGradScope()
	defer s.Close()
	for key, p := range plan {
		t, err := nn.TensorFromFile(s, set, key, p.DType())
		if err != nil {
			return fmt.Errorf("peft: %w", err)
		}
		s.CopyInto(p.T(), t)
		s.FreeAll()
	}
	return s.Err()
}
