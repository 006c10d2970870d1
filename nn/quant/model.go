package quant

import (
	"fmt"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// Quantize replaces every nn.Linear under m that cfg selects by a 4-bit
// Linear, freeing its float weight, and stores the embedding tables in
// cfg.EmbeddingDType when set. Call it on a base model, before adapters
// are added (LoRA's own layers are Linears too). A layer whose weight is
// shared with another module (a tied lm_head) is an error. To quantize
// while loading, without holding the float model first, use the model
// package's LoadQuantized.
func Quantize(m nn.Module, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	shared := paramUses(m)
	type pick struct {
		path string
		lin  *nn.Linear
	}
	var picks []pick
	_ = nn.Walk(m, func(path string, mod nn.Module) error {
		if l, ok := mod.(*nn.Linear); ok && path != "" && cfg.Selects(path) {
			picks = append(picks, pick{path, l})
		}
		return nil
	})
	for _, p := range picks {
		if shared[p.lin.Weight] > 1 {
			return fmt.Errorf("quant: %s: its weight is shared with another module (tied embeddings); leave it in float (SkipModules)", p.path)
		}
	}
	for _, p := range picks {
		q, err := NewLinear(p.lin.Weight.T(), p.lin.Bias, cfg)
		if err != nil {
			return fmt.Errorf("quant: %s: %w", p.path, err)
		}
		if _, err := nn.Replace(m, p.path, q); err != nil {
			q.FreeBuffers()
			q.Weight.Free()
			return err
		}
		p.lin.Weight.Free()
	}
	return CastEmbeddings(m, cfg.EmbeddingDType)
}

// CastEmbeddings stores every nn.Embedding table under m in dtype (see
// Config.EmbeddingDType); "" or "float32" leaves them. A table shared with
// a float layer (a tied lm_head) is an error.
func CastEmbeddings(m nn.Module, dtype string) error {
	dt, err := ParseDType(dtype)
	if err != nil {
		return fmt.Errorf("quant: embedding dtype: %w", err)
	}
	if dt == tensor.Float32 {
		return nil
	}
	shared := paramUses(m)
	var embs []*nn.Embedding
	var paths []string
	_ = nn.Walk(m, func(path string, mod nn.Module) error {
		if e, ok := mod.(*nn.Embedding); ok {
			embs = append(embs, e)
			paths = append(paths, path)
		}
		return nil
	})
	for i, e := range embs {
		if shared[e.Weight] > 1 {
			return fmt.Errorf("quant: %s: its table is shared with another module (tied embeddings); it stays float32", paths[i])
		}
	}
	s := tensor.NoGradScope()
	defer s.Close()
	for _, e := range embs {
		if e.Weight.DType() == dt {
			continue
		}
		t := s.To(e.Weight.T(), dt)
		if err := s.Err(); err != nil {
			return fmt.Errorf("quant: %w", err)
		}
		e.Weight.Set(s.Keep(t))
	}
	return nil
}

// paramUses counts the modules that hold each parameter.
func paramUses(m nn.Module) map[*nn.Param]int {
	uses := map[*nn.Param]int{}
	_ = nn.Walk(m, func(_ string, mod nn.Module) error {
		for _, np := range nn.LocalParams(mod) {
			uses[np.Param]++
		}
		return nil
	})
	return uses
}

// Dequantize replaces every 4-bit Linear under m by an nn.Linear with the
// dequantized float32 weight, freeing the packed one: a model that saves,
// merges and runs like an unquantized one (a merged QLoRA model is
// typically dequantized this way). Embedding tables stored in 16 bits are
// widened back to float32.
func Dequantize(m nn.Module) error {
	type pick struct {
		path string
		q    *Linear
	}
	var picks []pick
	_ = nn.Walk(m, func(path string, mod nn.Module) error {
		if q, ok := mod.(*Linear); ok {
			picks = append(picks, pick{path, q})
		}
		return nil
	})
	for _, p := range picks {
		if p.path == "" {
			return fmt.Errorf("quant: the root module is a 4-bit Linear; use its Dequantized method")
		}
		l, err := p.q.Dequantized()
		if err != nil {
			return fmt.Errorf("quant: %s: %w", p.path, err)
		}
		if _, err := nn.Replace(m, p.path, l); err != nil {
			l.Weight.Free()
			return err
		}
		p.q.Weight.Free()
		p.q.FreeBuffers()
	}
	s := tensor.NoGradScope()
	defer s.Close()
	return nn.Walk(m, func(path string, mod nn.Module) error {
		if e, ok := mod.(*nn.Embedding); ok && e.Weight.DType() != tensor.Float32 {
			t := s.To(e.Weight.T(), tensor.Float32)
			if err := s.Err(); err != nil {
				return fmt.Errorf("quant: %s: %w", path, err)
			}
			e.Weight.Set(s.Keep(t))
		}
		return nil
	})
}

// WeightBytes is the memory m's weights occupy in libtorch: every
// parameter's storage (packed codes at their packed size; a shared
// parameter once) plus the 4-bit layers' quantization statistics.
func WeightBytes(m nn.Module) int64 {
	var n int64
	for _, np := range nn.NamedParams(m) {
		n += tensorBytes(np.Param.T())
	}
	_ = nn.Walk(m, func(_ string, mod nn.Module) error {
		if q, ok := mod.(*Linear); ok {
			n += q.StorageBytes() - tensorBytes(q.Weight.T())
		}
		return nil
	})
	return n
}

// Layers lists the 4-bit Linear layers under m by path.
func Layers(m nn.Module) map[string]*Linear {
	out := map[string]*Linear{}
	_ = nn.Walk(m, func(path string, mod nn.Module) error {
		if q, ok := mod.(*Linear); ok {
			out[path] = q
		}
		return nil
	})
	return out
}
