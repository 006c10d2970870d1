package adalora

import (
	"math"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

func newTestLayer(t *testing.T, in, out int64, r int) *SVDLinear {
	s := tensor.NoGradScope()
	defer s.Close()
	base := nn.NewLinear(s, in, out, false, 0.1)
	require.NoError(t, s.Err())
	l := newSVDLinear(base)
	require.NoError(t, l.addAdapter("default", r, 8, 0, false))
	t.Cleanup(func() { nn.FreeParams(l) })
	return l
}

func setTensor(t *testing.T, dst *tensor.T, v []float32) {
	s := tensor.NoGradScope()
	defer s.Close()
	s.CopyInto(dst, s.FromFloat32(v, dst.Shape()...))
	require.NoError(t, s.Err())
}

// The sensitivity EMAs follow PEFT's update_ipt, the triplet scores its
// mask_to_budget, computed here by hand.
func TestSensitivityAndScores(t *testing.T) {
	l := newTestLayer(t, 2, 3, 2)
	// p and its gradient for A [2,2], E [2,1], B [3,2]
	ps := l.triplet("default")
	vals := [3][]float32{{1, -2, 3, 0.5}, {2, -1}, {1, 2, -1, 0.5, 3, 1}}
	grads := [3][]float32{{0.1, 0.2, -0.3, 0.4}, {0.5, 0.25}, {-0.1, 0.2, 0.3, 0.4, 0.5, -0.6}}
	for i, p := range ps {
		setTensor(t, p.T(), vals[i])
	}
	setGrads := func(scale float32) {
		s := tensor.NewScope()
		defer s.Close()
		// the gradient of Σ g⊙p is g
		var loss *tensor.T
		for i, p := range ps {
			s.SetRequiresGrad(p.T(), true)
			g := make([]float32, len(grads[i]))
			for j := range g {
				g[j] = grads[i][j] * scale
			}
			term := s.Sum(s.Mul(p.T(), s.FromFloat32(g, p.Shape()...)), false)
			if loss == nil {
				loss = term
			} else {
				loss = s.Add(loss, term)
			}
		}
		s.Backward(loss)
		require.NoError(t, s.Err())
	}
	const b1, b2 = 0.85, 0.7
	var ipt, unc [3][]float64
	for i := range vals {
		ipt[i] = make([]float64, len(vals[i]))
		unc[i] = make([]float64, len(vals[i]))
	}
	for step, scale := range []float32{1, 2} {
		setGrads(scale)
		require.NoError(t, l.updateSensitivity("x", "default", b1, b2))
		for i := range vals {
			for j := range vals[i] {
				cur := math.Abs(float64(vals[i][j]) * float64(grads[i][j]*scale))
				ipt[i][j] = b1*ipt[i][j] + (1-b1)*cur
				unc[i][j] = b2*unc[i][j] + (1-b2)*math.Abs(cur-ipt[i][j])
			}
		}
		s := tensor.NoGradScope()
		for i := range vals {
			got := s.Float32s(l.sens["default"].ipt[i])
			gotU := s.Float32s(l.sens["default"].unc[i])
			for j := range got {
				require.InDelta(t, ipt[i][j], float64(got[j]), 1e-6, "step %d ipt %d %d", step, i, j)
				require.InDelta(t, unc[i][j], float64(gotU[j]), 1e-6, "step %d unc %d %d", step, i, j)
			}
			s.Zero(s.Grad(ps[i].T()))
		}
		s.Close()
	}
	sc, err := l.scores("default")
	require.NoError(t, err)
	for r := 0; r < 2; r++ {
		want := ipt[1][r] * unc[1][r]
		a := 0.0
		for j := 0; j < 2; j++ {
			a += ipt[0][r*2+j] * unc[0][r*2+j]
		}
		b := 0.0
		for k := 0; k < 3; k++ {
			b += ipt[2][k*2+r] * unc[2][k*2+r]
		}
		want += a/2 + b/3
		require.InDelta(t, want, float64(sc[r]), 1e-6, "rank %d", r)
	}
}

// maskToBudget keeps the highest-scoring triplets over every layer, zeroes
// the others' lora_E, and records the pattern.
func TestMaskToBudget(t *testing.T) {
	l1 := newTestLayer(t, 2, 2, 3)
	l2 := newTestLayer(t, 2, 2, 3)
	s := tensor.NoGradScope()
	defer s.Close()
	// scores through E only: ipt⊙unc of E = given values, A and B zero
	for i, l := range []*SVDLinear{l1, l2} {
		v := &sensitivity{}
		for k, p := range l.triplet("default") {
			v.ipt[k] = s.Keep(s.Zeros(tensor.Float32, p.Shape()...))
			v.unc[k] = s.Keep(s.Zeros(tensor.Float32, p.Shape()...))
		}
		e := [][]float32{{0.5, 0.1, 0.9}, {0.3, 0.7, 0.2}}[i]
		setTensor(t, v.ipt[1], e)
		setTensor(t, v.unc[1], []float32{1, 1, 1})
		l.sens["default"] = v
		setTensor(t, eT(l), []float32{1, 2, 3})
	}
	defer l1.resetSensitivity("default")
	defer l2.resetSensitivity("default")
	c := NewConfig(10)
	layers := []svdAt{{"a", l1}, {"b", l2}}
	require.NoError(t, c.maskToBudget(layers, "default", 3)) // keep the 3 best of 6: 0.9, 0.7, 0.5
	require.Equal(t, map[string][]bool{"a.lora_E": {true, false, true}, "b.lora_E": {false, true, false}}, c.RankPattern)
	require.Equal(t, []float32{1, 0, 3}, s.Float32s(eT(l1)))
	require.Equal(t, []float32{0, 2, 0}, s.Float32s(eT(l2)))
	require.Equal(t, float32(0.3), Threshold([]float32{0.5, 0.1, 0.9, 0.3, 0.7, 0.2}, 3))
	require.True(t, math.IsInf(float64(Threshold([]float32{1}, 0)), -1))
}

// PEFT's budget schedule, by hand: warm-up, cubic decrease, final.
func TestBudget(t *testing.T) {
	c := NewConfig(100)
	c.Tinit, c.Tfinal, c.DeltaT = 10, 20, 5
	b, m := c.Budget(10, 120, 40)
	require.Equal(t, 120, b)
	require.False(t, m)
	b, m = c.Budget(30, 120, 40) // 1 - 20/70
	require.Equal(t, int(80*math.Pow(1-20.0/70, 3)+40), b)
	require.True(t, m)
	_, m = c.Budget(31, 120, 40)
	require.False(t, m)
	b, m = c.Budget(81, 120, 40)
	require.Equal(t, 40, b)
	require.True(t, m)
}

func TestConfigValidate(t *testing.T) {
	for field, mod := range map[string]func(c *Config){
		"init_r":          func(c *Config) { c.InitR = -1 },
		"target_r":        func(c *Config) { c.TargetR = -1 },
		"deltaT":          func(c *Config) { c.DeltaT = 0 },
		"beta1":           func(c *Config) { c.Beta1 = 1 },
		"beta2":           func(c *Config) { c.Beta2 = 0 },
		"orth_reg_weight": func(c *Config) { c.OrthRegWeight = -0.1 },
		"total_step":      func(c *Config) { n := 0; c.TotalStep = &n },
		"tinit":           func(c *Config) { c.Tinit = 95; c.Tfinal = 5 },
		"lora_dropout":    func(c *Config) { c.LoraDropout = 1 },
		"bias":            func(c *Config) { c.Bias = "some" },
		"rank_pattern":    func(c *Config) { c.RankPattern = map[string][]bool{"x.lora_E": {true}} },
	} {
		c := NewConfig(100)
		mod(c)
		require.ErrorContains(t, c.Validate(), field, field)
	}
	require.NoError(t, NewConfig(100).Validate())
	for key, js := range map[string]string{
		"use_dora":     `{"use_dora": true}`,
		"loftq_config": `{"loftq_config": {"loftq_bits": 4}}`,
		"total_step":   `{"total_step": -3}`,
	} {
		_, err := Decode([]byte(js))
		require.ErrorContains(t, err, key)
	}
	_, err := Decode([]byte(`{"init_r": "six"}`))
	require.Error(t, err)
}

func eT(l *SVDLinear) *tensor.T {
	e, _ := l.E.Get("default")
	return e.T()
}

// Keys this library does not know survive a decode and re-save.
func TestConfigKeepsUnknownKeys(t *testing.T) {
	c, err := Decode([]byte(`{"peft_type": "ADALORA", "init_r": 4, "target_r": 2, "total_step": 10, "some_future_key": {"a": 1}}`))
	require.NoError(t, err)
	out, err := c.MarshalJSON()
	require.NoError(t, err)
	require.Contains(t, string(out), `"some_future_key": {`)
	require.Contains(t, string(out), `"init_r": 4`)
	require.Contains(t, string(out), `"peft_type": "ADALORA"`)
}
