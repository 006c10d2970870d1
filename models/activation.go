package models

import (
	"sort"
	"strings"

	"github.com/gopeft/peft/tensor"
)

// ActFn is an elementwise non-linearity computed in a scope.
type ActFn func(s *tensor.Scope, x *tensor.T) *tensor.T

// activations are transformers' ACT2FN entries that the families use, by
// config.json name (hidden_act, activation_function).
var activations = map[string]ActFn{
	"gelu":              func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Gelu(x, "none") }, // exact, erf
	"gelu_new":          func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Gelu(x, "tanh") }, // GPT-2's tanh approximation
	"gelu_pytorch_tanh": func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Gelu(x, "tanh") },
	"gelu_fast":         func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Gelu(x, "tanh") },
	"quick_gelu":        func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Mul(x, s.Sigmoid(s.MulScalar(x, 1.702))) },
	"relu":              func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Relu(x) },
	"silu":              func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Silu(x) },
	"swish":             func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Silu(x) },
	"tanh":              func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Tanh(x) },
	"sigmoid":           func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Sigmoid(x) },
	"linear":            func(_ *tensor.Scope, x *tensor.T) *tensor.T { return x },
}

// Activation returns the non-linearity that transformers' ACT2FN names
// name (case-insensitive): "gelu" (exact), "gelu_new" / "gelu_fast" /
// "gelu_pytorch_tanh" (tanh approximation), "quick_gelu", "relu", "silu" /
// "swish", "tanh", "sigmoid", "linear".
func Activation(name string) (ActFn, bool) {
	f, ok := activations[strings.ToLower(name)]
	return f, ok
}

// ActivationNames lists the names Activation knows, sorted and
// comma-separated (for error messages).
func ActivationNames() string {
	names := make([]string, 0, len(activations))
	for k := range activations {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
