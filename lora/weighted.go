package lora

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strings"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// AddWeightedAdapter adds adapter name to m, made from the LoRA adapters
// listed with the given weights (HF PEFT's add_weighted_adapter). The new
// adapter is frozen and not active; SetAdapter(name) uses it and
// SaveAdapter writes it like any other. combination is one of
//
//   - "linear": every adapter must have the same rank r; A and B are summed
//     separately, A_new = Σ sign(w_i s_i)·√|w_i s_i|·A_i and
//     B_new = Σ √|w_i s_i|·B_i (s_i the adapter's scaling). With one
//     adapter this is exactly w·ΔW; with several it also has cross terms,
//     as in PEFT. New rank r.
//   - "cat": A_new = row-concat(w_i s_i A_i), B_new = column-concat(B_i),
//     exactly Σ w_i ΔW_i. New rank Σ r_i.
//   - "svd": ΔW = Σ w_i ΔW_i (ΔW_i = s_i B_i A_i), truncated to rank k by
//     SVD: B_new = U_k·diag(S_k), A_new = Vh_k. k = svdRank, or the largest
//     r_i when svdRank <= 0.
//
// With a single adapter the combination is always "linear", as in PEFT.
// The new config is the first adapter's with r = lora_alpha = new rank
// (scaling 1), the union of the target modules, no rank/alpha patterns.
// A layer lacking some of the adapters takes the ones it has; a layer
// with none of them gets a zero update.
//
// Where this differs from PEFT 0.10+ on purpose (the mathematically
// intended results): "svd" weights ΔW_i by w_i, not w_i·s_i (PEFT applies
// the scaling twice before PR #3111); the new adapter has use_rslora
// false, so its scaling is 1 (PEFT inherits rsLoRA and scales by √r, PR
// #3449); bias is "none" (biases are base parameters, and PEFT refuses a
// second adapter with a bias policy); a list and a regex target_modules
// combine (PEFT refuses) by writing the list as a regex; modules_to_save
// is the union of the adapters' lists, and the new adapter's copy of such
// a module takes the values of the one adapter that trained it (PEFT
// starts it from the original module). DoRA adapters are refused (PEFT
// gives wrong results, issue #3761); so are the "ties", "dare_*" and
// "magnitude_prune*" combinations, and svd_clamp.
func AddWeightedAdapter(m *peft.Model, adapters []string, weights []float64, name string, combination string, svdRank int) error {
	if len(adapters) == 0 {
		return fmt.Errorf("lora: add weighted adapter %q: no adapters given", name)
	}
	if len(weights) != len(adapters) {
		return fmt.Errorf("lora: add weighted adapter %q: %d weights for %d adapters", name, len(weights), len(adapters))
	}
	if _, ok := m.Config(name); ok {
		return fmt.Errorf("lora: add weighted adapter: adapter %q already exists", name)
	}
	cfgs := make([]*Config, len(adapters))
	for i, a := range adapters {
		c, ok := m.Config(a)
		if !ok {
			return fmt.Errorf("lora: add weighted adapter %q: no adapter %q (have %v)", name, a, m.Adapters())
		}
		lc, ok := c.(*Config)
		if !ok {
			return fmt.Errorf("lora: add weighted adapter %q: adapter %q is %s, not LoRA", name, a, c.PeftType())
		}
		if lc.UseDoRA {
			return fmt.Errorf("lora: add weighted adapter %q: adapter %q uses DoRA, which cannot be combined (its magnitude vector is not linear in the weights)", name, a)
		}
		cfgs[i] = lc
	}
	if len(adapters) == 1 {
		combination = "linear"
	}
	ranks := make([]int, len(cfgs))
	for i, c := range cfgs {
		ranks[i] = c.R
		for _, k := range c.RankPattern.Keys {
			ranks[i] = max(ranks[i], int(c.RankPattern.Values[k]))
		}
	}
	var newRank int
	switch combination {
	case "linear":
		for i, r := range ranks {
			if r != ranks[0] {
				return fmt.Errorf("lora: add weighted adapter %q: combination \"linear\" needs equal ranks, but %q has r=%d and %q has r=%d (use \"cat\" or \"svd\")",
					name, adapters[0], ranks[0], adapters[i], r)
			}
		}
		newRank = ranks[0]
	case "cat":
		for _, r := range ranks {
			newRank += r
		}
	case "svd":
		newRank = svdRank
		if newRank <= 0 {
			for _, r := range ranks {
				newRank = max(newRank, r)
			}
		}
	case "ties", "ties_svd", "dare_linear", "dare_ties", "dare_linear_svd", "dare_ties_svd", "magnitude_prune", "magnitude_prune_svd":
		return fmt.Errorf("lora: add weighted adapter %q: combination %q is not supported (use \"linear\", \"cat\" or \"svd\")", name, combination)
	default:
		return fmt.Errorf("lora: add weighted adapter %q: unknown combination %q (want \"linear\", \"cat\" or \"svd\")", name, combination)
	}

	base := m.Base()
	wrappers := modulesToSaveWrappers(base)
	for path, w := range wrappers {
		var have []string
		for _, a := range adapters {
			if _, ok := w.Copies.Get(a); ok {
				have = append(have, a)
			}
		}
		if len(have) > 1 {
			return fmt.Errorf("lora: add weighted adapter %q: adapters %v each train their own copy of %s (modules_to_save), which cannot be combined", name, have, path)
		}
	}

	targets, err := unionTargets(cfgs, adapters)
	if err != nil {
		return fmt.Errorf("lora: add weighted adapter %q: %w", name, err)
	}
	nc := *cfgs[0]
	nc.R = newRank
	nc.LoraAlpha = float64(newRank)
	nc.UseRSLoRA = false
	nc.Bias = "none"
	nc.TargetModules = targets
	nc.RankPattern = OrderedMap{Values: map[string]float64{}}
	nc.AlphaPattern = OrderedMap{Values: map[string]float64{}}
	nc.LayersToTransform = append(IntList(nil), cfgs[0].LayersToTransform...)
	nc.LayersPattern = append(StringList(nil), cfgs[0].LayersPattern...)
	nc.ExcludeModules = Targets{List: append([]string(nil), cfgs[0].ExcludeModules.List...), Regex: cfgs[0].ExcludeModules.Regex}
	nc.ModulesToSave_ = unionStrings(cfgs, func(c *Config) []string { return c.ModulesToSave_ })
	nc.raw = map[string]json.RawMessage{}
	for k, v := range cfgs[0].raw {
		nc.raw[k] = v
	}
	if err := m.AddAdapter(name, &nc); err != nil {
		return fmt.Errorf("lora: add weighted adapter %q: %w", name, err)
	}
	if err := fillWeighted(base, adapters, weights, name, combination, newRank); err != nil {
		_ = m.DeleteAdapter(name)
		return fmt.Errorf("lora: add weighted adapter %q: %w", name, err)
	}
	if err := copyModulesToSave(base, adapters, name); err != nil {
		_ = m.DeleteAdapter(name)
		return fmt.Errorf("lora: add weighted adapter %q: %w", name, err)
	}
	return nil
}

// fillWeighted writes the combined A and B into every layer that has the
// new adapter.
func fillWeighted(base nn.Module, adapters []string, weights []float64, name, combination string, r int) error {
	for _, at := range peft.Tuners(base) {
		l, ok := at.Tuner.(*Linear)
		if !ok {
			continue
		}
		if _, has := l.A.Get(name); has {
			if err := l.fillWeighted(adapters, weights, name, combination, r); err != nil {
				return fmt.Errorf("%s: %w", at.Path, err)
			}
		}
	}
	return nil
}

func (l *Linear) fillWeighted(adapters []string, weights []float64, name, combination string, r int) error {
	s := tensor.NoGradScope()
	defer s.Close()
	in, out := l.inOut()
	var as, bs []*tensor.T
	var ws []float64
	var present []string
	for i, a := range adapters {
		if _, ok := l.A.Get(a); !ok {
			continue
		}
		if l.isDoRA(a) {
			return fmt.Errorf("adapter %q uses DoRA", a)
		}
		present = append(present, a)
		as = append(as, l.lin(l.A, a).Weight.T())
		bs = append(bs, l.lin(l.B, a).Weight.T())
		ws = append(ws, weights[i])
	}
	var newA, newB *tensor.T
	switch {
	case len(present) == 0:
		newA, newB = s.Zeros(tensor.Float32, int64(r), in), s.Zeros(tensor.Float32, out, int64(r))
	case combination == "cat":
		scaledA := make([]*tensor.T, len(as))
		for i, a := range present {
			scaledA[i] = s.MulScalar(as[i], ws[i]*l.scaling[a])
		}
		newA, newB = s.Cat(0, scaledA...), s.Cat(1, bs...)
	case combination == "linear":
		for i, a := range present {
			if l.rank[a] != r {
				return fmt.Errorf("combination \"linear\" needs rank %d here, adapter %q has %d", r, a, l.rank[a])
			}
			wsc := ws[i] * l.scaling[a]
			sign := 1.0
			if wsc < 0 {
				sign = -1
			}
			ta := s.MulScalar(as[i], sign*math.Sqrt(math.Abs(wsc)))
			tb := s.MulScalar(bs[i], math.Sqrt(math.Abs(wsc)))
			if newA == nil {
				newA, newB = ta, tb
			} else {
				newA, newB = s.Add(newA, ta), s.Add(newB, tb)
			}
		}
	case combination == "svd":
		var dw *tensor.T
		for i, a := range present {
			d := s.MulScalar(l.delta(s, a), ws[i])
			if dw == nil {
				dw = d
			} else {
				dw = s.Add(dw, d)
			}
		}
		u, sv, vh := s.SVD(dw)
		k := min(int64(r), sv.Size(0))
		newB = s.Mul(s.Narrow(u, 1, 0, k), s.Unsqueeze(s.Narrow(sv, 0, 0, k), 0))
		newA = s.Narrow(vh, 0, 0, k)
	}
	if err := s.Err(); err != nil {
		return err
	}
	// zero rows/columns up to the configured rank are exact
	if got := newA.Size(0); got < int64(r) {
		newA = s.Cat(0, newA, s.Zeros(newA.DType(), int64(r)-got, in))
		newB = s.Cat(1, newB, s.Zeros(newB.DType(), out, int64(r)-got))
	} else if got > int64(r) {
		return fmt.Errorf("combined rank %d is larger than the new adapter's r=%d", got, r)
	}
	s.CopyInto(l.lin(l.A, name).Weight.T(), newA)
	s.CopyInto(l.lin(l.B, name).Weight.T(), newB)
	return s.Err()
}

// modulesToSaveWrappers lists the model's modules_to_save wrappers by path.
func modulesToSaveWrappers(base nn.Module) map[string]*peft.ModulesToSave {
	out := map[string]*peft.ModulesToSave{}
	for _, at := range peft.Tuners(base) {
		if w, ok := at.Tuner.(*peft.ModulesToSave); ok {
			out[at.Path] = w
		}
	}
	return out
}

// copyModulesToSave gives the new adapter's modules_to_save copies the
// values of the (single) listed adapter that has a copy of that module.
func copyModulesToSave(base nn.Module, adapters []string, name string) error {
	s := tensor.NoGradScope()
	defer s.Close()
	for path, w := range modulesToSaveWrappers(base) {
		dst, ok := w.Copies.Get(name)
		if !ok {
			continue
		}
		for _, a := range adapters {
			src, ok := w.Copies.Get(a)
			if !ok {
				continue
			}
			sp, dp := nn.NamedParams(src), nn.NamedParams(dst)
			if len(sp) != len(dp) {
				return fmt.Errorf("%s: copies of adapters %q and %q differ", path, a, name)
			}
			for i := range sp {
				s.CopyInto(dp[i].Param.T(), sp[i].Param.T())
			}
			break
		}
	}
	return s.Err()
}

// unionTargets is the union of the adapters' target_modules: a list when
// all are lists, "(re1)|(re2)" when all are regexes (as PEFT), and lists
// written as an equivalent regex when both kinds are mixed.
func unionTargets(cfgs []*Config, names []string) (Targets, error) {
	anyRegex := false
	for i, c := range cfgs {
		if !c.TargetModules.IsSet() {
			return Targets{}, fmt.Errorf("adapter %q has no target_modules", names[i])
		}
		if c.TargetModules.Regex != "" {
			anyRegex = true
		}
	}
	if !anyRegex {
		return List(unionStrings(cfgs, func(c *Config) []string { return c.TargetModules.List })...), nil
	}
	parts := make([]string, len(cfgs))
	for i, c := range cfgs {
		if c.TargetModules.Regex != "" {
			parts[i] = "(" + c.TargetModules.Regex + ")"
			continue
		}
		quoted := make([]string, len(c.TargetModules.List))
		for j, n := range c.TargetModules.List {
			quoted[j] = regexp.QuoteMeta(n)
		}
		// a list entry matches the path itself or a "."-suffix of it
		parts[i] = `((.*\.)?(` + strings.Join(quoted, "|") + `))`
	}
	return Regex(strings.Join(parts, "|")), nil
}

// unionStrings merges the lists in first-seen order; nil when all are nil.
func unionStrings(cfgs []*Config, get func(*Config) []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, c := range cfgs {
		for _, v := range get(c) {
			if !seen[v] {
				seen[v] = true
				out = append(out, v)
			}
		}
	}
	return out
}
