// Package adapter is bottleneck adapters (Houlsby et al. 2019, Pfeiffer et
// al. 2020; AdapterHub's BnConfig): a small module — down-projection to
// k = hidden/reduction_factor, a non-linearity, up-projection back, and a
// residual skip — placed after the attention output projection
// (mh_adapter) and/or after the feed-forward output projection
// (output_adapter), before the layer's residual add. The up-projection
// starts at zero (init_weights "mam_adapter"), so a freshly wrapped model
// computes exactly what the base model does.
//
// In the seed notes' taxonomy these are additive methods (adapters): each
// adds 2·h·k + h + k parameters per placement (with Houlsby's trained
// LayerNorms, 0.5–8% of a model in the paper's settings) and cannot be
// merged — Merge and MergeAndUnload return an error wrapping
// peft.ErrNotMergeable, because the adapter is a non-linear module, not a
// weight delta.
//
//	model, err := adapter.Wrap(base, adapter.Houlsby())   // after attention and FFN, swish, LayerNorms trained
//	model, err := adapter.Wrap(base, adapter.Pfeiffer())  // after the FFN only, relu
//
// Like the other methods, an adapter is a layer that wraps a module of
// the model (adapter.Layer around o_proj / down_proj; BLOOM's
// self_attention.dense / mlp.dense_4h_to_h; BERT's attention.output.dense
// / layer.N.output.dense, before the post-LayerNorm residual, as
// AdapterHub places them in BertSelfOutput / BertOutput).
//
// # Save format
//
// Model.Save writes this library's format, shaped like PEFT's:
// adapter_config.json holds "peft_type": "BOTTLENECK", "task_type",
// AdapterHub's BnConfig fields ("mh_adapter", "output_adapter",
// "reduction_factor", "non_linearity", "init_weights", "scaling",
// "leave_out", "dropout") and this package's "train_layer_norms",
// "mh_adapter_modules", "output_adapter_modules", "modules_to_save",
// "base_model_name_or_path", "revision", "inference_mode" (sorted keys,
// indent 2). adapter_model.safetensors holds, for each wrapped projection
// P, AdapterHub's four tensors under PEFT-style keys
//
//	base_model.model.<P>.adapter_down.0.weight   [k, h]
//	base_model.model.<P>.adapter_down.0.bias     [k]
//	base_model.model.<P>.adapter_up.weight       [h, k]
//	base_model.model.<P>.adapter_up.bias         [h]
//
// (in memory they are <P>.adapters.<adapter name>.…), plus the trained
// LayerNorm copies under the norms' own keys
// (base_model.model.model.layers.0.input_layernorm.weight), as PEFT saves
// modules_to_save. peft.Load reads it back.
//
// SaveAdapterHub and LoadAdapterHub write and read AdapterHub's own layout
// (adapter_config.json with a "config" object, adapter.safetensors with
// <layer>.attention_adapters.adapters.<name>.… and
// <layer>.output_adapters.adapters.<name>.… keys) for the configurations
// both compute the same way.
package adapter

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
)

func init() { peft.Register(PeftType, Decode) }

// Wrap freezes base and adds cfg as adapter "default".
func Wrap(base models.CausalLM, cfg *Config) (*peft.Model, error) {
	return peft.New(base, cfg)
}

// DefaultModules are the projections each placement wraps, per model_type:
// the attention output projection (mh_adapter) and the feed-forward output
// projection (output_adapter).
var DefaultModules = map[string][2][]string{
	"llama":       {{"self_attn.o_proj"}, {"mlp.down_proj"}},
	"mistral":     {{"self_attn.o_proj"}, {"mlp.down_proj"}},
	"qwen2":       {{"self_attn.o_proj"}, {"mlp.down_proj"}},
	"qwen3":       {{"self_attn.o_proj"}, {"mlp.down_proj"}},
	"phi3":        {{"self_attn.o_proj"}, {"mlp.down_proj"}},
	"gemma2":      {{"self_attn.o_proj"}, {"mlp.down_proj"}},
	"gemma3_text": {{"self_attn.o_proj"}, {"mlp.down_proj"}},
	"bloom":       {{"self_attention.dense"}, {"mlp.dense_4h_to_h"}},
	"gpt2":        {{"attn.c_proj"}, {"mlp.c_proj"}},
	// BERT's feed-forward output is layer.N.output.dense; "output.dense"
	// alone would also match attention.output.dense
	"bert": {{"attention.output.dense"}, {"layer.*.output.dense"}},
}

// matchModule is PEFT's list matching of a module path against an entry
// (the path itself or a "."-suffix of it), where a "*" component of the
// entry matches any one path component (see peft.Targets).
func matchModule(path, entry string) bool { return peft.TargetList(entry).Matches(path) }

// Placement names an adapter's position, as AdapterHub names the module
// that holds it.
const (
	AttentionAdapters = "attention_adapters" // mh_adapter
	OutputAdapters    = "output_adapters"    // output_adapter
)

// Prepare implements peft.TunerConfig: unset module lists take
// DefaultModules for the model type (the filled-in lists are what Save
// writes); leave_out skips layers; with train_layer_norms the layers'
// norms are found.
func (c *Config) Prepare(model nn.Module) (peft.Targeting, error) {
	c.fillDefaults()
	if err := c.Validate(); err != nil {
		return peft.Targeting{}, fmt.Errorf("adapter: %w", err)
	}
	mt := peft.ModelType(model)
	def, hasDef := DefaultModules[mt]
	if c.MhAdapter && c.MhAdapterModules == nil {
		if !hasDef {
			return peft.Targeting{}, fmt.Errorf("adapter: no mh_adapter_modules given and no default for model_type %q", mt)
		}
		c.MhAdapterModules = def[0]
	}
	if c.OutputAdapter && c.OutputAdapterModules == nil {
		if !hasDef {
			return peft.Targeting{}, fmt.Errorf("adapter: no output_adapter_modules given and no default for model_type %q", mt)
		}
		c.OutputAdapterModules = def[1]
	}
	targets := []string{}
	if c.MhAdapter {
		targets = append(targets, c.MhAdapterModules...)
	}
	if c.OutputAdapter {
		targets = append(targets, c.OutputAdapterModules...)
	}
	c.norms = nil
	if c.TrainLayerNorms {
		c.norms = layerNorms(model)
		if len(c.norms) == 0 {
			return peft.Targeting{}, fmt.Errorf("adapter: train_layer_norms: the model's layers have no LayerNorm/RMSNorm")
		}
	}
	return peft.Targeting{
		TargetModules: peft.TargetList(targets...), SkipLayers: c.LeaveOut,
		Field: "mh_adapter_modules/output_adapter_modules",
	}, nil
}

// CreateOrUpdate implements peft.TunerConfig: a Linear or Conv1D output
// projection becomes an adapter.Layer with a bottleneck for the adapter;
// a Layer already there gets one more bottleneck.
func (c *Config) CreateOrUpdate(t peft.Target) (peft.Tuner, error) {
	l, ok := t.Module.(*Layer)
	if !ok {
		switch m := t.Module.(type) {
		case *nn.Linear, *nn.Conv1D:
			l = &Layer{Base: m.(nn.Layer), Bottlenecks: nn.NewModuleDict()}
		default:
			return nil, fmt.Errorf("adapter: module %q is a %s; adapters wrap Linear and Conv1D output projections", t.Path, nn.TypeName(t.Module))
		}
	}
	d := outWidth(l.Base)
	k := int64(float64(d) / c.ReductionFactor)
	if k < 1 {
		k = 1
	}
	b, err := newBottleneck(d, k, c)
	if err != nil {
		return nil, fmt.Errorf("adapter: %s: %w", t.Path, err)
	}
	l.Bottlenecks.Set(t.Adapter, b)
	return l, nil
}

// outWidth is a projection's output width (the hidden size it returns to).
func outWidth(l nn.Layer) int64 {
	switch b := l.(type) {
	case *nn.Linear:
		return b.OutFeatures()
	case *nn.Conv1D:
		return b.Weight.Shape()[1]
	}
	return 0
}

// layerIndex is the first numeric path component that follows another
// component (model.layers.3.… → 3).
func layerIndex(path string) (int, bool) {
	parts := strings.Split(path, ".")
	for i := 1; i < len(parts); i++ {
		if n, err := strconv.Atoi(parts[i]); err == nil {
			return n, true
		}
	}
	return 0, false
}

// layerNorms names the norm modules inside the decoder layers by their
// last path component (input_layernorm, post_attention_layernorm).
func layerNorms(model nn.Module) []string {
	seen := map[string]bool{}
	_ = nn.Walk(model, func(path string, m nn.Module) error {
		inWrapper := strings.Contains(path, ".original_module") || strings.Contains(path, ".modules_to_save.")
		if w, ok := m.(*peft.ModulesToSave); ok { // a second adapter finds them wrapped
			m = w.Original
		}
		switch m.(type) {
		case *nn.LayerNorm, *nn.RMSNorm:
			if _, ok := layerIndex(path); ok && !inWrapper {
				seen[path[strings.LastIndex(path, ".")+1:]] = true
			}
		}
		return nil
	})
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// placementOf says where the wrapped projection at path sits.
func (c *Config) placementOf(path string) string {
	for _, n := range c.MhAdapterModules {
		if matchModule(path, n) {
			return AttentionAdapters
		}
	}
	return OutputAdapters
}
