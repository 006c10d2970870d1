package peft

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gopeft/peft/internal/fsutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
)

// Save writes every adapter as PEFT's save_pretrained does: "default"
// into dir, any other adapter into dir/<name>/. Each gets
// adapter_config.json and adapter_model.safetensors with PEFT's keys; base
// weights are never written (except biases under bias="all"/"lora_only"
// and modules_to_save copies, as in PEFT). SaveSelected saves some.
func (m *Model) Save(dir string) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.saveSelected(dir, m.names...)
}

// SaveSelected writes the named adapters as Save does (PEFT's
// save_pretrained(dir, selected_adapters=[...])): "default" into dir, any
// other into dir/<name>/. An unknown name is an error and nothing is
// written.
func (m *Model) SaveSelected(dir string, names ...string) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.saveSelected(dir, names...)
}

func (m *Model) saveSelected(dir string, names ...string) error {
	for _, n := range names {
		if _, ok := m.configs[n]; !ok {
			return fmt.Errorf("peft: selected adapter %q does not exist; the adapters are %v", n, m.names)
		}
	}
	for _, name := range names {
		sub := dir
		if name != DefaultAdapter {
			sub = filepath.Join(dir, name)
		}
		if err := m.saveAdapter(sub, name); err != nil {
			return err
		}
	}
	return nil
}

// SaveAdapter writes one adapter to dir (files replaced atomically).
func (m *Model) SaveAdapter(dir, name string) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.saveAdapter(dir, name)
}

func (m *Model) saveAdapter(dir, name string) error {
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
		state = append(append([]nn.NamedParam{{Name: PromptEmbeddingsKey, Param: p}}, m.promptTaskState(name)...), m.promptHeadState(name)...)
	} else {
		var err error
		if state, err = m.adapterStateDict(name); err != nil {
			return err
		}
	}
	return writeAdapter(dir, name, cfg, state)
}

// WriteAdapter writes an adapter folder as SaveAdapter does (files
// replaced atomically): cfg as adapter_config.json and state, under its
// names, as adapter_model.safetensors. Methods use it to save a state they
// compute (lora.SaveConverted).
func WriteAdapter(dir string, cfg Config, state []nn.NamedParam) error {
	return writeAdapter(dir, "", cfg, state)
}

// writeAdapter is WriteAdapter; with the adapter's name, a StateFilter
// config first cuts the tensors (AdaLoRA's kept ranks).
func writeAdapter(dir, name string, cfg Config, state []nn.NamedParam) error {
	tensors, err := nn.StateTensors(state, "")
	if err != nil {
		return fmt.Errorf("peft: save %s: %w", dir, err)
	}
	if f, ok := cfg.(StateFilter); ok && name != "" {
		if tensors, err = f.SaveTensors(name, tensors); err != nil {
			return fmt.Errorf("peft: save %q: %w", name, err)
		}
	}
	js, err := cfg.MarshalJSON()
	if err != nil {
		return fmt.Errorf("peft: save %s config: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("peft: %w", err)
	}
	CleanTemp(dir)
	js = append(js, '\n')
	// The switch from the old adapter to the new one (see ReadConfig): the
	// weights file carries the new config and the hashes of the new and the
	// old adapter_config.json, and is renamed into place first; the config
	// is renamed second. A reader that finds the new weights beside the old
	// config takes the config from the weights, so it sees the old adapter
	// or the new one, never half of each.
	meta := map[string]string{"format": "pt", MetaConfig: string(js), MetaConfigHash: hashHex(js)}
	if old, err := os.ReadFile(filepath.Join(dir, ConfigName)); err == nil {
		meta[MetaPrevConfigHash] = hashHex(old)
	} else if errors.Is(err, os.ErrNotExist) {
		meta[MetaPrevConfigHash] = "none"
	} else {
		return fmt.Errorf("peft: %w", err)
	}
	if err := safetensors.Write(filepath.Join(dir, WeightsName), tensors, meta); err != nil {
		return fmt.Errorf("peft: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, ConfigName), js); err != nil {
		return fmt.Errorf("peft: %w", err)
	}
	return nil
}

// Metadata keys of adapter_model.safetensors written by SaveAdapter (PEFT
// reads only "format" and ignores the others).
const (
	MetaConfig         = "gopeft.adapter_config"         // the adapter_config.json saved with these weights
	MetaConfigHash     = "gopeft.adapter_config_sha256"  // its SHA-256
	MetaPrevConfigHash = "gopeft.previous_config_sha256" // the SHA-256 of the config these weights replaced ("none": there was none)
)

func hashHex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// CleanTemp removes the temporary files a killed save left in dir (the
// ".<name>.tmp*" files of the atomic writers of the adapter's two files).
// A save into dir calls it first, so dir must not be saved into by two
// writers at once.
func CleanTemp(dir string) {
	for _, pat := range []string{"." + ConfigName + ".tmp*", "." + WeightsName + ".tmp-*"} {
		leftovers, _ := filepath.Glob(filepath.Join(globEscape(dir), pat))
		for _, f := range leftovers {
			os.Remove(f)
		}
	}
}

func globEscape(p string) string {
	var b strings.Builder
	for _, r := range p {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// configFor returns the adapter_config.json that belongs to the weights
// file f opened from dir, and the path to name in errors: normally the
// folder's file; the config stored in f when f says it replaced exactly
// the folder's config (a save was interrupted between its two renames, or
// a reader raced it); the folder's file when the hashes say someone edited
// it since (an edit wins over the copy in the weights).
func configFor(dir string, f *safetensors.File) (data []byte, path string, err error) {
	path = filepath.Join(dir, ConfigName)
	data, err = os.ReadFile(path)
	missing := errors.Is(err, os.ErrNotExist)
	if err != nil && !missing {
		return nil, path, fmt.Errorf("peft: %w", err)
	}
	if f != nil {
		meta := f.Metadata()
		embedded, has := meta[MetaConfig]
		if has && hashHex([]byte(embedded)) == meta[MetaConfigHash] {
			prev := meta[MetaPrevConfigHash]
			if (missing && prev == "none") || (!missing && hashHex(data) == prev) {
				return []byte(embedded), filepath.Join(dir, WeightsName) + " (metadata " + MetaConfig + ")", nil
			}
		}
	}
	if missing {
		return nil, path, fmt.Errorf("peft: %w", err)
	}
	return data, path, nil
}

// AdapterStateDict lists what PEFT saves for adapter name, under the file's
// keys (base_model.model.<path>.<local name>, adapter name removed). For a
// prompt-learning adapter it is the one tensor prompt_embeddings: the
// adapter's table, or — when an encoder network computes it (P-tuning,
// prefix projection) — a computed copy that the caller owns and frees
// with Param.Free.
func (m *Model) AdapterStateDict(name string) ([]nn.NamedParam, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.adapterStateDict(name)
}

func (m *Model) adapterStateDict(name string) ([]nn.NamedParam, error) {
	cfg, ok := m.configs[name]
	if !ok {
		return nil, fmt.Errorf("peft: no adapter %q", name)
	}
	if _, isPrompt := cfg.(PromptConfig); isPrompt {
		p, _, err := m.promptEmbeddings(name)
		if err != nil {
			return nil, err
		}
		out := append([]nn.NamedParam{{Name: PromptEmbeddingsKey, Param: p}}, m.promptTaskState(name)...)
		return append(out, m.promptHeadState(name)...), nil
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
		if st, ok := pt.tuner.(SharedStater); ok {
			for _, np := range st.SharedAdapterState(name) {
				add(SharedKeyPrefix+np.Name, np.Param)
			}
		}
	}
	for _, np := range m.biasParams(cfg) {
		add(stateKeyPrefix(cfg)+np.Name, np.Param)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// SharedKeyPrefix is what PEFT puts before the keys of tensors that an
// adapter shares between its layers and keeps on the tuner model (VeRA's
// "base_model.vera_A").
const SharedKeyPrefix = "base_model."

// SharedStater is implemented by Tuners whose adapter also has tensors
// shared by all of its layers, held by PEFT on the tuner model rather than
// on a layer (VeRA's frozen projections vera_A and vera_B): they are saved
// once, under SharedKeyPrefix + local name, and loaded into the shared
// tensors. Every layer of the adapter returns the same *nn.Param values.
// Shared tensors are not parameters of the module tree (PEFT keeps them as
// buffers): they are neither counted nor trained.
type SharedStater interface {
	SharedAdapterState(name string) []nn.NamedParam
}

// Warn receives the library's warnings (a loaded adapter that differs from
// what its config says, in a way the library can make up for); by default
// they go to standard error. Replace it to log them elsewhere.
var Warn = func(msg string) { fmt.Fprintln(os.Stderr, "peft: warning: "+msg) }

func firstKey(m map[string]bool) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys[0]
}

// LoadOption is an option of Load and LoadAdapter (PEFT's keyword
// arguments of PeftModel.from_pretrained and load_adapter): WithAdapterName,
// Trainable, or a LoadOptions value. Options are immutable values, safe
// for concurrent use.
type LoadOption interface {
	applyLoad(*loadSettings)
}

type loadSettings struct {
	name      string
	trainable bool
}

type loadOptionFunc func(*loadSettings)

func (f loadOptionFunc) applyLoad(s *loadSettings) { f(s) }

// WithAdapterName loads the adapter under name instead of "default"
// (PEFT's adapter_name=). LoadAdapter takes the name as its argument and
// ignores this option.
func WithAdapterName(name string) LoadOption {
	return loadOptionFunc(func(s *loadSettings) { s.name = name })
}

// Trainable keeps the loaded adapter trainable (PEFT's is_trainable=True).
// Without it the adapter is loaded for inference, its parameters frozen
// (PEFT's default). A prompt-learning adapter then trains its saved
// prompt_embeddings table directly (PEFT refuses is_trainable for these:
// the encoder network is not saved).
func Trainable() LoadOption {
	return loadOptionFunc(func(s *loadSettings) { s.trainable = true })
}

// LoadOptions is the struct form of the options, kept for callers written
// before WithAdapterName and Trainable: LoadOptions{Trainable: true} is
// Trainable().
type LoadOptions struct {
	// Trainable is PEFT's is_trainable (see Trainable).
	Trainable bool
}

func (o LoadOptions) applyLoad(s *loadSettings) { s.trainable = s.trainable || o.Trainable }

func loadSettingsOf(opts []LoadOption) loadSettings {
	st := loadSettings{name: DefaultAdapter}
	for _, o := range opts {
		if o != nil {
			o.applyLoad(&st)
		}
	}
	return st
}

// Load wraps base with the adapter saved in dir (PEFT's
// PeftModel.from_pretrained): any registered method, chosen by
// adapter_config.json's peft_type (import the method's package, or package
// auto which imports them all). The adapter is named "default" unless
// WithAdapterName says otherwise, is active, and is frozen for inference
// unless Trainable is given.
func Load(base models.Model, dir string, opts ...LoadOption) (*Model, error) {
	if base == nil {
		return nil, fmt.Errorf("peft: load %s: the base model is nil", dir)
	}
	st := loadSettingsOf(opts)
	set, cfg, err := openAdapter(dir)
	if err != nil {
		return nil, err
	}
	defer set.Close()
	if err := nn.Freeze(base); err != nil {
		return nil, err
	}
	m := &Model{BaseModel: &TunerModel{Model: base, kind: cfg.PeftType()}, configs: map[string]Config{}, task: cfg.TaskType()}
	if err := m.loadAdapter(set, dir, st.name, cfg, st); err != nil {
		return nil, err
	}
	return m, nil
}

// openAdapter opens dir's weights once and returns them with the config
// that belongs to them (configFor).
func openAdapter(dir string) (*safetensors.Set, Config, error) {
	set, err := safetensors.OpenFiles(filepath.Join(dir, WeightsName))
	if err != nil {
		return nil, nil, fmt.Errorf("peft: %w", err)
	}
	data, path, err := configFor(dir, set.Files()[0])
	if err == nil {
		var cfg Config
		if cfg, err = ParseConfig(path, data); err == nil {
			return set, cfg, nil
		}
	}
	set.Close()
	return nil, nil, err
}

// LoadAdapter adds the adapter saved in dir under name (PEFT's
// load_adapter): not activated unless it is the only one, frozen unless
// Trainable is given.
func (m *Model) LoadAdapter(dir, name string, opts ...LoadOption) error {
	st := loadSettingsOf(opts)
	set, cfg, err := openAdapter(dir)
	if err != nil {
		return err
	}
	defer set.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.loadAdapter(set, dir, name, cfg, st)
}

func (m *Model) loadAdapter(set *safetensors.Set, dir, name string, cfg Config, opt loadSettings) error {
	path := filepath.Join(dir, WeightsName)
	if err := m.addAdapter(name, cfg, true); err != nil {
		return err
	}
	if p, ok := cfg.(LoadPreparer); ok {
		if err := p.PrepareLoad(m.BaseModel.Model, name); err != nil {
			m.dropAdapter(name)
			return fmt.Errorf("peft: %s: %w", path, err)
		}
	}
	if err := m.fill(set, path, name); err != nil {
		m.dropAdapter(name) // nothing half-loaded
		return err
	}
	if err := nn.ToDevice(m, m.Device()); err != nil { // adapters live beside the base
		return err
	}
	if len(m.active) == 0 {
		if err := m.setAdapter(name); err != nil {
			return err
		}
	}
	if !opt.trainable {
		nn.SetTraining(m, false) // PEFT's load_adapter calls eval() for inference
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
	want, err := m.adapterStateDict(name)
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
	// PEFT 0.10 saves no bias under bias="lora_only" (it looks for
	// "<layer>.bias", the parameter is "<layer>.base_layer.bias"): such an
	// adapter loads with the base's biases, and a warning says so
	lostBias := map[string]bool{}
	if b, ok := m.configs[name].(BiasConfig); ok && b.BiasMode() == "lora_only" {
		for _, np := range m.biasParams(m.configs[name]) {
			if _, _, ok := set.Info(stateKeyPrefix(m.configs[name]) + np.Name); !ok {
				lostBias[stateKeyPrefix(m.configs[name])+np.Name] = true
			}
		}
		if len(lostBias) > 0 && len(lostBias) < len(m.biasParams(m.configs[name])) {
			lostBias = map[string]bool{} // some saved, some not: not PEFT's bug, a damaged file
		}
	}
	if len(lostBias) > 0 {
		Warn(fmt.Sprintf("%s: bias=\"lora_only\" but no bias tensor is saved (%d missing, e.g. %q): "+
			"PEFT 0.10 does not save them (it looks for \"<layer>.bias\", the parameter is \"<layer>.base_layer.bias\"); "+
			"the base model's biases are used", path, len(lostBias), firstKey(lostBias)))
	}
	for _, np := range want {
		info, _, ok := set.Info(np.Name)
		if !ok && lostBias[np.Name] {
			continue
		}
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
