package boft

import (
	"fmt"
	"math"

	"github.com/gopeft/peft/internal/orth"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// settings are one adapter's per-layer values.
type settings struct {
	blockSize, blockNum int64
	factors             int       // boft_n_butterfly_factor (≥ 1)
	perms               [][]int64 // per factor; nil: the identity
	dropout             float64
}

// layout is PEFT's update_layer arithmetic: from the layer's in_features
// and the config it derives the block size and number (one of them is 0)
// and checks the butterfly factor fits; perms are the butterfly
// permutations of each factor (block_butterfly_perm).
func layout(in int64, blockSize, blockNum, factors int) (settings, error) {
	m := factors - 1 // PEFT's paper notation
	if m < 0 {
		return settings{}, fmt.Errorf("boft_n_butterfly_factor %d must be a positive integer", factors)
	}
	bs, bn := int64(blockSize), int64(blockNum)
	switch {
	case bs == 0 && bn != 0:
		if in%bn != 0 {
			return settings{}, fmt.Errorf("in_features (%d) must be divisible by boft_block_num (%d)", in, bn)
		}
		if m != 0 {
			if m > int(math.Log2(float64(bn))) {
				return settings{}, fmt.Errorf("invalid combination of boft_n_butterfly_factor (%d) and boft_block_num (%d)", factors, bn)
			}
			if bn%(1<<m) != 0 {
				return settings{}, fmt.Errorf("boft_block_num (%d) must be a multiple of 2 raised to the power of boft_n_butterfly_factor (%d) - 1", bn, factors)
			}
		}
		bs = in / bn
	case bs != 0 && bn == 0:
		if in%bs != 0 {
			return settings{}, fmt.Errorf("in_features (%d) must be divisible by boft_block_size (%d)", in, bs)
		}
		if m != 0 && (in < bs<<m || in%(bs<<m) != 0) {
			return settings{}, fmt.Errorf("invalid combination of in_features (%d), boft_n_butterfly_factor (%d) and boft_block_size (%d): "+
				"in_features must be a multiple of boft_block_size·2^(factor-1)", in, factors, bs)
		}
		bn = in / bs
	default:
		return settings{}, fmt.Errorf("set exactly one of boft_block_size (%d) and boft_block_num (%d)", bs, bn)
	}
	if m != 0 {
		if bn%2 != 0 {
			return settings{}, fmt.Errorf("boft_block_num (%d) must be an even number", bn)
		}
		if bs%2 != 0 {
			return settings{}, fmt.Errorf("boft_block_size (%d) must be an even number", bs)
		}
	}
	st := settings{blockSize: bs, blockNum: bn, factors: factors, perms: make([][]int64, factors)}
	for i := 0; i < factors; i++ {
		p, err := butterflyPerm(in, bn>>i, bs/2, m)
		if err != nil {
			return settings{}, err
		}
		st.perms[i] = p
	}
	return st, nil
}

// butterflyPerm is PEFT's block_butterfly_perm(n, b, r, m): within each
// group of n/b positions, runs of r positions are reordered even runs
// first, then odd runs. nil stands for the identity.
func butterflyPerm(n, b, r int64, m int) ([]int64, error) {
	if m == 0 {
		return nil, nil
	}
	if b*r*2 > n {
		return nil, fmt.Errorf("invalid number of blocks (%d blocks of %d·2 in %d features)", b, r, n)
	}
	group := n / b
	runs := group / r
	order := make([]int64, 0, group)
	for _, start := range []int64{0, 1} {
		for pos := start; pos < runs; pos += 2 {
			for k := int64(0); k < r; k++ {
				order = append(order, pos*r+k)
			}
		}
	}
	perm := make([]int64, n)
	identity := true
	for g := int64(0); g < n; g += group {
		for i, o := range order {
			perm[g+int64(i)] = g + o
			identity = identity && g+o == g+int64(i)
		}
	}
	if identity {
		return nil, nil
	}
	return perm, nil
}

// Linear is PEFT's BOFT layer (0.13.2) around a base nn.Linear. Each
// adapter owns boft_R [factors, blocks, b, b] and boft_s [out, 1]. Each
// factor i gives the block-diagonal matrix Bᵢ of its blocks' Cayley
// transforms, permuted by the factor's butterfly permutation Pᵢ into
// Mᵢ = Pᵢ Bᵢ Pᵢᵀ; the rotation is R = M_last ⋯ M₁ M₀ [in, in] and
//
//	y = ((x R) Wᵀ) ⊙ sᵀ + bias,    merged: W ← (W Rᵀ) ⊙ s
//
// (PEFT's current forward; 0.13.2 formed W Rᵀ ⊙ s first, the same
// product). Several active adapters: R = R_last ⋯ R_first, s multiplied.
// A Linear is not safe for concurrent mutation; concurrent forwards are
// safe.
type Linear struct {
	Base nn.Layer      `nn:"base_layer"`
	R    *nn.ParamDict `nn:"boft_R"`
	S    *nn.ParamDict `nn:"boft_s"`
	orth.Switches

	set map[string]settings
}

func (*Linear) TypeName() string { return "boft.Linear" }

func newLinear(base *nn.Linear) *Linear {
	return &Linear{Base: base, R: nn.NewParamDict(), S: nn.NewParamDict(), set: map[string]settings{}}
}

func (l *Linear) linear() *nn.Linear { return l.Base.(*nn.Linear) }
func (l *Linear) inFeatures() int64  { return l.linear().Weight.Shape()[1] }
func (l *Linear) outFeatures() int64 { return l.linear().Weight.Shape()[0] }

// addAdapter creates boft_R and boft_s (PEFT's update_layer): zeros and
// ones (the identity), or with init false N(0, 0.1) and N(1, 0.1).
func (l *Linear) addAdapter(name string, st settings, identity bool) error {
	s := tensor.NoGradScope()
	defer s.Close()
	shape := []int64{int64(st.factors), st.blockNum, st.blockSize, st.blockSize}
	var r, sc *tensor.T
	if identity {
		r = s.Zeros(tensor.Float32, shape...)
		sc = s.Ones(tensor.Float32, l.outFeatures(), 1)
	} else {
		r = s.MulScalar(s.Randn(tensor.Float32, shape...), 0.1)
		sc = s.AddScalar(s.MulScalar(s.Randn(tensor.Float32, l.outFeatures(), 1), 0.1), 1)
	}
	if err := s.Err(); err != nil {
		return err
	}
	l.R.Set(name, nn.NewParam(s.Keep(r)))
	l.S.Set(name, nn.NewParam(s.Keep(sc)))
	l.set[name] = st
	return nil
}

// dropBlocks is PEFT's MultiplicativeDropoutLayer in training: in one
// random factor, int(p·blocks) random blocks become the identity.
func dropBlocks(s *tensor.Scope, q *tensor.T, p float64) *tensor.T {
	n, d, h := q.Size(0), q.Size(1), q.Size(2)
	k := int64(p * float64(d))
	if k == 0 {
		return q
	}
	pick := int64(s.Item(s.Randint(n, 1)))
	_, order := s.Sort(s.Rand(tensor.Float32, d), 0, false)
	idx := s.Int64s(order)
	mask := make([]float32, n*d)
	for _, j := range idx[:k] {
		mask[pick*d+j] = 1
	}
	mt := s.To(s.View(s.FromFloat32(mask, n*d), n, d, 1, 1), q.DType())
	eye := orth.Eye(s, h, q.DType(), q)
	return s.Add(s.Mul(s.AddScalar(s.Neg(mt), 1), q), s.Mul(mt, eye))
}

// rotation is adapter name's butterfly matrix R [in, in] in the adapter's
// dtype (PEFT's get_delta_weight, with the CUDA extension's one block-
// diagonal matrix per factor); train applies boft_dropout.
func (l *Linear) rotation(s *tensor.Scope, name string, train bool) *tensor.T {
	p, _ := l.R.Get(name)
	st := l.set[name]
	sh := p.Shape()
	q := s.View(orth.Cayley(s, s.View(p.T(), sh[0]*sh[1], sh[2], sh[3])), sh...)
	if train && st.dropout > 0 {
		q = dropBlocks(s, q, st.dropout)
	}
	var rot *tensor.T
	for i := 0; i < st.factors; i++ {
		m := orth.BlockDiag(s, s.Select(q, 0, int64(i)))
		if perm := st.perms[i]; perm != nil {
			prev := s.SetDevice(p.T().Device())
			idx := s.FromInt64(perm, int64(len(perm)))
			s.SetDevice(prev)
			m = s.IndexSelect(s.IndexSelect(m, 0, idx), 1, idx) // P B Pᵀ
		}
		if rot == nil {
			rot = m
		} else {
			rot = s.Matmul(m, rot)
		}
	}
	return rot
}

// Forward implements nn.Layer.
func (l *Linear) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	names, off, ok := l.Call(s, "boft.Linear")
	if !ok {
		return nil
	}
	if off || len(l.MergedAd) > 0 {
		return l.Base.Forward(s, x)
	}
	var run []string
	for _, n := range names {
		if _, ok := l.R.Get(n); ok {
			run = append(run, n)
		}
	}
	if len(run) == 0 || x == nil {
		return l.Base.Forward(s, x)
	}
	dt := x.DType()
	var rot, scale *tensor.T
	for _, n := range run {
		r := l.rotation(s, n, l.Training)
		sp, _ := l.S.Get(n)
		if rot == nil {
			rot, scale = r, sp.T()
		} else {
			rot, scale = s.Matmul(r, rot), s.Mul(sp.T(), scale)
		}
	}
	if rot == nil {
		return nil
	}
	xr := s.Matmul(s.To(x, rot.DType()), rot)
	y := s.To(l.Base.Forward(s, s.To(xr, l.linear().Weight.DType())), rot.DType())
	sc := s.Reshape(scale, -1)
	if b := l.linear().Bias; b != nil {
		bias := s.To(b.T(), rot.DType())
		y = s.Add(s.Mul(s.Sub(y, bias), sc), bias)
	} else {
		y = s.Mul(y, sc)
	}
	return s.To(y, dt)
}

// Merge folds adapters into the base weight, W ← (W Rᵀ) ⊙ s, computed in
// the adapter's dtype and stored in the weight's.
func (l *Linear) Merge(names []string, safe bool) error {
	w := l.linear().Weight
	s := tensor.NoGradScope()
	defer s.Close()
	for _, name := range names {
		sp, ok := l.S.Get(name)
		if !ok {
			continue
		}
		rot := l.rotation(s, name, false)
		nw := s.Contiguous(s.To(s.Mul(s.Matmul(s.To(w.T(), rot.DType()), s.Transpose(rot, 0, 1)), sp.T()), w.DType()))
		if err := s.Err(); err != nil {
			return err
		}
		if safe {
			if err := peft.CheckFinite(s, nw, fmt.Sprintf("adapter %q", name)); err != nil {
				return err
			}
		}
		w.Set(s.Keep(nw))
		l.MergedAd = append(l.MergedAd, name)
	}
	return s.Err()
}

// Unmerge takes the merged adapters out again, last merged first:
// W ← (W R) ⊙ (1/s) (as PEFT, through Rᵀ = R⁻¹).
func (l *Linear) Unmerge() error {
	w := l.linear().Weight
	s := tensor.NoGradScope()
	defer s.Close()
	for len(l.MergedAd) > 0 {
		name := l.MergedAd[len(l.MergedAd)-1]
		if sp, ok := l.S.Get(name); ok {
			rot := l.rotation(s, name, false)
			nw := s.Contiguous(s.To(s.Mul(s.Matmul(s.To(w.T(), rot.DType()), rot), s.Reciprocal(sp.T())), w.DType()))
			if err := s.Err(); err != nil {
				return err
			}
			w.Set(s.Keep(nw))
		}
		l.MergedAd = l.MergedAd[:len(l.MergedAd)-1]
	}
	return s.Err()
}

func (l *Linear) BaseLayer() nn.Layer { return l.Base }
func (l *Linear) Adapters() []string  { return l.R.Keys() }

// SetDisabled turns the adapters off; a merged layer is unmerged first (as PEFT does).
func (l *Linear) SetDisabled(off bool) {
	if off && len(l.MergedAd) > 0 {
		_ = l.Unmerge()
	}
	l.Disabled = off
}

// DeleteAdapter drops an adapter's tensors.
func (l *Linear) DeleteAdapter(name string) {
	l.R.Delete(name)
	l.S.Delete(name)
	delete(l.set, name)
}

// AdapterState lists the adapter's tensors under PEFT's file names
// "boft_R" and "boft_s" (the permutations are not saved: PEFT's boft_P is
// a non-persistent buffer).
func (l *Linear) AdapterState(name string) []nn.NamedParam {
	r, ok := l.R.Get(name)
	if !ok {
		return nil
	}
	sp, _ := l.S.Get(name)
	return []nn.NamedParam{{Name: "boft_R", Param: r}, {Name: "boft_s", Param: sp}}
}

// SetTrainable marks the adapter's tensors trainable or frozen.
func (l *Linear) SetTrainable(name string, on bool) error {
	r, ok := l.R.Get(name)
	if !ok {
		return nil
	}
	sp, _ := l.S.Get(name)
	return orth.SetRequiresGrad(on, r, sp)
}

// ExtraRepr is empty: the children print themselves.
func (l *Linear) ExtraRepr() string { return "" }
