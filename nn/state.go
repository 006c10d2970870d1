package nn

import (
	"fmt"
	"strings"
	"unsafe"

	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
)

// DTypeOf maps a safetensors dtype to libtorch's.
func DTypeOf(d safetensors.DType) (tensor.DType, bool) {
	switch d {
	case "F32":
		return tensor.Float32, true
	case "F16":
		return tensor.Float16, true
	case "BF16":
		return tensor.BFloat16, true
	case "F64":
		return tensor.Float64, true
	case "I64":
		return tensor.Int64, true
	case "I32":
		return tensor.Int32, true
	case "I16":
		return tensor.Int16, true
	case "I8":
		return tensor.Int8, true
	case "U8":
		return tensor.Uint8, true
	case "BOOL":
		return tensor.Bool, true
	}
	return 0, false
}

// SafetensorsDType maps libtorch's dtype to safetensors'.
func SafetensorsDType(d tensor.DType) (safetensors.DType, bool) {
	for _, c := range []safetensors.DType{"F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"} {
		if t, _ := DTypeOf(c); t == d {
			return c, true
		}
	}
	return "", false
}

// LoadOptions controls LoadState.
type LoadOptions struct {
	// DType is the dtype floating-point parameters get (F16/BF16/F32 files are
	// converted on load). Zero means float32.
	DType tensor.DType
	// Device the parameters go to (the zero value is the CPU).
	Device tensor.Device
	// Map leaves a CPU parameter whose stored dtype is the wanted one as a
	// view of the set's copy-on-write mapping instead of copying it: the
	// set must then stay open until those parameters are freed (the
	// families keep it in models.Weights). A write to such a parameter
	// (merging an adapter, an optimizer step) gives the process a private
	// copy of the pages it touches; the file is never written.
	Map bool
	// Prefix is prepended to every parameter name to find its key in the
	// files (e.g. "base_model.model.").
	Prefix string
	// AllowMissing lets these parameter names be absent from the files
	// (their current values stay).
	AllowMissing func(name string) bool
	// IgnoreUnexpected lets keys of the files that no parameter takes pass
	// (by default they are an error: they usually mean a wrong model).
	IgnoreUnexpected func(key string) bool
	// Trainable sets requires_grad on every loaded parameter (torch's
	// default for nn.Parameter); false leaves them frozen.
	Trainable bool
}

// TensorFromFile reads one tensor of a safetensors set into a new tensor
// of the scope (one copy out of the mmap), converting floating-point data to
// dt when dt is non-zero, on the scope's device.
func TensorFromFile(s *tensor.Scope, set *safetensors.Set, key string, dt tensor.DType) (*tensor.T, error) {
	t, _, err := tensorFromFile(s, set, key, dt, false)
	return t, err
}

// TensorFromFileMapped is TensorFromFile that, with mapped, returns a view
// of the set's mapping itself (no copy) when the data already has dtype dt,
// the scope is on the CPU and the bytes are aligned; it reports whether it
// did (the set must then stay open while the tensor lives).
func TensorFromFileMapped(s *tensor.Scope, set *safetensors.Set, key string, dt tensor.DType, mapped bool) (*tensor.T, bool, error) {
	return tensorFromFile(s, set, key, dt, mapped)
}

func tensorFromFile(s *tensor.Scope, set *safetensors.Set, key string, dt tensor.DType, mapped bool) (*tensor.T, bool, error) {
	info, f, ok := set.Info(key)
	if !ok {
		return nil, false, fmt.Errorf("no tensor %q in the safetensors files", key)
	}
	src, ok := DTypeOf(info.DType)
	if !ok {
		return nil, false, fmt.Errorf("%s: tensor %q: unsupported dtype %q", f.Path(), key, info.DType)
	}
	// the kind must match (the rule of LoadStateMapped): floating-point
	// data for a floating-point dtype, the same dtype otherwise; integer
	// data is never converted into weights
	if dt != 0 && (isFloat(dt) != isFloat(src) || (!isFloat(dt) && src != dt)) {
		return nil, false, fmt.Errorf("%s: tensor %q has dtype %s, want %s", f.Path(), key, info.DType, kindName(dt))
	}
	data, err := set.Data(key)
	if err != nil {
		return nil, false, err
	}
	convert := dt != 0 && dt != src && isFloat(src)
	dev := s.SetDevice(tensor.CPU) // read on the host, then move
	defer s.SetDevice(dev)
	var t *tensor.T
	view := false
	if len(data) > 0 && uintptr(unsafe.Pointer(&data[0]))%uintptr(src.Size()) == 0 {
		// a view of the mapping: kept as is when mapping, else the source
		// of one conversion or copy (no staging copy in between)
		t = s.FromBlob(unsafe.Pointer(&data[0]), src, info.Shape)
		view = true
	} else {
		t = s.FromBytes(src, info.Shape, data)
	}
	switch {
	case convert:
		t = s.To(t, dt)
		view = false
	case view && (!mapped || dev.IsCUDA()):
		t = s.Copy(t)
		view = false
	}
	if dev.IsCUDA() {
		t = s.ToDevice(t, dev)
	}
	if err := s.Err(); err != nil {
		return nil, false, fmt.Errorf("%s: tensor %q: %w", f.Path(), key, err)
	}
	return t, view, nil
}

// LoadState copies tensors from a safetensors set into m's parameters,
// matching parameter names (plus opts.Prefix) to keys. Every parameter must
// be found with its exact shape and a dtype of its kind (floating-point data
// for floating-point parameters, the same dtype otherwise); errors name the
// file and the key. Everything is checked before any parameter changes, so
// a load that fails on bad input leaves m as it was.
func LoadState(m Module, set *safetensors.Set, opts LoadOptions) error {
	_, err := LoadStateMapped(m, set, opts)
	return err
}

// LoadStateMapped is LoadState that reports how many parameters are views
// of the set's mapping (opts.Map): when any are, the set must stay open
// until they are freed.
func LoadStateMapped(m Module, set *safetensors.Set, opts LoadOptions) (mapped int, err error) {
	dt := opts.DType
	if dt == 0 {
		dt = tensor.Float32
	}
	type load struct {
		p      *Param
		key    string
		target tensor.DType
	}
	var loads []load
	used := map[string]bool{}
	for _, np := range NamedParams(m) {
		key := opts.Prefix + np.Name
		info, f, ok := set.Info(key)
		if !ok {
			if opts.AllowMissing != nil && opts.AllowMissing(np.Name) {
				continue
			}
			return 0, fmt.Errorf("%s: missing tensor %q", setName(set), key)
		}
		used[key] = true
		if want := np.Param.Shape(); !SameShape(want, info.Shape) {
			return 0, fmt.Errorf("%s: tensor %q has shape %v, the model expects %v", f.Path(), key, info.Shape, want)
		}
		src, ok := DTypeOf(info.DType)
		if !ok {
			return 0, fmt.Errorf("%s: tensor %q: unsupported dtype %q", f.Path(), key, info.DType)
		}
		target := dt
		if pd := np.Param.DType(); !isFloat(pd) {
			target = pd
			if src != pd {
				return 0, fmt.Errorf("%s: tensor %q has dtype %s, the model expects %s", f.Path(), key, info.DType, pd)
			}
		} else if !isFloat(src) {
			return 0, fmt.Errorf("%s: tensor %q has dtype %s, the model expects floating-point data", f.Path(), key, info.DType)
		}
		loads = append(loads, load{np.Param, key, target})
	}
	for _, key := range set.Names() {
		if used[key] || !strings.HasPrefix(key, opts.Prefix) {
			continue
		}
		if opts.IgnoreUnexpected != nil && opts.IgnoreUnexpected(key) {
			continue
		}
		_, f, _ := set.Info(key)
		return 0, fmt.Errorf("%s: unexpected tensor %q (no such parameter in the model)", f.Path(), key)
	}
	s := tensor.NoGradScope()
	defer s.Close()
	s.SetDevice(opts.Device)
	for _, l := range loads {
		t, view, err := tensorFromFile(s, set, l.key, l.target, opts.Map)
		if err != nil {
			return mapped, err
		}
		if view {
			mapped++
		}
		if opts.Trainable && isFloat(l.target) {
			s.SetRequiresGrad(t, true)
		}
		l.p.Set(s.Keep(t))
	}
	return mapped, s.Err()
}

// StateTensors copies named tensors out of libtorch for writing.
func StateTensors(params []NamedParam, prefix string) ([]safetensors.Tensor, error) {
	s := tensor.NoGradScope()
	defer s.Close()
	out := make([]safetensors.Tensor, 0, len(params))
	for _, np := range params {
		if np.Param.Packed() {
			return nil, fmt.Errorf("nn: parameter %q is packed (quantized) storage; dequantize the model before saving it", np.Name)
		}
		t := np.Param.T()
		dt, ok := SafetensorsDType(t.DType())
		if !ok {
			return nil, fmt.Errorf("nn: parameter %q: dtype %s has no safetensors code", np.Name, t.DType())
		}
		data := s.Bytes(t)
		if err := s.Err(); err != nil {
			return nil, fmt.Errorf("nn: parameter %q: %w", np.Name, err)
		}
		out = append(out, safetensors.Tensor{Name: prefix + np.Name, DType: dt, Shape: t.Shape(), Data: data})
	}
	return out, nil
}

// SaveState writes every parameter under m to one safetensors file
// (atomically), under the parameters' full names.
func SaveState(m Module, path string, metadata map[string]string) error {
	ts, err := StateTensors(NamedParams(m), "")
	if err != nil {
		return err
	}
	return safetensors.Write(path, ts, metadata)
}

func setName(set *safetensors.Set) string {
	files := set.Files()
	if len(files) == 1 {
		return files[0].Path()
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Path()
	}
	return strings.Join(names, ", ")
}

func kindName(dt tensor.DType) string {
	if isFloat(dt) {
		return "floating-point data"
	}
	return dt.String()
}

// IsFloat reports whether d is a floating-point dtype.
func IsFloat(d tensor.DType) bool { return isFloat(d) }

func isFloat(d tensor.DType) bool {
	return d == tensor.Float32 || d == tensor.Float16 || d == tensor.BFloat16 || d == tensor.Float64
}

// SameShape reports whether two shapes are equal.
func SameShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
