// Package factor is LoKr's shape arithmetic (PEFT's lokr.layer
// factorization() and the w1/w2 choice of LoKrLayer.update_layer), in a
// package of its own so that both the lokr method and peft's memory
// estimate use the same code. It imports nothing of the library; its
// functions are pure and safe for concurrent use.
package factor

// Factorization splits dim into m·n as PEFT's factorization(dim, factor)
// does: with factor > 0 dividing dim, (factor, dim/factor) as they are;
// otherwise the divisor pair closest to √dim whose smaller member does not
// exceed factor (-1: no limit), smaller first.
//
//	Factorization(256, -1) = (16, 16)
//	Factorization(128, -1) = (8, 16)
//	Factorization(127, -1) = (1, 127)
//	Factorization(128, 4)  = (4, 32)
func Factorization(dim, factor int) (int, int) {
	if factor > 0 && dim%factor == 0 {
		return factor, dim / factor
	}
	if factor == -1 {
		factor = dim
	}
	m, n := 1, dim
	length := m + n
	for m < n {
		newM := m + 1
		for dim%newM != 0 {
			newM++
		}
		newN := dim / newM
		if newM+newN > length || newM > factor {
			break
		}
		m, n = newM, newN
	}
	if m > n {
		m, n = n, m
	}
	return m, n
}

// LoKr is the parameter layout of one LoKr adapter on a Linear layer of
// in → out features: ΔW [out, in] = kron(W1, W2) with W1 [OutL, InM] and
// W2 [OutK, InN] (out = OutL·OutK, in = InM·InN). A factor is stored
// whole (FullW1/FullW2: lokr_w1, lokr_w2) or as a rank-R product
// (lokr_w1_a [OutL, R] · lokr_w1_b [R, InM]; lokr_w2_a [OutK, R] ·
// lokr_w2_b [R, InN]). A plain value, safe for concurrent use.
type LoKr struct {
	OutL, OutK, InM, InN int
	R                    int
	FullW1, FullW2       bool
}

// LoKrLayout is PEFT's update_layer for nn.Linear: both widths split by
// Factorization(·, factor); W1 is low-rank only with decompose_both and
// r < max(OutL, InM)/2, W2 low-rank when r < max(OutK, InN)/2.
func LoKrLayout(in, out, r, factor int, decomposeBoth bool) LoKr {
	inM, inN := Factorization(in, factor)
	outL, outK := Factorization(out, factor)
	return LoKr{
		OutL: outL, OutK: outK, InM: inM, InN: inN, R: r,
		FullW1: !(decomposeBoth && 2*r < max(outL, inM)),
		FullW2: !(2*r < max(outK, inN)),
	}
}

// Params is the adapter's parameter count.
func (l LoKr) Params() int64 {
	var n int64
	if l.FullW1 {
		n += int64(l.OutL * l.InM)
	} else {
		n += int64(l.R * (l.OutL + l.InM))
	}
	if l.FullW2 {
		n += int64(l.OutK * l.InN)
	} else {
		n += int64(l.R * (l.OutK + l.InN))
	}
	return n
}
