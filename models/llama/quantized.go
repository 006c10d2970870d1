package llama

import (
	"fmt"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/nn/quant"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
)

// LoadQuantized reads a HF folder as Load does, with the Linear layers cfg
// selects (by default every one but lm_head) quantized to 4 bits while
// loading — transformers' from_pretrained with a BitsAndBytesConfig
// (load_in_4bit). Each selected weight is read from the checkpoint and
// quantized on its own, so the float model never exists in memory at once.
// Norms, embeddings (unless cfg.EmbeddingDType says otherwise) and the
// layers left in float load as float32.
//
//	m, err := llama.LoadQuantized(dir, quant.Config{UseDoubleQuant: true}) // NF4 + double quant
func LoadQuantized(dir string, cfg quant.Config, opts ...models.LoadOption) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("llama: %w", err)
	}
	m, err := load(dir, func(m *Model, set *safetensors.Set) (func(string) bool, func() error, error) {
		return quantizeOnLoad(m, set, cfg)
	}, opts)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// quantizeOnLoad takes the selected layers' weights out of the skeleton
// (LoadState then skips those keys) and returns the step that reads and
// quantizes them one at a time after the rest has loaded.
func quantizeOnLoad(m *Model, set *safetensors.Set, cfg quant.Config) (func(string) bool, func() error, error) {
	type pick struct {
		path  string
		lin   *nn.Linear
		shape []int64
	}
	var picks []pick
	own := map[string]bool{}
	err := nn.Walk(m, func(path string, mod nn.Module) error {
		l, ok := mod.(*nn.Linear)
		if !ok || !cfg.Selects(path) {
			return nil
		}
		if path == "lm_head" && m.Config.TieWordEmbeddings {
			return fmt.Errorf("llama: lm_head is tied to embed_tokens (tie_word_embeddings); it cannot be quantized on its own — leave it in SkipModules")
		}
		picks = append(picks, pick{path, l, l.Weight.Shape()})
		own[path+".weight"] = true
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for _, p := range picks {
		p.lin.Weight.Free() // an untouched skeleton tensor
		p.lin.Weight = nil  // LoadState skips a layer without weight
	}
	finish := func() error {
		s := tensor.NoGradScope()
		defer s.Close()
		for _, p := range picks {
			key := p.path + ".weight"
			info, f, ok := set.Info(key)
			if !ok {
				return fmt.Errorf("llama: %s: missing tensor %q", set.Files()[0].Path(), key)
			}
			if !nn.SameShape(info.Shape, p.shape) {
				return fmt.Errorf("llama: %s: tensor %q has shape %v, the model expects %v", f.Path(), key, info.Shape, p.shape)
			}
			w, err := nn.TensorFromFile(s, set, key, tensor.Float32)
			if err != nil {
				return fmt.Errorf("llama: %w", err)
			}
			q, err := quant.NewLinear(w, p.lin.Bias, cfg)
			if err != nil {
				return fmt.Errorf("llama: %s: %w", key, err)
			}
			if _, err := nn.Replace(m, p.path, q); err != nil {
				nn.FreeParams(q)
				return err
			}
			s.FreeAll() // one float weight in memory at a time
		}
		if err := quant.CastEmbeddings(m, cfg.EmbeddingDType); err != nil {
			return fmt.Errorf("llama: %w", err)
		}
		return s.Err()
	}
	return func(k string) bool { return own[k] }, finish, nil
}
