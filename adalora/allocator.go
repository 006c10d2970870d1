package adalora

import (
	"fmt"
	"math"
	"sort"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// sensitivity is the rank allocator's state for one adapter of one layer
// (PEFT's RankAllocator exp_avg_ipt / exp_avg_unc for lora_A, lora_E,
// lora_B): exponential moving averages of |p ⊙ ∇p| and of its deviation.
type sensitivity struct {
	ipt, unc [3]*tensor.T // A, E, B
}

func (v *sensitivity) free() {
	for i := range v.ipt {
		v.ipt[i].Free()
		v.unc[i].Free()
	}
}

func (l *SVDLinear) resetSensitivity(name string) {
	if v, ok := l.sens[name]; ok {
		v.free()
		delete(l.sens, name)
	}
}

func (l *SVDLinear) triplet(name string) [3]*nn.Param {
	a, _ := l.A.Get(name)
	e, _ := l.E.Get(name)
	b, _ := l.B.Get(name)
	return [3]*nn.Param{a, e, b}
}

// updateSensitivity is PEFT's update_ipt for this layer: with I = |p ⊙ ∇p|,
// Ī ← β₁Ī + (1-β₁)I and U ← β₂U + (1-β₂)|I - Ī|, for A, E and B.
func (l *SVDLinear) updateSensitivity(path, name string, beta1, beta2 float64) error {
	s := tensor.NoGradScope()
	defer s.Close()
	ps := l.triplet(name)
	v, ok := l.sens[name]
	if !ok {
		v = &sensitivity{}
		for i, p := range ps {
			s.SetDevice(p.T().Device())
			v.ipt[i] = s.Keep(s.Zeros(p.DType(), p.Shape()...))
			v.unc[i] = s.Keep(s.Zeros(p.DType(), p.Shape()...))
		}
		if err := s.Err(); err != nil {
			return err
		}
		l.sens[name] = v
	}
	for i, p := range ps {
		g := s.Grad(p.T())
		if g == nil {
			return fmt.Errorf("%s.%s.%s has no gradient: rank allocation runs after backward and before the gradients are zeroed", path, [3]string{"lora_A", "lora_E", "lora_B"}[i], name)
		}
		ipt := s.Abs(s.Mul(p.T(), g))
		ni := s.Add(s.MulScalar(v.ipt[i], beta1), s.MulScalar(ipt, 1-beta1))
		nu := s.Add(s.MulScalar(v.unc[i], beta2), s.MulScalar(s.Abs(s.Sub(ipt, ni)), 1-beta2))
		s.CopyInto(v.ipt[i], ni)
		s.CopyInto(v.unc[i], nu)
		if err := s.Err(); err != nil {
			return err
		}
		s.FreeAll()
	}
	return nil
}

// scores is every rank's importance in this layer (PEFT's mask_to_budget):
// S(E)ᵢ + meanⱼ S(A)ᵢⱼ + meanₖ S(B)ₖᵢ with S = Ī ⊙ U.
func (l *SVDLinear) scores(name string) ([]float32, error) {
	v, ok := l.sens[name]
	if !ok {
		return nil, fmt.Errorf("no sensitivity yet (rank allocation needs at least one step before the budget phase)")
	}
	s := tensor.NoGradScope()
	defer s.Close()
	sa := s.Mean(s.Mul(v.ipt[0], v.unc[0]), false, 1)
	se := s.Reshape(s.Mul(v.ipt[1], v.unc[1]), -1)
	sb := s.Mean(s.Mul(v.ipt[2], v.unc[2]), false, 0)
	out := s.Float32s(s.To(s.Add(se, s.Add(sa, sb)), tensor.Float32))
	return out, s.Err()
}

// maskE zeroes lora_E where keep is false (PEFT's masked_fill_).
func (l *SVDLinear) maskE(name string, keep []bool) error {
	e, _ := l.E.Get(name)
	kept := 0
	for _, on := range keep {
		if on {
			kept++
		}
	}
	if int(e.Shape()[0]) == kept && kept != len(keep) {
		return nil // already cut to the pattern (a loaded adapter)
	}
	if int(e.Shape()[0]) != len(keep) {
		return fmt.Errorf("the rank pattern has %d entries, the layer's rank is %d", len(keep), e.Shape()[0])
	}
	m := make([]float32, len(keep))
	for i, on := range keep {
		if on {
			m[i] = 1
		}
	}
	s := tensor.NoGradScope()
	defer s.Close()
	s.SetDevice(e.T().Device())
	s.CopyInto(e.T(), s.Mul(e.T(), s.To(s.FromFloat32(m, int64(len(m)), 1), e.DType())))
	return s.Err()
}

// svdLayers lists the SVDLinear layers under model that have adapter, with
// their paths, in module order.
func svdLayers(model nn.Module, adapter string) []svdAt {
	var out []svdAt
	for _, t := range peft.Tuners(model) {
		if l, ok := t.Tuner.(*SVDLinear); ok {
			if _, has := l.A.Get(adapter); has {
				out = append(out, svdAt{t.Path, l})
			}
		}
	}
	return out
}

type svdAt struct {
	path  string
	layer *SVDLinear
}

// Budget is PEFT's RankAllocator.budget_schedule for step: the total rank
// budget over all layers, and whether this step masks. Up to tinit the
// budget is initial (the sum of every layer's init_r) and nothing is
// masked; after total_step - tfinal it is the target (target_r per
// layer); in between it falls cubically from the first to the second and
// every deltaT-th step masks.
func (c *Config) Budget(step, initial, target int) (budget int, mask bool) {
	total := 0
	if c.TotalStep != nil {
		total = *c.TotalStep
	}
	switch {
	case step <= c.Tinit:
		return initial, false
	case step > total-c.Tfinal:
		return target, true
	}
	mul := 1 - float64(step-c.Tinit)/float64(total-c.Tfinal-c.Tinit)
	return int(float64(initial-target)*(mul*mul*mul) + float64(target)), step%c.DeltaT == 0
}

// AfterOptimizerStep implements peft.StepConfig: PEFT's AdaLoraModel
// update_and_allocate(step), to be called after the optimizer's step and
// before the gradients are zeroed (train.Trainer does). Before total_step
// - tfinal it updates the sensitivities and, on masking steps, zeroes the
// lora_E entries of the lowest-scoring ranks so that the budget's worth
// remain, recording the result in RankPattern; at total_step - tfinal it
// masks to the final budget once more and forgets the sensitivities;
// after that it re-applies RankPattern.
func (c *Config) AfterOptimizerStep(model nn.Module, adapter string, step int) error {
	if c.TotalStep == nil {
		return fmt.Errorf("adalora: field \"total_step\" is null: the rank allocator needs the number of training steps")
	}
	if c.TargetR > c.InitR {
		return fmt.Errorf("adalora: field \"target_r\"=%d is above \"init_r\"=%d: the rank budget cannot grow", c.TargetR, c.InitR)
	}
	layers := svdLayers(model, adapter)
	if len(layers) == 0 {
		return nil
	}
	final := *c.TotalStep - c.Tfinal
	switch {
	case step < final:
		for _, l := range layers {
			if err := l.layer.updateSensitivity(l.path, adapter, c.Beta1, c.Beta2); err != nil {
				return fmt.Errorf("adalora: step %d: %w", step, err)
			}
		}
		if budget, mask := c.budgetOf(layers, adapter, step); mask {
			return c.maskToBudget(layers, adapter, budget)
		}
	case step == final:
		budget, _ := c.budgetOf(layers, adapter, step)
		if err := c.maskToBudget(layers, adapter, budget); err != nil {
			return err
		}
		for _, l := range layers {
			l.layer.resetSensitivity(adapter)
		}
	default:
		if c.RankPattern == nil {
			return fmt.Errorf("adalora: step %d is after the final allocation (total_step - tfinal = %d) but the config has no rank_pattern (a run resumed past it without the saved adapter's config?)", step, final)
		}
		for _, l := range layers {
			keep, ok := c.RankPattern[l.path+".lora_E"]
			if !ok {
				continue
			}
			if err := l.layer.maskE(adapter, keep); err != nil {
				return fmt.Errorf("adalora: %s: %w", l.path, err)
			}
		}
	}
	return nil
}

func (c *Config) budgetOf(layers []svdAt, adapter string, step int) (int, bool) {
	initial := 0
	for _, l := range layers {
		initial += l.layer.Rank(adapter)
	}
	return c.Budget(step, initial, c.TargetR*len(layers))
}

// maskToBudget is PEFT's mask_to_budget: the threshold is the
// (initial - budget)-th smallest score over every layer; every rank
// scoring at or below it gets its lora_E zeroed.
func (c *Config) maskToBudget(layers []svdAt, adapter string, budget int) error {
	scores := make([][]float32, len(layers))
	var all []float32
	for i, l := range layers {
		sc, err := l.layer.scores(adapter)
		if err != nil {
			return fmt.Errorf("adalora: %s: %w", l.path, err)
		}
		scores[i] = sc
		all = append(all, sc...)
	}
	threshold := Threshold(all, len(all)-budget)
	pattern := map[string][]bool{}
	for i, l := range layers {
		keep := make([]bool, len(scores[i]))
		for j, v := range scores[i] {
			keep[j] = !(v <= threshold)
		}
		if err := l.layer.maskE(adapter, keep); err != nil {
			return fmt.Errorf("adalora: %s: %w", l.path, err)
		}
		pattern[l.path+".lora_E"] = keep
	}
	c.RankPattern = pattern
	return nil
}

// Threshold is torch.kthvalue(scores, k): the k-th smallest score
// (1-based); for k <= 0, -Inf (nothing is masked).
func Threshold(scores []float32, k int) float32 {
	if k <= 0 {
		return float32(math.Inf(-1))
	}
	sorted := append([]float32(nil), scores...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	if k > len(sorted) {
		k = len(sorted)
	}
	return sorted[k-1]
}

// OrthReg is PEFT's orthogonal regularisation of adapter over model's
// layers: the mean over every lora_A and lora_B of ‖AAᵀ - I‖_F and
// ‖BᵀB - I‖_F (in s; nil when no layer has the adapter). The loss adds
// OrthRegWeight times it.
func OrthReg(s *tensor.Scope, model nn.Module, adapter string) *tensor.T {
	layers := svdLayers(model, adapter)
	if len(layers) == 0 {
		return nil
	}
	var sum *tensor.T
	n := 0
	for _, l := range layers {
		a, _ := l.layer.A.Get(adapter)
		b, _ := l.layer.B.Get(adapter)
		for _, cov := range []*tensor.T{
			s.Matmul(a.T(), s.Transpose(a.T(), 0, 1)),
			s.Matmul(s.Transpose(b.T(), 0, 1), b.T()),
		} {
			d := s.Sub(cov, eye(s, cov))
			norm := s.Sqrt(s.Sum(s.Mul(d, d), false))
			if sum == nil {
				sum = norm
			} else {
				sum = s.Add(sum, norm)
			}
			n++
		}
	}
	return s.DivScalar(sum, float64(n))
}

// eye is an identity matrix shaped, typed and placed like the square t.
func eye(s *tensor.Scope, t *tensor.T) *tensor.T {
	if t == nil {
		return nil
	}
	k := t.Shape()[0]
	v := make([]float32, k*k)
	for i := int64(0); i < k; i++ {
		v[i*k+i] = 1
	}
	defer s.SetDevice(s.SetDevice(t.Device()))
	return s.To(s.FromFloat32(v, k, k), t.DType())
}

// LossTerm implements peft.LossTermer: OrthRegWeight × OrthReg, added to
// the loss whenever the model computes one (PEFT's AdaLoraModel.forward).
func (c *Config) LossTerm(s *tensor.Scope, model nn.Module, adapter string) *tensor.T {
	if c.OrthRegWeight == 0 {
		return nil
	}
	r := OrthReg(s, model, adapter)
	if r == nil {
		return nil
	}
	return s.MulScalar(r, c.OrthRegWeight)
}
