package nn

import "fmt"

// ParamDict holds parameters by name in insertion order (PyTorch's
// nn.ParameterDict): PEFT layers keep one entry per adapter name.
type ParamDict struct {
	keys  []string
	items map[string]*Param
}

// NewParamDict makes an empty dict.
func NewParamDict() *ParamDict { return &ParamDict{items: map[string]*Param{}} }

// Set adds or replaces an entry.
func (d *ParamDict) Set(name string, p *Param) {
	if _, ok := d.items[name]; !ok {
		d.keys = append(d.keys, name)
	}
	d.items[name] = p
}

// Get returns the entry for name.
func (d *ParamDict) Get(name string) (*Param, bool) {
	p, ok := d.items[name]
	return p, ok
}

// Delete removes (and frees) an entry.
func (d *ParamDict) Delete(name string) {
	p, ok := d.items[name]
	if !ok {
		return
	}
	p.Free()
	delete(d.items, name)
	for i, k := range d.keys {
		if k == name {
			d.keys = append(d.keys[:i], d.keys[i+1:]...)
			break
		}
	}
}

// Keys lists the names in insertion order.
func (d *ParamDict) Keys() []string { return append([]string(nil), d.keys...) }

// Children implements Container: a ParamDict has no sub-modules.
func (d *ParamDict) Children() []Child { return nil }

// SetChild implements Container.
func (d *ParamDict) SetChild(name string, _ Module) error {
	return fmt.Errorf("ParameterDict has no child %q", name)
}

// LocalParams implements Container.
func (d *ParamDict) LocalParams() []NamedParam {
	out := make([]NamedParam, 0, len(d.keys))
	for _, k := range d.keys {
		out = append(out, NamedParam{k, d.items[k]})
	}
	return out
}

// TypeName names the dict as PyTorch prints it.
func (d *ParamDict) TypeName() string { return "ParameterDict" }

// ExtraRepr lists the entries' shapes.
func (d *ParamDict) ExtraRepr() string {
	s := ""
	for i, k := range d.keys {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s: %v", k, d.items[k].Shape())
	}
	return s
}
