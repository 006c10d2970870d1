package nn

import (
	"fmt"
	"reflect"

	"github.com/gopeft/peft/tensor"
)

// ModuleDict holds children by name in insertion order (PyTorch's
// nn.ModuleDict): PEFT layers keep one entry per adapter name.
type ModuleDict struct {
	keys  []string
	items map[string]Module
}

// NewModuleDict makes an empty dict.
func NewModuleDict() *ModuleDict { return &ModuleDict{items: map[string]Module{}} }

// Set adds or replaces an entry (new keys go last).
func (d *ModuleDict) Set(name string, m Module) {
	if _, ok := d.items[name]; !ok {
		d.keys = append(d.keys, name)
	}
	d.items[name] = m
}

// Get returns the entry for name.
func (d *ModuleDict) Get(name string) (Module, bool) {
	m, ok := d.items[name]
	return m, ok
}

// Delete removes an entry.
func (d *ModuleDict) Delete(name string) {
	if _, ok := d.items[name]; !ok {
		return
	}
	delete(d.items, name)
	for i, k := range d.keys {
		if k == name {
			d.keys = append(d.keys[:i], d.keys[i+1:]...)
			break
		}
	}
}

// Keys lists the names in insertion order.
func (d *ModuleDict) Keys() []string { return append([]string(nil), d.keys...) }

// Len is the number of entries.
func (d *ModuleDict) Len() int { return len(d.keys) }

// Children implements Container.
func (d *ModuleDict) Children() []Child {
	out := make([]Child, 0, len(d.keys))
	for _, k := range d.keys {
		out = append(out, Child{k, d.items[k]})
	}
	return out
}

// SetChild implements Container.
func (d *ModuleDict) SetChild(name string, m Module) error {
	if _, ok := d.items[name]; !ok {
		return fmt.Errorf("no entry %q", name)
	}
	d.items[name] = m
	return nil
}

// LocalParams implements Container: a dict owns no parameters itself.
func (d *ModuleDict) LocalParams() []NamedParam { return nil }

// TypeName names the dict as PyTorch prints it.
func (d *ModuleDict) TypeName() string { return "ModuleDict" }

// DeepCopy returns a copy of a module tree with every parameter's data
// copied (same requires_grad). Modules must be struct pointers with `nn`
// tags, ModuleLists or ModuleDicts; other fields are copied shallowly.
func DeepCopy(m Module) (Module, error) {
	s := tensor.NoGradScope()
	defer s.Close()
	out, err := deepCopy(s, m)
	if err != nil {
		return nil, err
	}
	return out, s.Err()
}

func deepCopy(s *tensor.Scope, m Module) (Module, error) {
	switch v := m.(type) {
	case *ModuleList:
		l := &ModuleList{Items: make([]Module, len(v.Items))}
		for i, it := range v.Items {
			c, err := deepCopy(s, it)
			if err != nil {
				return nil, err
			}
			l.Items[i] = c
		}
		return l, nil
	case *ModuleDict:
		d := NewModuleDict()
		for _, k := range v.keys {
			c, err := deepCopy(s, v.items[k])
			if err != nil {
				return nil, err
			}
			d.Set(k, c)
		}
		return d, nil
	case Container:
		return nil, fmt.Errorf("nn: cannot copy %s", TypeName(m))
	}
	rv := reflect.ValueOf(m)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("nn: cannot copy %s", TypeName(m))
	}
	cp := reflect.New(rv.Elem().Type())
	cp.Elem().Set(rv.Elem()) // plain fields (eps, flags) by value
	var err error
	forFields(cp.Interface(), func(name string, f reflect.Value) {
		if err != nil || isNil(f) {
			return
		}
		if f.Type() == paramType {
			p := f.Interface().(*Param)
			t := s.Copy(p.t)
			if p.RequiresGrad() {
				s.SetRequiresGrad(t, true)
			}
			f.Set(reflect.ValueOf(NewParam(s.Keep(t))))
			return
		}
		var c Module
		if c, err = deepCopy(s, f.Interface()); err == nil {
			f.Set(reflect.ValueOf(c))
		}
	})
	if err != nil {
		return nil, err
	}
	return cp.Interface(), nil
}
