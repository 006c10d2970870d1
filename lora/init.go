package lora

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/gopeft/peft/nn/quant"
	"github.com/gopeft/peft/tensor"
)

// Data-dependent initialisations of init_lora_weights (PEFT's
// LoraLayer.pissa_init, olora_init and loftq_init). Each sets A and B from
// the base weight W and rewrites the base weight, so that the wrapped
// model starts where the plain one was (PiSSA, OLoRA) or as close to it as
// a quantised base allows (LoftQ):
//
//   - "pissa": W = U·S·Vᴴ (full SVD); A = √(S_r/s)·Vᴴ_r, B = U_r·√(S_r/s)
//     with s the scaling α/r; the base becomes W − s·B·A (the residual).
//   - "pissa_niter_N": the same from torch.svd_lowrank(W, r, niter=N) (a
//     randomized SVD: N subspace iterations from a Gaussian start drawn
//     from libtorch's generator), for large weights.
//   - "olora": W = Q·R (QR); B = Q[:, :r], A = R[:r]; the base becomes
//     W − s·B·A.
//   - "loftq": see loftq.go; the base becomes its quantised-dequantised
//     self.
//
// Like PEFT, loading such an adapter (peft.Load) runs the init again on the
// untouched base and then replaces A and B by the saved ones: the base the
// adapter was trained on is rebuilt from the base weights, which is why a
// PiSSA/OLoRA/LoftQ adapter's "adapters disabled" model is the residual (or
// quantised) model, not the original one. SaveConverted turns a trained
// PiSSA/OLoRA adapter into a plain LoRA for the original base.
//
// Where PEFT is silent or broken the library chooses: a GPT-2 Conv1D
// weight is transposed to [out, in] first for every init (current PEFT
// does this for PiSSA; OLoRA and LoftQ on Conv1D make mis-shaped adapters
// in PEFT 0.13), r larger than min(out, in) and 4-bit bases are refused.

// Init kinds parsed from init_lora_weights.
const (
	initKaiming  = "true"
	initGaussian = "gaussian"
	initFalse    = "false"
	initPiSSA    = "pissa"
	initOLoRA    = "olora"
	initLoftQ    = "loftq"
)

// parseInit reads init_lora_weights: its kind and, for pissa_niter_N, N
// (−1 for the full SVD).
func parseInit(v string) (kind string, niter int, err error) {
	switch {
	case v == "", v == "true":
		return initKaiming, -1, nil
	case v == "false":
		return initFalse, -1, nil
	case v == "gaussian":
		return initGaussian, -1, nil
	case v == "pissa":
		return initPiSSA, -1, nil
	case strings.ToLower(v) == "olora":
		return initOLoRA, -1, nil
	case v == "loftq":
		return initLoftQ, -1, nil
	case strings.HasPrefix(v, "pissa_niter_"):
		n, err := strconv.Atoi(strings.TrimPrefix(v, "pissa_niter_"))
		if err != nil || n < 0 {
			return "", 0, fmt.Errorf("field \"init_lora_weights\": %q: want \"pissa_niter_<N>\" with N a non-negative integer", v)
		}
		return initPiSSA, n, nil
	}
	return "", 0, fmt.Errorf("field \"init_lora_weights\": %s is not supported (true, false, \"gaussian\", \"pissa\", \"pissa_niter_<N>\", \"olora\", \"loftq\")", v)
}

// dataInit runs a data-dependent init for adapter name: it returns A
// [r, in] and B [out, r] (float32) and replaces the base weight. It is
// called by addAdapter before the adapter's parameters are set.
func (l *Linear) dataInit(s *tensor.Scope, kind string, niter, r int, scaling float64, cfg *Config) (a, b *tensor.T, err error) {
	if _, ok := l.Base.(*quant.Linear); ok {
		return nil, nil, fmt.Errorf("init_lora_weights %q on a 4-bit base layer is not supported: initialise on the float model, then quantise the residual", cfg.InitLoraWeights.Value)
	}
	wp, t, err := baseWeight(l.Base)
	if err != nil {
		return nil, nil, err
	}
	dt := wp.T().DType()
	prev := s.SetDevice(wp.T().Device())
	defer s.SetDevice(prev)
	w := s.To(wp.T(), tensor.Float32)
	if t {
		w = s.Transpose(w, 0, 1)
	}
	w = s.Contiguous(w)
	sh := w.Shape()
	if k := min(sh[0], sh[1]); int64(r) > k {
		return nil, nil, fmt.Errorf("init_lora_weights %q needs r <= min(out, in) = %d, got r = %d", cfg.InitLoraWeights.Value, k, r)
	}
	var nw *tensor.T
	switch kind {
	case initPiSSA:
		var u, sv, v *tensor.T // W ≈ u·diag(sv)·vᵀ, u [out, r], v [in, r]
		if niter < 0 {
			uu, ss, vh := s.SVD(w)
			u, sv, v = s.Narrow(uu, 1, 0, int64(r)), s.Narrow(ss, 0, 0, int64(r)), s.Transpose(s.Narrow(vh, 0, 0, int64(r)), 0, 1)
		} else {
			u, sv, v = svdLowRank(s, w, int64(r), niter)
		}
		root := s.Sqrt(s.DivScalar(sv, scaling))
		a = s.Contiguous(s.Mul(s.Unsqueeze(root, 1), s.Transpose(v, 0, 1)))
		b = s.Contiguous(s.Mul(u, s.Unsqueeze(root, 0)))
		nw = s.Sub(w, s.Matmul(s.MulScalar(b, scaling), a))
	case initOLoRA:
		q, rr := s.QR(w)
		b = s.Contiguous(s.Narrow(q, 1, 0, int64(r)))
		a = s.Contiguous(s.Narrow(rr, 0, 0, int64(r)))
		nw = s.Sub(w, s.Matmul(s.MulScalar(b, scaling), a))
	case initLoftQ:
		bits, iters := cfg.LoftQConfig.bitsIter()
		if nw, a, b, err = loftqInit(s, w, bits, iters, r); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, fmt.Errorf("init %q is not a data-dependent init", kind)
	}
	if t {
		nw = s.Transpose(nw, 0, 1)
	}
	nw = s.Contiguous(castTo(s, nw, dt))
	if err := s.Err(); err != nil {
		return nil, nil, err
	}
	wp.Set(s.Keep(nw))
	return a, b, nil
}

// svdLowRank is torch.svd_lowrank(a, q, niter) for a 2-D float tensor a
// [m, n] as torch 1.13 computes it (Halko et al. 2009, algorithm 5.1):
// a ≈ u·diag(sv)·vᵀ with u [m, q], sv [q], v [n, q]. The Gaussian start
// comes from libtorch's generator (peft.SetSeed makes it repeatable).
func svdLowRank(s *tensor.Scope, a *tensor.T, q int64, niter int) (u, sv, v *tensor.T) {
	sh := a.Shape()
	m, n := sh[0], sh[1]
	at := s.Transpose(a, 0, 1)
	if m < n || n > q { // the basis of aᵀ: B stays [m, q]
		qm := approximateBasis(s, at, a, q, niter) // [n, q]
		uu, ss, vh := s.SVD(s.Matmul(a, qm))
		return uu, ss, s.Matmul(qm, s.Transpose(vh, 0, 1))
	}
	qm := approximateBasis(s, a, at, q, niter) // [m, q]
	uu, ss, vh := s.SVD(s.Transpose(s.Matmul(at, qm), 0, 1))
	return s.Matmul(qm, uu), ss, s.Transpose(vh, 0, 1)
}

// approximateBasis is torch's get_approximate_basis: q orthonormal columns
// Q with Q·Qᵀ·a ≈ a, from a Gaussian start and niter subspace iterations
// (aT is aᵀ).
func approximateBasis(s *tensor.Scope, a, aT *tensor.T, q int64, niter int) *tensor.T {
	basis := func(x *tensor.T) *tensor.T { qq, _ := s.QR(x); return qq }
	qm := basis(s.Matmul(a, s.Randn(tensor.Float32, a.Shape()[1], q)))
	for i := 0; i < niter; i++ {
		qm = basis(s.Matmul(aT, qm))
		qm = basis(s.Matmul(a, qm))
	}
	return qm
}
