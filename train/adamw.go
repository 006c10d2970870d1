package train

import (
	"fmt"
	"math"
	"strconv"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
)

// AdamWConfig holds AdamW's hyper-parameters (PyTorch's defaults when zero:
// betas 0.9/0.999, eps 1e-8, weight decay 0.01).
type AdamWConfig struct {
	LR          float64
	Beta1       float64
	Beta2       float64
	Eps         float64
	WeightDecay float64
}

// AdamW is torch.optim.AdamW (decoupled weight decay), computed with the
// same update order as PyTorch's single-tensor implementation. Its moment
// estimates live in C memory: call Free when done.
type AdamW struct {
	cfg    AdamWConfig
	params []nn.NamedParam
	m, v   []*tensor.T
	step   int
	// per parameter, with parameter groups: the group's learning rate as
	// a multiple of cfg.LR, and its weight decay (nil: cfg's for all)
	lrScale, decay []float64
}

// ParamGroup is one of torch.optim's parameter groups: parameters that
// train with their own learning rate and weight decay. A plain value.
type ParamGroup struct {
	// Name says what the group is (LoRA+: "groupA", "embedding", "groupB",
	// "groupB_no_decay", PEFT's names); only for messages.
	Name        string
	Params      []nn.NamedParam
	LR          float64
	WeightDecay float64
}

// NewAdamWGroups makes an optimizer over parameter groups, as
// torch.optim.AdamW(param_groups): each group's parameters step with its
// LR and WeightDecay. cfg.LR is the base rate the groups are relative to:
// SetLR(lr) gives every group the rate LR × lr / cfg.LR, as a PyTorch
// scheduler scales each group's initial rate; cfg.WeightDecay is not used.
// cfg.LR must be positive.
func NewAdamWGroups(groups []ParamGroup, cfg AdamWConfig) *AdamW {
	var params []nn.NamedParam
	var scale, decay []float64
	for _, g := range groups {
		for _, p := range g.Params {
			params = append(params, p)
			scale = append(scale, g.LR/cfg.LR)
			decay = append(decay, g.WeightDecay)
		}
	}
	o := NewAdamW(params, cfg)
	o.lrScale, o.decay = scale, decay
	return o
}

// NewAdamW makes an optimizer over params (typically model.TrainableParams()).
func NewAdamW(params []nn.NamedParam, cfg AdamWConfig) *AdamW {
	if cfg.Beta1 == 0 {
		cfg.Beta1 = 0.9
	}
	if cfg.Beta2 == 0 {
		cfg.Beta2 = 0.999
	}
	if cfg.Eps == 0 {
		cfg.Eps = 1e-8
	}
	return &AdamW{cfg: cfg, params: params, m: make([]*tensor.T, len(params)), v: make([]*tensor.T, len(params))}
}

// Steps is the number of updates made.
func (o *AdamW) Steps() int { return o.step }

// SetLR changes the learning rate (for schedules).
func (o *AdamW) SetLR(lr float64) { o.cfg.LR = lr }

// Step updates every parameter that has a gradient.
func (o *AdamW) Step() error {
	s := tensor.NoGradScope()
	defer s.Close()
	o.step++
	c := o.cfg
	bc1 := 1 - math.Pow(c.Beta1, float64(o.step))
	bc2 := 1 - math.Pow(c.Beta2, float64(o.step))
	for i, np := range o.params {
		p := np.Param.T()
		g := s.Grad(p)
		if g == nil {
			continue
		}
		lr, wd := c.LR, c.WeightDecay
		if o.lrScale != nil {
			lr, wd = c.LR*o.lrScale[i], o.decay[i]
		}
		stepSize := lr / bc1
		if o.m[i] == nil {
			s.SetDevice(p.Device()) // the state lives beside its parameter
			o.m[i] = s.Keep(s.Zeros(p.DType(), p.Shape()...))
			o.v[i] = s.Keep(s.Zeros(p.DType(), p.Shape()...))
		}
		m, v := o.m[i], o.v[i]
		s.MulScalar_(p, 1-lr*wd)
		s.MulScalar_(m, c.Beta1)
		s.Add_(m, s.MulScalar(g, 1-c.Beta1))
		s.MulScalar_(v, c.Beta2)
		s.Addcmul_(v, s.MulScalar(g, 1-c.Beta2), g)
		denom := s.DivScalar(s.Sqrt(v), math.Sqrt(bc2))
		s.AddScalar_(denom, c.Eps)
		s.Addcdiv_(p, s.MulScalar(m, -stepSize), denom)
		if err := s.Err(); err != nil {
			return fmt.Errorf("adamw: %s: %w", np.Name, err)
		}
		s.FreeAll()
	}
	return s.Err()
}

// ZeroGrad zeroes the gradients of the optimizer's parameters.
func (o *AdamW) ZeroGrad() error {
	s := tensor.NoGradScope()
	defer s.Close()
	for _, np := range o.params {
		if g := s.Grad(np.Param.T()); g != nil {
			s.Zero(g)
		}
		s.FreeAll()
	}
	return s.Err()
}

// Free releases the moment estimates.
func (o *AdamW) Free() {
	for i := range o.m {
		o.m[i].Free()
		o.v[i].Free()
		o.m[i], o.v[i] = nil, nil
	}
}

// Optimizer-state file keys: "<param name>.exp_avg" and
// "<param name>.exp_avg_sq" (PyTorch's state names), with the step count
// in the metadata.
const (
	stateStepKey = "step"
	stateFormat  = "gopeft-adamw"
)

// SaveState writes the optimizer's state to path as safetensors: each
// parameter's first and second moment under its name, the step count in
// the metadata. The file is written atomically.
func (o *AdamW) SaveState(path string) error {
	var list []nn.NamedParam
	for i, np := range o.params {
		if o.m[i] == nil {
			continue
		}
		list = append(list, nn.NamedParam{Name: np.Name + ".exp_avg", Param: nn.NewParam(o.m[i])},
			nn.NamedParam{Name: np.Name + ".exp_avg_sq", Param: nn.NewParam(o.v[i])})
	}
	tensors, err := nn.StateTensors(list, "")
	if err != nil {
		return fmt.Errorf("adamw: save state: %w", err)
	}
	meta := map[string]string{"format": stateFormat, stateStepKey: strconv.Itoa(o.step)}
	if err := safetensors.Write(path, tensors, meta); err != nil {
		return fmt.Errorf("adamw: save state: %w", err)
	}
	return nil
}

// LoadState restores a state written by SaveState for the same parameters
// (names and shapes are checked; nothing changes on error).
func (o *AdamW) LoadState(path string) error {
	set, err := safetensors.OpenFiles(path)
	if err != nil {
		return fmt.Errorf("adamw: load state: %w", err)
	}
	defer set.Close()
	meta := set.Files()[0].Metadata()
	if meta["format"] != stateFormat {
		return fmt.Errorf("adamw: load state: %s is not an AdamW state file (format %q)", path, meta["format"])
	}
	step, err := strconv.Atoi(meta[stateStepKey])
	if err != nil || step < 0 {
		return fmt.Errorf("adamw: load state: %s: bad step %q", path, meta[stateStepKey])
	}
	known := map[string]bool{}
	for _, np := range o.params {
		known[np.Name+".exp_avg"], known[np.Name+".exp_avg_sq"] = true, true
	}
	for _, name := range set.Names() {
		if !known[name] {
			return fmt.Errorf("adamw: load state: %s: %q is not a moment of this optimizer's parameters", path, name)
		}
	}
	s := tensor.NoGradScope()
	defer s.Close()
	m := make([]*tensor.T, len(o.params))
	v := make([]*tensor.T, len(o.params))
	for i, np := range o.params {
		if _, _, ok := set.Info(np.Name + ".exp_avg"); !ok {
			continue
		}
		for j, key := range []string{np.Name + ".exp_avg", np.Name + ".exp_avg_sq"} {
			t, err := nn.TensorFromFile(s, set, key, np.Param.DType())
			if err != nil {
				return fmt.Errorf("adamw: load state: %w", err)
			}
			if !nn.SameShape(t.Shape(), np.Param.Shape()) {
				return fmt.Errorf("adamw: load state: %s: %q has shape %v, the parameter %v", path, key, t.Shape(), np.Param.Shape())
			}
			if j == 0 {
				m[i] = t
			} else {
				v[i] = t
			}
		}
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("adamw: load state: %w", err)
	}
	o.Free()
	for i := range m {
		o.m[i], o.v[i] = s.Keep(m[i]), s.Keep(v[i])
	}
	o.step = step
	return nil
}
