package peft

import (
	"fmt"

	"github.com/gopeft/peft/nn"
)

// SelectiveConfig is implemented by the configs of selective methods
// (BitFit, freeze tuning): they add no parameters and inject nothing, but
// choose base parameters that train. Model then treats the chosen
// parameters the way it treats PEFT's bias="all" biases: SetAdapter makes
// them trainable, Save writes them, Load reads them back, disabling the
// adapter leaves them as they are, and merging is a no-op (MergeAndUnload
// returns the model with its trained parameters).
//
// Their adapter files hold the chosen parameters under plain HF parameter
// names (transformer.h.0.self_attention.query_key_value.bias), without
// PEFT's "base_model.model." prefix, so the file also overlays a HF
// checkpoint directly. A model holds at most one selective adapter: the
// parameters belong to the base model, not to the adapter.
type SelectiveConfig interface {
	Config
	// SelectsParam reports whether the base parameter with this HF name
	// (relative to the wrapped model) trains. A parameter shared by several
	// modules (a tied lm_head) is chosen when any of its names is.
	SelectsParam(name string) bool
}

// SelectedParams lists the base parameters cfg chooses, under their HF
// names (a tied parameter under the name the model lists it by), in the
// model's parameter order.
func SelectedParams(base nn.Module, cfg SelectiveConfig) []nn.NamedParam {
	own := baseParams(base)
	isBase := make(map[*nn.Param]bool, len(own))
	for _, np := range own {
		isBase[np.Param] = true
	}
	chosen := map[*nn.Param]bool{}
	_ = nn.Walk(base, func(path string, mod nn.Module) error {
		for _, lp := range nn.LocalParams(mod) {
			name := lp.Name
			if path != "" {
				name = path + "." + lp.Name
			}
			if isBase[lp.Param] && cfg.SelectsParam(name) {
				chosen[lp.Param] = true
			}
		}
		return nil
	})
	var out []nn.NamedParam
	for _, np := range own {
		if chosen[np.Param] {
			out = append(out, np)
		}
	}
	return out
}

// checkSelective refuses a second adapter when either is selective.
func (m *Model) checkSelective(name string, cfg Config) error {
	_, sel := cfg.(SelectiveConfig)
	for n, c := range m.configs {
		if _, other := c.(SelectiveConfig); sel || other {
			return fmt.Errorf("peft: cannot add adapter %q: adapter %q is %s, which trains the base model's own parameters (one such adapter per model)", name, n, c.PeftType())
		}
	}
	return nil
}

// stateKeyPrefix is what goes before a base parameter's name in the
// adapter file: PEFT's "base_model.model." for bias policies, nothing for
// selective methods.
func stateKeyPrefix(cfg Config) string {
	if _, ok := cfg.(SelectiveConfig); ok {
		return ""
	}
	return KeyPrefix
}
