// Package nn is the library's module tree: HF-named modules, their
// parameters, the base layers (Linear, Embedding, LayerNorm, RMSNorm,
// Conv1D, Dropout) and state dicts to and from safetensors.
//
// A module is a pointer to a struct whose fields tagged `nn:"name"` are its
// parameters (*Param) and its children (any module value: a *Linear, a
// Layer interface, a *ModuleList). Paths are HF's: the tag names joined by
// dots (model.layers.0.self_attn.q_proj), and a parameter's name is its
// module path plus its local name (model.layers.0.self_attn.q_proj.weight),
// so a state dict maps 1:1 onto a checkpoint's keys. One reflective walker
// serves listing, walking, replacing by path and freezing; types with
// dynamic children (ModuleList) implement Container instead of using tags.
//
// nn knows nothing of PEFT or of any model architecture.
package nn

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
)

// Module is a node of the tree: a pointer to a struct with `nn` tags, or a
// Container.
type Module any

// Child is a named sub-module.
type Child struct {
	Name   string
	Module Module
}

// Container is implemented by modules whose children are not fixed struct
// fields (ModuleList, method wrappers with per-adapter dictionaries).
type Container interface {
	Children() []Child
	SetChild(name string, m Module) error
	LocalParams() []NamedParam
}

// NamedParam is a parameter with its name (local or full path).
type NamedParam struct {
	Name  string
	Param *Param
}

// Children lists m's direct children in a stable order (field order, or the
// container's own order). Nil children are skipped.
func Children(m Module) []Child {
	if c, ok := m.(Container); ok {
		return c.Children()
	}
	var out []Child
	forFields(m, func(name string, f reflect.Value) {
		if f.Type() == paramType || isNil(f) {
			return
		}
		out = append(out, Child{name, f.Interface()})
	})
	return out
}

// LocalParams lists the parameters m owns directly (not its children's).
func LocalParams(m Module) []NamedParam {
	if c, ok := m.(Container); ok {
		return c.LocalParams()
	}
	var out []NamedParam
	forFields(m, func(name string, f reflect.Value) {
		if f.Type() == paramType && !f.IsNil() {
			out = append(out, NamedParam{name, f.Interface().(*Param)})
		}
	})
	return out
}

// Walk calls fn for m and every descendant, parents first, in a stable
// order, with each module's dotted path ("" for the root).
func Walk(m Module, fn func(path string, m Module) error) error {
	return walk("", m, fn)
}

func walk(path string, m Module, fn func(string, Module) error) error {
	if err := fn(path, m); err != nil {
		return err
	}
	for _, c := range Children(m) {
		if err := walk(join(path, c.Name), c.Module, fn); err != nil {
			return err
		}
	}
	return nil
}

// NamedParams lists every parameter under m with its full path. A
// parameter shared by two modules (tied embeddings) is listed once, under
// the first path met, as PyTorch's named_parameters does.
func NamedParams(m Module) []NamedParam {
	var out []NamedParam
	seen := map[*Param]bool{}
	_ = Walk(m, func(path string, mod Module) error {
		for _, p := range LocalParams(mod) {
			if seen[p.Param] {
				continue
			}
			seen[p.Param] = true
			out = append(out, NamedParam{join(path, p.Name), p.Param})
		}
		return nil
	})
	return out
}

// Get returns the module at path ("" is m itself).
func Get(m Module, path string) (Module, error) {
	if path == "" {
		return m, nil
	}
	cur := m
	for _, name := range strings.Split(path, ".") {
		next, ok := child(cur, name)
		if !ok {
			return nil, fmt.Errorf("nn: no module %q (no child %q in %s)", path, name, TypeName(cur))
		}
		cur = next
	}
	return cur, nil
}

// Replace puts repl at path and returns the module that was there. The new
// module must fit the slot's Go type (a Layer slot takes any Layer).
func Replace(m Module, path string, repl Module) (Module, error) {
	i := strings.LastIndex(path, ".")
	parentPath, name := "", path
	if i >= 0 {
		parentPath, name = path[:i], path[i+1:]
	}
	parent, err := Get(m, parentPath)
	if err != nil {
		return nil, err
	}
	old, ok := child(parent, name)
	if !ok {
		return nil, fmt.Errorf("nn: no module %q to replace", path)
	}
	if err := setChild(parent, name, repl); err != nil {
		return nil, fmt.Errorf("nn: replace %q: %w", path, err)
	}
	return old, nil
}

// Paths lists the path of every module under m (root excluded), in walk order.
func Paths(m Module) []string {
	var out []string
	_ = Walk(m, func(path string, _ Module) error {
		if path != "" {
			out = append(out, path)
		}
		return nil
	})
	return out
}

// TypeName is the Go type name of a module, as printed in the tree.
func TypeName(m Module) string {
	if n, ok := m.(interface{ TypeName() string }); ok {
		return n.TypeName()
	}
	t := reflect.TypeOf(m)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "<nil>"
	}
	return t.Name()
}

func child(m Module, name string) (Module, bool) {
	for _, c := range Children(m) {
		if c.Name == name {
			return c.Module, true
		}
	}
	return nil, false
}

func setChild(m Module, name string, repl Module) error {
	if c, ok := m.(Container); ok {
		return c.SetChild(name, repl)
	}
	var err = fmt.Errorf("no child %q in %s", name, TypeName(m))
	forFields(m, func(n string, f reflect.Value) {
		if n != name || f.Type() == paramType {
			return
		}
		v := reflect.ValueOf(repl)
		if !v.IsValid() || !v.Type().AssignableTo(f.Type()) {
			err = fmt.Errorf("%s does not fit field %q of type %s", TypeName(repl), name, f.Type())
			return
		}
		f.Set(v)
		err = nil
	})
	return err
}

var paramType = reflect.TypeOf((*Param)(nil))

// fieldCache maps a struct type to its tagged fields ([]taggedField).
var fieldCache sync.Map

type taggedField struct {
	index int
	name  string
}

func forFields(m Module, fn func(name string, f reflect.Value)) {
	v := reflect.ValueOf(m)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return
	}
	v = v.Elem()
	var fields []taggedField
	if c, ok := fieldCache.Load(v.Type()); ok {
		fields = c.([]taggedField)
	} else {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			if tag, ok := t.Field(i).Tag.Lookup("nn"); ok && tag != "" && tag != "-" {
				fields = append(fields, taggedField{i, tag})
			}
		}
		fieldCache.Store(v.Type(), fields)
	}
	for _, tf := range fields {
		fn(tf.name, v.Field(tf.index))
	}
}

func isNil(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice, reflect.Func:
		return v.IsNil()
	}
	return false
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

// ModuleList is an indexed list of children named "0", "1", ….
type ModuleList struct {
	Items []Module
}

// Children implements Container.
func (l *ModuleList) Children() []Child {
	out := make([]Child, 0, len(l.Items))
	for i, m := range l.Items {
		out = append(out, Child{fmt.Sprint(i), m})
	}
	return out
}

// SetChild implements Container.
func (l *ModuleList) SetChild(name string, m Module) error {
	for i := range l.Items {
		if fmt.Sprint(i) == name {
			l.Items[i] = m
			return nil
		}
	}
	return fmt.Errorf("no item %q in a list of %d", name, len(l.Items))
}

// LocalParams implements Container: a list owns no parameters itself.
func (l *ModuleList) LocalParams() []NamedParam { return nil }

// TypeName names the list as PyTorch prints it.
func (l *ModuleList) TypeName() string { return "ModuleList" }

// sortedKeys returns a map's keys sorted.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
