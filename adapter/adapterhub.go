package adapter

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gopeft/peft/internal/fsutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
)

// AdapterHub's file names (adapters v1.2, save_adapter(...,
// use_safetensors=True)).
const (
	HubConfigName  = "adapter_config.json"
	HubWeightsName = "adapter.safetensors"
	hubVersion     = "adapters.1.2.0"
)

// hubKey is AdapterHub's key for a tensor of adapter name at the wrapped
// projection path: <layer>.attention_adapters.adapters.<name>.<local> or
// <layer>.output_adapters.adapters.<name>.<local>, where <layer> is the
// path up to the layer index (model.layers.3, transformer.h.3).
func hubKey(path, placement, name, local string) (string, error) {
	parts := strings.Split(path, ".")
	for i := 1; i < len(parts); i++ {
		if _, ok := layerIndex(strings.Join(parts[:i+1], ".")); ok {
			return strings.Join(parts[:i+1], ".") + "." + placement + ".adapters." + name + "." + local, nil
		}
	}
	return "", fmt.Errorf("adapter: %q is not inside a numbered layer", path)
}

// hubConfig is BnConfig as AdapterHub writes it (to_dict), for the
// computation this package does.
func (c *Config) hubConfig() map[string]any {
	leave := c.LeaveOut
	if leave == nil {
		leave = []int{}
	}
	return map[string]any{
		"architecture": "bottleneck", "mh_adapter": c.MhAdapter, "output_adapter": c.OutputAdapter,
		"reduction_factor": c.ReductionFactor, "non_linearity": c.NonLinearity,
		"original_ln_before": false, "original_ln_after": true, "ln_before": false, "ln_after": false,
		"init_weights": c.InitWeights, "init_weights_seed": nil, "is_parallel": false, "scaling": c.Scaling,
		"use_gating": false, "residual_before_ln": true, "adapter_residual_before_ln": false,
		"inv_adapter": nil, "inv_adapter_reduction_factor": nil, "cross_adapter": false, "leave_out": leave,
		"dropout": c.Dropout, "phm_layer": false, "phm_dim": 4, "factorized_phm_W": true, "shared_W_phm": false,
		"shared_phm_rule": true, "factorized_phm_rule": false, "phm_c_init": "normal", "phm_init_range": 0.0001,
		"learn_phm": true, "hypercomplex_nonlinearity": "glorot-uniform", "phm_rank": 1, "phm_bias": true,
		"stochastic_depth": 0.0,
	}
}

// SaveAdapterHub writes adapter name of m in AdapterHub's layout, which
// adapters' load_adapter reads: adapter_config.json
// ({"config": {BnConfig…}, "hidden_size", "model_class", "model_name",
// "model_type", "name", "version"}) and adapter.safetensors with
// AdapterHub's keys. The config written has original_ln_before=false —
// the adapter reads the sub-layer output, as here — so AdapterHub computes
// what this package does. An adapter that trains LayerNorms (Houlsby()'s
// default) or other modules_to_save cannot be written: AdapterHub's
// adapter files hold no such weights.
func SaveAdapterHub(m *peft.Model, dir, name string) error {
	cfgAny, ok := m.Config(name)
	if !ok {
		return fmt.Errorf("adapter: no adapter %q", name)
	}
	cfg, ok := cfgAny.(*Config)
	if !ok {
		return fmt.Errorf("adapter: adapter %q is a %s adapter", name, cfgAny.PeftType())
	}
	if len(cfg.ModulesToSave()) > 0 {
		return fmt.Errorf("adapter: adapter %q also trains %v, which AdapterHub's adapter format does not hold; set TrainLayerNorms false or use Save", name, cfg.ModulesToSave())
	}
	var tensors []nn.NamedParam
	var hidden int64
	var walkErr error
	_ = nn.Walk(m.Base(), func(path string, mod nn.Module) error {
		l, ok := mod.(*Layer)
		if !ok || walkErr != nil {
			return nil
		}
		hidden = outWidth(l.Base)
		for _, np := range l.AdapterState(name) {
			key, err := hubKey(path, cfg.placementOf(path), name, np.Name)
			if err != nil {
				walkErr = err
				return nil
			}
			tensors = append(tensors, nn.NamedParam{Name: key, Param: np.Param})
		}
		return nil
	})
	if walkErr != nil {
		return walkErr
	}
	sort.Slice(tensors, func(i, j int) bool { return tensors[i].Name < tensors[j].Name })
	base := m.Base()
	if sz, ok := base.(models.Sized); ok {
		hidden = sz.Dims().HiddenSize
	}
	head := map[string]any{"config": cfg.hubConfig(), "hidden_size": hidden, "model_class": nn.TypeName(base),
		"model_name": nullable(cfg.BaseModelNameOrPath), "model_type": nil, "name": name, "version": hubVersion}
	if t, ok := base.(interface{ ModelType() string }); ok {
		head["model_type"] = t.ModelType()
	}
	js, err := marshal(head)
	if err != nil {
		return err
	}
	st, err := nn.StateTensors(tensors, "")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("adapter: %w", err)
	}
	if err := safetensors.Write(filepath.Join(dir, HubWeightsName), st, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("adapter: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, HubConfigName), append(js, '\n')); err != nil {
		return fmt.Errorf("adapter: %w", err)
	}
	return nil
}

// LoadAdapterHub wraps base with the bottleneck adapter AdapterHub saved in
// dir (adapter.safetensors; pickled pytorch_adapter.bin files are not
// read) as adapter "default", frozen for inference. Configurations this
// package does not compute the same way are refused, naming the field:
// original_ln_before=true (AdapterHub's seq_bn/pfeiffer preset, whose
// adapter also reads the residual stream), parallel, gated, PHM,
// invertible or layer-norm-inside adapters, per-layer reduction factors,
// learned scaling.
func LoadAdapterHub(base models.CausalLM, dir string) (*peft.Model, error) {
	path := filepath.Join(dir, HubConfigName)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("adapter: %w", err)
	}
	var head struct {
		Config map[string]json.RawMessage `json:"config"`
		Name   string                     `json:"name"`
		Model  string                     `json:"model_name"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("adapter: %s: %w", path, err)
	}
	if head.Config == nil || head.Name == "" {
		return nil, fmt.Errorf("adapter: %s: not an AdapterHub adapter config (no \"config\" or \"name\")", path)
	}
	if a, ok := head.Config["architecture"]; ok && string(a) != `"bottleneck"` && string(a) != "null" {
		return nil, fmt.Errorf("adapter: %s: architecture %s is not a bottleneck adapter", path, a)
	}
	if v, ok := head.Config["reduction_factor"]; ok && len(v) > 0 && v[0] == '{' {
		return nil, fmt.Errorf("adapter: %s: field \"reduction_factor\": a per-layer mapping is not supported", path)
	}
	if err := checkUnsupported(head.Config); err != nil {
		return nil, fmt.Errorf("adapter: %s: %w", path, err)
	}
	var bn struct {
		MhAdapter       bool    `json:"mh_adapter"`
		OutputAdapter   bool    `json:"output_adapter"`
		ReductionFactor float64 `json:"reduction_factor"`
		NonLinearity    string  `json:"non_linearity"`
		InitWeights     string  `json:"init_weights"`
		Scaling         any     `json:"scaling"`
		LeaveOut        []int   `json:"leave_out"`
		Dropout         float64 `json:"dropout"`
	}
	raw, _ := json.Marshal(head.Config)
	if err := json.Unmarshal(raw, &bn); err != nil {
		return nil, fmt.Errorf("adapter: %s: %w", path, err)
	}
	cfg := &Config{MhAdapter: bn.MhAdapter, OutputAdapter: bn.OutputAdapter, ReductionFactor: bn.ReductionFactor,
		NonLinearity: bn.NonLinearity, InitWeights: bn.InitWeights, LeaveOut: bn.LeaveOut, Dropout: bn.Dropout,
		BaseModelNameOrPath: head.Model}
	switch v := bn.Scaling.(type) {
	case nil:
	case float64:
		cfg.Scaling = v
	default:
		return nil, fmt.Errorf("adapter: %s: field \"scaling\": %v is not supported (a number only)", path, v)
	}
	weights := filepath.Join(dir, HubWeightsName)
	set, err := safetensors.OpenFiles(weights)
	if err != nil {
		if _, e := os.Stat(filepath.Join(dir, "pytorch_adapter.bin")); e == nil {
			return nil, fmt.Errorf("adapter: %s holds pytorch_adapter.bin (pickle), which is not read; save with use_safetensors=True", dir)
		}
		return nil, fmt.Errorf("adapter: %w", err)
	}
	defer set.Close()
	m, err := Wrap(base, cfg)
	if err != nil {
		return nil, err
	}
	type load struct {
		key string
		p   *nn.Param
	}
	var plan []load
	used := map[string]bool{}
	var walkErr error
	_ = nn.Walk(m.Base(), func(p string, mod nn.Module) error {
		l, ok := mod.(*Layer)
		if !ok || walkErr != nil {
			return nil
		}
		for _, np := range l.AdapterState(peft.DefaultAdapter) {
			key, err := hubKey(p, cfg.placementOf(p), head.Name, np.Name)
			if err != nil {
				walkErr = err
				return nil
			}
			info, _, ok := set.Info(key)
			if !ok {
				walkErr = fmt.Errorf("adapter: %s: missing tensor %q", weights, key)
				return nil
			}
			if !nn.SameShape(info.Shape, np.Param.Shape()) {
				walkErr = fmt.Errorf("adapter: %s: tensor %q has shape %v, the model expects %v", weights, key, info.Shape, np.Param.Shape())
				return nil
			}
			used[key] = true
			plan = append(plan, load{key, np.Param})
		}
		return nil
	})
	if walkErr == nil {
		for _, k := range set.Names() {
			if !used[k] {
				walkErr = fmt.Errorf("adapter: %s: unexpected tensor %q (no such adapter module in the model)", weights, k)
				break
			}
		}
	}
	if walkErr != nil {
		nn.FreeParams(m)
		return nil, walkErr
	}
	s := tensor.NoGradScope()
	defer s.Close()
	for _, l := range plan {
		t, err := nn.TensorFromFile(s, set, l.key, l.p.DType())
		if err != nil {
			return nil, fmt.Errorf("adapter: %w", err)
		}
		s.CopyInto(l.p.T(), t)
		s.FreeAll()
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("adapter: %w", err)
	}
	if err := nn.Freeze(m); err != nil {
		return nil, err
	}
	return m, nil
}
