package models

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
)

// LoadOption configures how a model family's Load reads a checkpoint
// folder: the same options for every family (llama, bloom, gpt2, bert and
// llama.LoadQuantized), with the names the CLI uses (--dtype, --device).
//
//	m, err := llama.Load(dir, models.WithDType("bfloat16"))            // bf16 weights, memory-mapped
//	m, err := llama.Load(dir, models.WithDType("auto"), models.WithDevice("cuda"))
type LoadOption func(*LoadSpec) error

// LoadSpec is the resolved form of a Load call's options.
type LoadSpec struct {
	// DType of the floating-point weights; 0 is "auto": the checkpoint's
	// torch_dtype (transformers 5's default), else the dtype of its first
	// floating-point tensor, else float32.
	DType tensor.DType
	// Device the weights live on (CPU by default).
	Device tensor.Device
	// NoMmap copies every weight into process memory; by default a frozen
	// CPU weight stored in the wanted dtype stays a view of the
	// memory-mapped file (see nn.LoadOptions.Map).
	NoMmap bool
}

// ParseDType reads a dtype option: "auto" (or ""), "float32", "bfloat16",
// "float16", with the aliases fp32/float, bf16, fp16/half and torch's
// "torch.bfloat16" spellings. Auto is 0.
func ParseDType(name string) (tensor.DType, error) {
	switch strings.TrimPrefix(strings.ToLower(strings.TrimSpace(name)), "torch.") {
	case "", "auto":
		return 0, nil
	case "float32", "fp32", "float", "f32":
		return tensor.Float32, nil
	case "bfloat16", "bf16":
		return tensor.BFloat16, nil
	case "float16", "fp16", "half", "f16":
		return tensor.Float16, nil
	}
	return 0, fmt.Errorf("dtype %q: want auto, float32, bfloat16 or float16", name)
}

// WithDType sets the dtype the floating-point weights load in (see
// ParseDType for the names); "auto" is the default.
func WithDType(name string) LoadOption {
	return func(sp *LoadSpec) error {
		dt, err := ParseDType(name)
		if err != nil {
			return err
		}
		sp.DType = dt
		return nil
	}
}

// WithDevice sets the device the weights load on: "cpu" (the default),
// "cuda" or "cuda:N". CUDA needs a libtorch built with it (LIBTORCH=…
// make setup); without one Load fails naming the option.
func WithDevice(name string) LoadOption {
	return func(sp *LoadSpec) error {
		d, err := tensor.ParseDevice(name)
		if err != nil {
			return err
		}
		sp.Device = d
		return nil
	}
}

// WithoutMmap copies every weight into process memory instead of
// leaving frozen weights as views of the memory-mapped checkpoint.
func WithoutMmap() LoadOption {
	return func(sp *LoadSpec) error { sp.NoMmap = true; return nil }
}

// WithSpec applies a resolved LoadSpec as a whole (for code that keeps
// one, such as the CLI).
func WithSpec(spec LoadSpec) LoadOption {
	return func(sp *LoadSpec) error { *sp = spec; return nil }
}

// ResolveLoad applies opts over the defaults (auto dtype, CPU, mapped) and
// checks that the device exists.
func ResolveLoad(opts ...LoadOption) (LoadSpec, error) {
	sp := LoadSpec{Device: tensor.CPU}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&sp); err != nil {
			return sp, err
		}
	}
	if err := tensor.CheckDevice(sp.Device); err != nil {
		return sp, err
	}
	return sp, nil
}

// configDType is a config.json's torch_dtype (or transformers 5's dtype).
func configDType(raw map[string]any) (tensor.DType, string, bool) {
	for _, key := range []string{"torch_dtype", "dtype"} {
		if v, ok := raw[key].(string); ok && v != "" {
			dt, err := ParseDType(v)
			if err == nil && dt != 0 {
				return dt, key, true
			}
		}
	}
	return 0, "", false
}

// DType resolves the dtype for a checkpoint (auto: config.json's
// torch_dtype, else the first floating-point tensor's dtype, else
// float32) and checks that libtorch can compute in it on the device.
// path names config.json in errors.
func (sp LoadSpec) ResolveDType(path string, raw map[string]any, set *safetensors.Set) (tensor.DType, error) {
	dt := sp.DType
	how := "dtype option"
	if dt == 0 {
		if d, key, ok := configDType(raw); ok {
			dt, how = d, fmt.Sprintf("dtype auto (%s's %s)", path, key)
		} else {
			dt, how = tensor.Float32, "dtype auto"
			if set != nil {
				for _, name := range set.Names() {
					info, _, _ := set.Info(name)
					if d, ok := nn.DTypeOf(info.DType); ok && nn.IsFloat(d) {
						if d != tensor.Float64 {
							dt = d
						}
						how = fmt.Sprintf("dtype auto (the checkpoint's %s tensors)", info.DType)
						break
					}
				}
			}
		}
	}
	if err := tensor.CanCompute(dt, sp.Device); err != nil {
		return 0, fmt.Errorf("%s: %s on %s: %w; choose --dtype bfloat16 or float32", how, dt, sp.Device, err)
	}
	return dt, nil
}

// WeightFiles is a checkpoint folder's safetensors files opened for a
// family's loader, with the load options resolved against its config:
//
//	wf, err := models.OpenWeights(dir, cfg.Raw, opts)
//	... build the skeleton ...
//	if err := wf.LoadState(m, nn.LoadOptions{...}); err != nil { wf.Close(); ... }
//	m.weights = wf.Keep()
type WeightFiles struct {
	Set   *safetensors.Set
	Spec  LoadSpec
	DType tensor.DType // the resolved dtype of the floating-point weights
	// mapped counts the parameters left as views of Set.
	mapped int
}

// OpenWeights resolves opts, opens dir's safetensors files (one file or a
// sharded index) and resolves the dtype (auto against raw, config.json's
// fields), recording it in raw as transformers records torch_dtype.
func OpenWeights(dir string, raw map[string]any, opts []LoadOption) (*WeightFiles, error) {
	spec, err := ResolveLoad(opts...)
	if err != nil {
		return nil, err
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	dt, err := spec.ResolveDType(filepath.Join(dir, "config.json"), raw, set)
	if err != nil {
		set.Close()
		return nil, err
	}
	SetConfigDType(raw, dt)
	return &WeightFiles{Set: set, Spec: spec, DType: dt}, nil
}

// LoadState copies (or maps) the files' tensors into m's parameters with
// nn.LoadState; o's DType, Device and Map are set from the options, and
// parameters load trainable (PyTorch's default).
func (w *WeightFiles) LoadState(m nn.Module, o nn.LoadOptions) error {
	o.DType, o.Device, o.Trainable = w.DType, w.Spec.Device, true
	o.Map = !w.Spec.NoMmap && !w.Spec.Device.IsCUDA()
	n, err := nn.LoadStateMapped(m, w.Set, o)
	w.mapped += n
	return err
}

// Tensor reads one tensor of the files as a parameter would get it (the
// resolved dtype for floating-point data, the device, a view of the mapping
// where LoadState would map), for loaders that plan their own keys.
func (w *WeightFiles) Tensor(s *tensor.Scope, key string) (*tensor.T, error) {
	prev := s.SetDevice(w.Spec.Device)
	defer s.SetDevice(prev)
	t, view, err := nn.TensorFromFileMapped(s, w.Set, key, w.DType, !w.Spec.NoMmap && !w.Spec.Device.IsCUDA())
	if view {
		w.mapped++
	}
	return t, err
}

// Keep ends the load: the files stay open, held by the returned Weights,
// when a parameter views them, else they are closed.
func (w *WeightFiles) Keep() Weights {
	var out Weights
	out.Hold(w.Set, w.mapped > 0)
	return out
}

// Close closes the files after a failed load (the parameters that viewed
// them must have been freed).
func (w *WeightFiles) Close() { _ = w.Set.Close() }

// Weights keeps the memory-mapped checkpoint files that a loaded model's
// parameters are views of; the model's Free closes them after freeing the
// parameters. The zero value holds nothing.
type Weights struct {
	set *safetensors.Set
}

// Hold keeps set open for the model's lifetime when mapped is true (some
// parameter is a view of it), else closes it now.
func (w *Weights) Hold(set *safetensors.Set, mapped bool) {
	if !mapped {
		_ = set.Close()
		return
	}
	w.set = set
}

// Release closes the mapped files. Call it only after every parameter
// that views them has been freed.
func (w *Weights) Release() {
	if w.set != nil {
		_ = w.set.Close()
		w.set = nil
	}
}

// ParamDType is the dtype of m's floating-point parameters (the first
// found; float32 when it has none), for config.json's torch_dtype.
func ParamDType(m nn.Module) tensor.DType {
	for _, np := range nn.NamedParams(m) {
		if d := np.Param.DType(); nn.IsFloat(d) && !np.Param.Packed() {
			return d
		}
	}
	return tensor.Float32
}

// SetConfigDType records dt as config.json's torch_dtype (and dtype, when
// the file used transformers 5's key), as transformers does when it loads
// a model in a dtype: a saved model's config then says what its weights
// are.
func SetConfigDType(raw map[string]any, dt tensor.DType) {
	if raw == nil {
		return
	}
	raw["torch_dtype"] = dt.String()
	if _, ok := raw["dtype"]; ok {
		raw["dtype"] = dt.String()
	}
}

// RecordDType sets *raw's torch_dtype to the dtype of m's weights (making
// the map when it is nil), so that a saved config.json says what its
// weights are, as transformers' save_pretrained does.
func RecordDType(raw *map[string]any, m nn.Module) {
	if *raw == nil {
		*raw = map[string]any{}
	}
	SetConfigDType(*raw, ParamDType(m))
}

// DeviceOf is the device of a model that says where it lives (the
// families loaded with WithDevice, peft.Model), else the CPU.
func DeviceOf(m any) tensor.Device {
	if d, ok := m.(interface{ Device() tensor.Device }); ok {
		return d.Device()
	}
	return tensor.CPU
}

// ToDevice moves the batch's input tensors that are not on d to d (in
// place: b's fields are replaced by scope-owned copies), so that callers
// may build inputs on the host for a model on a GPU.
func (b *Batch) ToDevice(s *tensor.Scope, d tensor.Device) {
	for _, p := range []**tensor.T{&b.InputIDs, &b.InputsEmbeds, &b.AttentionMask, &b.TokenTypeIDs, &b.PositionIDs, &b.Labels, &b.TaskIDs} {
		if *p != nil && (*p).Device() != d {
			*p = s.ToDevice(*p, d)
		}
	}
}

// layerKey finds the layer index of a checkpoint key: the number after a
// "layers" (LLaMA), "h" (GPT-2, BLOOM) or "layer" (BERT) component. A
// constant pattern: MustCompile cannot fail.
var layerKey = regexp.MustCompile(`(?:^|\.)(?:layers|h|layer)\.(\d+)\.`)

// CheckLayerCount compares config.json's layer count (field, want) with
// the checkpoint's headers before the family builds anything, so that an
// absurd count is an error and not an allocation of its skeleton.
func CheckLayerCount(set *safetensors.Set, field string, want int64) error {
	seen := map[int64]bool{}
	for _, k := range set.Names() {
		if m := layerKey.FindStringSubmatch(k); m != nil {
			n, err := strconv.ParseInt(m[1], 10, 64)
			if err != nil {
				return fmt.Errorf("tensor %q: layer index %s: %w", k, m[1], err)
			}
			seen[n] = true
		}
	}
	if int64(len(seen)) != want {
		return fmt.Errorf("config.json's %q is %d, the checkpoint has %d layers", field, want, len(seen))
	}
	for i := int64(0); i < want; i++ {
		if !seen[i] {
			return fmt.Errorf("config.json's %q is %d, the checkpoint has no layer %d", field, want, i)
		}
	}
	return nil
}

// CheckEmbedding compares config.json's vocabulary and hidden sizes with
// the shape of the checkpoint's token embedding (the key suffix, with any
// prefix) before the family builds anything: a hidden size of 10^9 would
// otherwise allocate its LayerNorm weights first. A checkpoint without
// the key is left to the load's own "missing tensor" error.
func CheckEmbedding(set *safetensors.Set, suffix string, vocab, hidden int64, vocabField, hiddenField string) error {
	for _, k := range set.Names() {
		if k != suffix && !strings.HasSuffix(k, "."+suffix) {
			continue
		}
		info, _, _ := set.Info(k)
		if len(info.Shape) != 2 || info.Shape[0] != vocab || info.Shape[1] != hidden {
			return fmt.Errorf("config.json's %q %d and %q %d want %q of shape [%d %d], the checkpoint has %v",
				vocabField, vocab, hiddenField, hidden, k, vocab, hidden, info.Shape)
		}
		return nil
	}
	return nil
}
