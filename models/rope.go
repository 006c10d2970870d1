package models

import (
	"fmt"
	"math"
	"strings"

	"github.com/gopeft/peft/tensor"
)

// Rope is the rotary position embedding of a decoder as transformers
// computes it (modeling_rope_utils.py): the inverse frequencies for each
// rope_type and the attention scaling that multiplies cos and sin.
//
// Build one with ParseRope (from config.json) or NewRope (a default rope
// in code). A Rope is immutable after parsing and safe for concurrent use.
type Rope struct {
	// Type is the rope_type: "default", "linear", "dynamic", "yarn",
	// "longrope" or "llama3" (legacy "type" keys are read too; Phi-3's old
	// "su" is "longrope").
	Type string
	// Theta is the base (rope_theta).
	Theta float64
	// Dim is the rotated part of a head: int(head_dim ×
	// partial_rotary_factor); the rest of the head passes through.
	Dim int64
	// MaxPositions is config.json's max_position_embeddings.
	MaxPositions int64
	// OriginalMaxPositions is the pre-training context (llama3, yarn,
	// longrope): config.json's top-level original_max_position_embeddings
	// (Phi-3), else the rope block's, else max_position_embeddings.
	OriginalMaxPositions int64

	factor          float64 // 0: absent
	attentionFactor float64 // 0: derived from factor
	betaFast        float64
	betaSlow        float64
	mscale          float64
	mscaleAllDim    float64
	truncate        bool
	lowFreqFactor   float64
	highFreqFactor  float64
	shortFactor     []float64
	longFactor      []float64
}

// RopeTypes are the rope_type values ParseRope accepts.
var RopeTypes = []string{"default", "linear", "dynamic", "yarn", "longrope", "llama3"}

// NewRope is a rope without scaling (rope_type "default") over dim
// dimensions of each head.
func NewRope(theta float64, dim int64) *Rope {
	return &Rope{Type: "default", Theta: theta, Dim: dim}
}

// ParseRope reads the rotary embedding of a config.json. raw is the file
// as parsed (nil for a config built in code); theta, headDim and maxPos
// are the family's rope_theta, head_dim and max_position_embeddings with
// its defaults applied. The scaling block is raw's "rope_scaling"
// (transformers 4) or "rope_parameters" (transformers 5, where it may also
// carry rope_theta and partial_rotary_factor); a null or absent block is
// the default rope. Errors name the field.
func ParseRope(raw map[string]any, theta float64, headDim, maxPos int64) (*Rope, error) {
	field := "rope_scaling"
	v, ok := raw[field]
	if !ok || v == nil {
		field = "rope_parameters"
		v = raw[field]
	}
	var block map[string]any
	if v != nil {
		if block, ok = v.(map[string]any); !ok {
			return nil, fmt.Errorf("field %q: want an object, got %T", field, v)
		}
	}
	return ParseRopeBlock(field, block, raw, theta, headDim, maxPos)
}

// ParseRopeBlock is ParseRope for a given rope block (field names it in
// errors): families whose config.json has several blocks (one per layer
// type) parse each with it. block may be nil (the default rope).
func ParseRopeBlock(field string, block, raw map[string]any, theta float64, headDim, maxPos int64) (*Rope, error) {
	r := &Rope{Type: "default", Theta: theta, MaxPositions: maxPos, truncate: true}
	f := func(key string) string { return field + "." + key }
	num := func(key string) (float64, bool, error) {
		v, ok := block[key]
		if !ok || v == nil {
			return 0, false, nil
		}
		x, ok := v.(float64)
		if !ok || math.IsNaN(x) || math.IsInf(x, 0) {
			return 0, false, fmt.Errorf("field %q: want a number, got %v", f(key), v)
		}
		return x, true, nil
	}
	if t, ok := block["rope_type"]; ok && t != nil {
		s, ok := t.(string)
		if !ok {
			return nil, fmt.Errorf("field %q: want a string, got %v", f("rope_type"), t)
		}
		r.Type = s
	} else if t, ok := block["type"]; ok && t != nil {
		s, ok := t.(string)
		if !ok {
			return nil, fmt.Errorf("field %q: want a string, got %v", f("type"), t)
		}
		r.Type = s
	}
	if r.Type == "su" { // Phi-3's first name for longrope
		r.Type = "longrope"
	}
	known := false
	for _, t := range RopeTypes {
		known = known || t == r.Type
	}
	if !known {
		return nil, fmt.Errorf("field %q: rope type %q is not supported (supported: %s)", f("rope_type"), r.Type, strings.Join(RopeTypes, ", "))
	}
	if x, ok, err := num("rope_theta"); err != nil {
		return nil, err
	} else if ok {
		r.Theta = x
	}
	if err := CheckPositive(f("rope_theta"), r.Theta); err != nil {
		return nil, err
	}
	partial, pfield := 1.0, "partial_rotary_factor"
	if x, ok := raw["partial_rotary_factor"].(float64); ok {
		partial = x
	}
	if x, ok, err := num("partial_rotary_factor"); err != nil {
		return nil, err
	} else if ok {
		partial, pfield = x, f("partial_rotary_factor")
	}
	if !(partial > 0 && partial <= 1) {
		return nil, fmt.Errorf("field %q must be in (0, 1], got %g", pfield, partial)
	}
	r.Dim = int64(float64(headDim) * partial)
	if r.Dim < 2 || r.Dim%2 != 0 {
		return nil, fmt.Errorf("field %q: head_dim %d × %g gives %d rotary dimensions, want an even number ≥ 2", pfield, headDim, partial, r.Dim)
	}

	var err error
	var has bool
	if r.factor, has, err = num("factor"); err != nil {
		return nil, err
	}
	needFactor := r.Type == "linear" || r.Type == "dynamic" || r.Type == "llama3"
	if needFactor && !has {
		return nil, fmt.Errorf("field %q: missing (rope type %q needs it)", f("factor"), r.Type)
	}
	if has && !(r.factor > 0) {
		return nil, fmt.Errorf("field %q must be positive, got %g", f("factor"), r.factor)
	}
	if r.attentionFactor, has, err = num("attention_factor"); err != nil {
		return nil, err
	}
	if has && !(r.attentionFactor > 0) {
		return nil, fmt.Errorf("field %q must be positive, got %g", f("attention_factor"), r.attentionFactor)
	}

	// the pre-training context: Phi-3 keeps it at the top level, which wins
	r.OriginalMaxPositions = maxPos
	ofield := "max_position_embeddings"
	if x, ok, err := num("original_max_position_embeddings"); err != nil {
		return nil, err
	} else if ok {
		r.OriginalMaxPositions, ofield = int64(x), f("original_max_position_embeddings")
	}
	if x, ok := raw["original_max_position_embeddings"].(float64); ok && (r.Type == "llama3" || r.Type == "yarn" || r.Type == "longrope") {
		r.OriginalMaxPositions, ofield = int64(x), "original_max_position_embeddings"
	}

	switch r.Type {
	case "dynamic":
		if r.MaxPositions <= 0 {
			return nil, fmt.Errorf("field \"max_position_embeddings\" must be positive for rope type %q", r.Type)
		}
	case "llama3":
		for _, k := range []string{"low_freq_factor", "high_freq_factor"} {
			if _, ok := block[k]; !ok {
				return nil, fmt.Errorf("field %q: missing (rope type \"llama3\" needs it)", f(k))
			}
		}
		r.lowFreqFactor, _, err = num("low_freq_factor")
		if err != nil {
			return nil, err
		}
		r.highFreqFactor, _, err = num("high_freq_factor")
		if err != nil {
			return nil, err
		}
		if !(r.highFreqFactor > r.lowFreqFactor) || !(r.lowFreqFactor > 0) {
			return nil, fmt.Errorf("field %q (%g) must be greater than %q (%g), both positive", f("high_freq_factor"), r.highFreqFactor, f("low_freq_factor"), r.lowFreqFactor)
		}
	case "yarn":
		if r.betaFast, _, err = num("beta_fast"); err != nil {
			return nil, err
		}
		if r.betaSlow, _, err = num("beta_slow"); err != nil {
			return nil, err
		}
		if r.mscale, _, err = num("mscale"); err != nil {
			return nil, err
		}
		if r.mscaleAllDim, _, err = num("mscale_all_dim"); err != nil {
			return nil, err
		}
		if t, ok := block["truncate"]; ok && t != nil {
			b, ok := t.(bool)
			if !ok {
				return nil, fmt.Errorf("field %q: want a boolean, got %v", f("truncate"), t)
			}
			r.truncate = b
		}
	case "longrope":
		for _, k := range []string{"short_factor", "long_factor"} {
			list, ok := block[k].([]any)
			if !ok {
				return nil, fmt.Errorf("field %q: want a list of %d numbers, got %v", f(k), r.Dim/2, block[k])
			}
			if int64(len(list)) != r.Dim/2 {
				return nil, fmt.Errorf("field %q: has %d numbers, want %d (rotary dimensions / 2)", f(k), len(list), r.Dim/2)
			}
			vals := make([]float64, len(list))
			for i, e := range list {
				x, ok := e.(float64)
				if !ok || !(x > 0) || math.IsInf(x, 0) {
					return nil, fmt.Errorf("field %q: element %d must be a positive number, got %v", f(k), i, e)
				}
				vals[i] = x
			}
			if k == "short_factor" {
				r.shortFactor = vals
			} else {
				r.longFactor = vals
			}
		}
	}
	if (r.Type == "yarn" || r.Type == "longrope") && r.factor == 0 {
		if r.MaxPositions <= 0 {
			return nil, fmt.Errorf("field %q: missing, and no max_position_embeddings to derive it from", f("factor"))
		}
		r.factor = float64(r.MaxPositions) / float64(r.OriginalMaxPositions)
	}
	if (r.Type == "llama3" || r.Type == "yarn" || r.Type == "longrope") && r.OriginalMaxPositions <= 0 {
		return nil, fmt.Errorf("field %q must be positive, got %d", ofield, r.OriginalMaxPositions)
	}
	return r, nil
}

// DependsOnLength reports whether the frequencies change with the length
// of the sequence (dynamic NTK, longrope): then CosSin reads the largest
// position id of each call.
func (r *Rope) DependsOnLength() bool { return r.Type == "dynamic" || r.Type == "longrope" }

// Frequencies returns the inverse frequencies (Dim/2 values, rounded to
// float32 as transformers keeps them) and the attention scaling for a
// forward pass whose positions are below seqLen (max position id + 1).
// Only dynamic and longrope use seqLen:
//
//   - dynamic: transformers grows its frequencies when seqLen exceeds
//     max_position_embeddings and keeps them until a call falls below it
//     again; here each call uses its own seqLen (the same while sequences
//     only grow, as in generation).
//   - longrope: the long factors when seqLen > original_max_position_embeddings,
//     else the short ones.
func (r *Rope) Frequencies(seqLen int64) (invFreq []float32, attention float64) {
	d := r.Dim
	n := d / 2
	base := r.Theta
	if r.Type == "dynamic" {
		L := seqLen
		if L < r.MaxPositions {
			L = r.MaxPositions
		}
		base *= math.Pow(r.factor*float64(L)/float64(r.MaxPositions)-(r.factor-1), float64(d)/float64(d-2))
	}
	// base^(2i/d), the wavelength over 2π of pair i
	pos := make([]float64, n)
	for i := range pos {
		pos[i] = math.Pow(base, float64(2*i)/float64(d))
	}
	inv := make([]float64, n)
	attention = 1
	switch r.Type {
	case "default", "dynamic":
		for i := range inv {
			inv[i] = 1 / pos[i]
		}
	case "linear":
		for i := range inv {
			inv[i] = 1 / pos[i] / r.factor
		}
	case "llama3":
		old := float64(r.OriginalMaxPositions)
		lowWave, highWave := old/r.lowFreqFactor, old/r.highFreqFactor
		for i := range inv {
			f := 1 / pos[i]
			wave := 2 * math.Pi / f
			switch {
			case wave < highWave: // high frequencies: kept
				inv[i] = f
			case wave > lowWave: // low frequencies: divided by the factor
				inv[i] = f / r.factor
			default: // between: interpolated
				smooth := (old/wave - r.lowFreqFactor) / (r.highFreqFactor - r.lowFreqFactor)
				inv[i] = (1-smooth)*f/r.factor + smooth*f
			}
		}
	case "yarn":
		attention = r.attentionFactor
		if attention == 0 {
			mscale := func(scale, m float64) float64 {
				if scale <= 1 {
					return 1
				}
				return 0.1*m*math.Log(scale) + 1
			}
			if r.mscale != 0 && r.mscaleAllDim != 0 {
				attention = mscale(r.factor, r.mscale) / mscale(r.factor, r.mscaleAllDim)
			} else {
				attention = mscale(r.factor, 1)
			}
		}
		fast, slow := r.betaFast, r.betaSlow
		if fast == 0 {
			fast = 32
		}
		if slow == 0 {
			slow = 1
		}
		orig := float64(r.OriginalMaxPositions)
		corr := func(rot float64) float64 {
			return float64(d) * math.Log(orig/(rot*2*math.Pi)) / (2 * math.Log(r.Theta))
		}
		low, high := corr(fast), corr(slow)
		if r.truncate {
			low, high = math.Floor(low), math.Ceil(high)
		}
		low = math.Max(low, 0)
		high = math.Min(high, float64(d-1))
		if low == high {
			high += 0.001
		}
		for i := range inv {
			ramp := math.Min(math.Max((float64(i)-low)/(high-low), 0), 1)
			extra := 1 - ramp // weight of the unscaled frequency
			inv[i] = 1/(r.factor*pos[i])*(1-extra) + 1/pos[i]*extra
		}
	case "longrope":
		ext := r.shortFactor
		if seqLen > r.OriginalMaxPositions {
			ext = r.longFactor
		}
		for i := range inv {
			inv[i] = 1 / (ext[i] * pos[i])
		}
		attention = r.attentionFactor
		if attention == 0 {
			if r.factor <= 1 {
				attention = 1
			} else {
				attention = math.Sqrt(1 + math.Log(r.factor)/math.Log(float64(r.OriginalMaxPositions)))
			}
		}
	}
	invFreq = make([]float32, n)
	for i, v := range inv {
		invFreq[i] = float32(v)
	}
	return invFreq, attention
}

// CosSin returns cos and sin, float32 [B|1, 1, L, Dim], for position ids
// pos (int64 [B|1, L]), multiplied by the attention scaling as
// transformers does: emb = cat(pos·inv_freq, pos·inv_freq). Callers cast
// them to the activations' dtype. For dynamic and longrope the length is
// the largest position id + 1 (one read of pos).
func (r *Rope) CosSin(s *tensor.Scope, pos *tensor.T) (cos, sin *tensor.T) {
	var seqLen int64
	if r.DependsOnLength() {
		dims := make([]int64, pos.Dim())
		for i := range dims {
			dims[i] = int64(i)
		}
		seqLen = int64(s.Item(s.Amax(pos, false, dims...))) + 1
	}
	inv, att := r.Frequencies(seqLen)
	f := s.FromFloat32(inv, int64(len(inv)))
	p := s.Unsqueeze(s.To(pos, tensor.Float32), -1) // [B, L, 1]
	freqs := s.Mul(p, f)                            // [B, L, d/2]
	emb := s.Unsqueeze(s.Cat(-1, freqs, freqs), 1)  // [B, 1, L, d]
	cos, sin = s.Cos(emb), s.Sin(emb)
	if att != 1 {
		cos, sin = s.MulScalar(cos, att), s.MulScalar(sin, att)
	}
	return cos, sin
}

// ApplyRotary rotates the first cos.Size(-1) dimensions of x [B, heads,
// L, head_dim] (HF's half-split layout: x·cos + rotate_half(x)·sin with
// rotate_half(x) = [-x₂, x₁]) and passes the rest through (partial
// rotary, Phi-4-mini). nil stays nil.
func ApplyRotary(s *tensor.Scope, x, cos, sin *tensor.T) *tensor.T {
	if x == nil {
		return nil
	}
	d, rd := x.Size(-1), cos.Size(-1)
	rot, pass := x, (*tensor.T)(nil)
	if rd < d {
		rot, pass = s.Narrow(x, -1, 0, rd), s.Narrow(x, -1, rd, d-rd)
	}
	x1 := s.Narrow(rot, -1, 0, rd/2)
	x2 := s.Narrow(rot, -1, rd/2, rd-rd/2)
	y := s.Add(s.Mul(rot, cos), s.Mul(s.Cat(-1, s.Neg(x2), x1), sin))
	if pass != nil {
		y = s.Cat(-1, y, pass)
	}
	return y
}
