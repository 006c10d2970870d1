package peft

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"sync"

	"github.com/gopeft/peft/safetensors"
)

// Config is what every method's configuration provides. Methods live in
// their own packages and register a decoder for their peft_type. What a
// method does to the model is said by the further interfaces its config
// implements: TunerConfig (it wraps layers: LoRA, IA3, bottleneck
// adapters), PromptConfig/PrefixConfig (prompt learning), SelectiveConfig
// (it trains chosen base parameters: BitFit, freeze tuning).
type Config interface {
	PeftType() PeftType
	TaskType() TaskType
	// MarshalJSON renders adapter_config.json with PEFT's field names
	// (fields this library does not know are kept from the file read).
	MarshalJSON() ([]byte, error)
}

// BiasConfig is implemented by configs with PEFT's `bias` policy
// ("none", "all", "<prefix>_only").
type BiasConfig interface {
	BiasMode() string
}

// ModulesToSaveConfig is implemented by configs with `modules_to_save`.
type ModulesToSaveConfig interface {
	ModulesToSave() []string
}

// Decoder parses an adapter_config.json of one peft_type.
type Decoder func(data []byte) (Config, error)

var (
	regMu    sync.RWMutex
	registry = map[PeftType]Decoder{}
)

// Register makes a method loadable by Load; method packages call it in init.
func Register(t PeftType, d Decoder) {
	regMu.Lock()
	defer regMu.Unlock()
	registry[t] = d
}

// Registered lists the peft_types that can be loaded.
func Registered() []PeftType {
	regMu.RLock()
	defer regMu.RUnlock()
	out := make([]PeftType, 0, len(registry))
	for t := range registry {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// ReadConfig reads dir/adapter_config.json with the decoder registered for
// its peft_type. When dir/adapter_model.safetensors was written by Save
// and says it replaced the config still in the folder (a save was stopped
// between its two renames), the config saved with the weights is read
// instead, so the config always matches the weights beside it.
func ReadConfig(dir string) (Config, error) {
	var f *safetensors.File
	if w, err := safetensors.Open(filepath.Join(dir, WeightsName)); err == nil {
		defer w.Close()
		f = w
	}
	data, path, err := configFor(dir, f)
	if err != nil {
		return nil, err
	}
	return ParseConfig(path, data)
}

// ParseConfig decodes adapter_config.json bytes (path is used in errors).
func ParseConfig(path string, data []byte) (Config, error) {
	var head struct {
		PeftType *string `json:"peft_type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("peft: %s: %w", path, err)
	}
	if head.PeftType == nil {
		return nil, fmt.Errorf("peft: %s: missing field \"peft_type\"", path)
	}
	regMu.RLock()
	dec, ok := registry[PeftType(*head.PeftType)]
	regMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("peft: %s: peft_type %q is not registered (linked methods: %v)", path, *head.PeftType, Registered())
	}
	cfg, err := dec(data)
	if err != nil {
		return nil, fmt.Errorf("peft: %s: %w", path, err)
	}
	return cfg, nil
}
