// Package adalora is AdaLoRA — "Adaptive Budget Allocation for
// Parameter-Efficient Fine-Tuning" (Zhang et al. 2023) — as HF PEFT's
// AdaLoraConfig, SVDLinear and RankAllocator implement it.
//
// Each adapted layer learns its update in SVD form, ΔW = B·diag(E)·A ·
// lora_alpha / ranknum, starting at rank init_r. During training the rank
// allocator scores every singular triplet (sensitivity |p ⊙ ∇p| smoothed
// with beta1, times its uncertainty smoothed with beta2), and on a cubic
// schedule from the total initial budget down to target_r per layer —
// after tinit warm-up steps, every deltaT steps, until total_step - tfinal
// — zeroes the singular values (lora_E) of the weakest triplets, so that
// layers that matter keep more rank. The loss gets an orthogonal
// regulariser, orth_reg_weight × mean ‖AAᵀ - I‖_F, ‖BᵀB - I‖_F, which
// keeps A and B close to singular vectors.
//
// train.Trainer drives the allocator: the Model (peft.Model) forwards its
// AfterOptimizerStep to the config, after every optimizer step and before
// the gradients are zeroed (PEFT's update_and_allocate(global_step)). A
// hand-written loop calls peft.Model.AfterOptimizerStep at the same point.
//
// Save writes the allocation as PEFT does: rank_pattern in
// adapter_config.json (which ranks of init_r each layer keeps) and
// lora_A/lora_E/lora_B cut to the kept ranks; Load resizes the layers to
// the pattern. As in PEFT the resized layers keep ranknum = init_r, so a
// reloaded adapter computes what the trained one did.
//
//	cfg := adalora.NewConfig(1000)          // total_step
//	cfg.InitR, cfg.TargetR, cfg.Tinit, cfg.Tfinal = 12, 4, 100, 200
//	model, err := adalora.Wrap(base, cfg)
//
// Differences from PEFT 0.10 (following current PEFT): E starts at zero
// (0.10: N(0, 0.02)); the config is validated when made (total_step > 0,
// tinit < total_step - tfinal, orth_reg_weight >= 0).
package adalora

import (
	"fmt"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
)

func init() { peft.Register(PeftType, Decode) }

// Wrap freezes base and adds cfg as adapter "default" (PEFT's get_peft_model).
func Wrap(base models.Model, cfg *Config) (*peft.Model, error) {
	return peft.New(base, cfg)
}

// DefaultTargets are PEFT's default target_modules per model_type
// (TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING, and LoRA's for
// the families it lacks).
var DefaultTargets = map[string][]string{
	"llama": {"q_proj", "v_proj"}, "mistral": {"q_proj", "v_proj"}, "qwen2": {"q_proj", "v_proj"},
	"qwen3": {"q_proj", "v_proj"}, "gemma": {"q_proj", "v_proj"}, "gemma2": {"q_proj", "v_proj"},
	"gemma3_text": {"q_proj", "v_proj"}, "gpt2": {"c_attn"}, "bloom": {"query_key_value"},
	"bert": {"query", "value"}, "roberta": {"query", "key", "value", "dense"},
}

// Prepare implements peft.TunerConfig: unset target_modules take PEFT's
// default for the model type (saved as filled in), "all-linear" expands.
func (c *Config) Prepare(model nn.Module) (peft.Targeting, error) {
	if c.Task == "" {
		c.Task = peft.CausalLM
	}
	if !c.TargetModules.IsSet() {
		mt := peft.ModelType(model)
		d, ok := DefaultTargets[mt]
		if !ok {
			return peft.Targeting{}, fmt.Errorf("adalora: no target_modules given and no default for model_type %q", mt)
		}
		c.TargetModules = peft.TargetList(d...)
	}
	if err := c.Validate(); err != nil {
		return peft.Targeting{}, fmt.Errorf("adalora: %w", err)
	}
	c.TargetModules = peft.ExpandAllLinear(model, c.TargetModules)
	return peft.Targeting{TargetModules: c.TargetModules, ExcludeModules: c.ExcludeModules,
		LayersToTransform: c.LayersToTransform, LayersPattern: c.LayersPattern, ModulesToSave: c.ModulesToSave_}, nil
}

// CreateOrUpdate implements peft.TunerConfig (PEFT's AdaLoraModel
// _create_and_replace): a Linear or Conv1D becomes an SVDLinear of rank
// init_r; an SVDLinear already there gets the adapter added.
func (c *Config) CreateOrUpdate(t peft.Target) (peft.Tuner, error) {
	var layer *SVDLinear
	switch m := t.Module.(type) {
	case *SVDLinear:
		layer = m
	case *nn.Linear, *nn.Conv1D:
		layer = newSVDLinear(m.(nn.Layer))
	default:
		return nil, fmt.Errorf("adalora: target module %q is a %s; AdaLoRA supports Linear and Conv1D layers", t.Path, nn.TypeName(t.Module))
	}
	if err := layer.addAdapter(t.Adapter, c.InitR, c.LoraAlpha, c.LoraDropout, c.initWeights()); err != nil {
		return nil, fmt.Errorf("adalora: %s: %w", t.Path, err)
	}
	return layer, nil
}

// PrepareLoad implements peft.LoadPreparer: before a saved adapter's
// tensors are read, every layer named in rank_pattern is cut to its kept
// ranks (PEFT's resize_modules_by_rank_pattern; ranknum keeps init_r).
func (c *Config) PrepareLoad(model nn.Module, adapter string) error {
	if c.RankPattern == nil {
		return nil
	}
	byPath := map[string]*SVDLinear{}
	for _, l := range svdLayers(model, adapter) {
		byPath[l.path] = l.layer
	}
	for _, key := range sortedKeys(c.RankPattern) {
		path, ok := patternModule(key, adapter)
		l := byPath[path]
		if !ok || l == nil {
			return fmt.Errorf("adalora: rank_pattern key %q names no AdaLoRA layer of the model", key)
		}
		if err := l.resize(adapter, c.RankPattern[key]); err != nil {
			return fmt.Errorf("adalora: rank_pattern %q: %w", key, err)
		}
	}
	return nil
}

// SaveTensors implements peft.StateFilter: each layer's lora_A and lora_E
// rows and lora_B columns are cut to the ranks rank_pattern keeps, when
// the layer still has all of them (PEFT's resize_state_dict_by_rank_pattern).
func (c *Config) SaveTensors(adapter string, ts []safetensors.Tensor) ([]safetensors.Tensor, error) {
	if c.RankPattern == nil {
		return ts, nil
	}
	byName := map[string]int{}
	for i, t := range ts {
		byName[t.Name] = i
	}
	for _, key := range sortedKeys(c.RankPattern) {
		path, ok := patternModule(key, adapter)
		if !ok {
			return nil, fmt.Errorf("adalora: rank_pattern key %q does not name a lora_E", key)
		}
		keep := c.RankPattern[key]
		for _, local := range []string{"lora_E", "lora_A", "lora_B"} {
			name := peft.KeyPrefix + path + "." + local
			i, ok := byName[name]
			if !ok {
				return nil, fmt.Errorf("adalora: rank_pattern key %q: the adapter has no tensor %q", key, name)
			}
			cut, err := cutRanks(ts[i], keep, local == "lora_B")
			if err != nil {
				return nil, fmt.Errorf("adalora: %s: %w", name, err)
			}
			ts[i] = cut
		}
	}
	return ts, nil
}

// cutRanks keeps the rows (or, cols, the columns) of a 2-D tensor where
// keep is true; a tensor whose rank dimension is already the kept count
// is returned as it is.
func cutRanks(t safetensors.Tensor, keep []bool, cols bool) (safetensors.Tensor, error) {
	if len(t.Shape) != 2 {
		return t, fmt.Errorf("shape %v is not 2-D", t.Shape)
	}
	kept := 0
	for _, on := range keep {
		if on {
			kept++
		}
	}
	dim := 0
	if cols {
		dim = 1
	}
	if int(t.Shape[dim]) == kept {
		return t, nil
	}
	if int(t.Shape[dim]) != len(keep) {
		return t, fmt.Errorf("rank %d, the rank pattern has %d entries", t.Shape[dim], len(keep))
	}
	es := t.DType.Size()
	rows, ncols := int(t.Shape[0]), int(t.Shape[1])
	var data []byte
	out := t
	if cols {
		for r := 0; r < rows; r++ {
			for c, on := range keep {
				if on {
					off := (r*ncols + c) * es
					data = append(data, t.Data[off:off+es]...)
				}
			}
		}
		out.Shape = []int64{int64(rows), int64(kept)}
	} else {
		for r, on := range keep {
			if on {
				data = append(data, t.Data[r*ncols*es:(r+1)*ncols*es]...)
			}
		}
		out.Shape = []int64{int64(kept), int64(ncols)}
	}
	if data == nil {
		data = []byte{}
	}
	out.Data = data
	return out, nil
}
