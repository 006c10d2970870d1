package lora

import (
	"fmt"
	"math"
	"sort"
	"sync"

	"github.com/gopeft/peft/tensor"
)

// LoftQ (init_lora_weights="loftq"): PEFT 0.10's loftq_init with its own
// NFQuantizer (peft/utils/loftq_utils.py; the path PEFT takes without
// bitsandbytes' CUDA 4-bit kernels, and always for 2 and 8 bits). It
// alternates num_iter times between quantising what the adapter does not
// carry and a rank-r SVD of what the quantisation lost:
//
//	res = W
//	repeat loftq_iter times:
//	    Q   = dequant(quant(res))               NF, blocks of 64, absmax per block
//	    U, S, Vᴴ = svd(W − Q)
//	    B = U[:, :r]·√S[:r],  A = √S[:r]·Vᴴ[:r]
//	    res = W − B·A
//
// The layer's base weight becomes Q (quantised-dequantised, in the weight's
// dtype) and the adapter starts at A, B. As in PEFT, A and B are not divided
// by the scaling α/r, so the initial model is Q + (α/r)·B·A.
//
// The quantiser differs from nn/quant's NF4 (bitsandbytes' reference) in
// ways that change the codes chosen, so it is reproduced here: a block is
// divided by its absmax (nn/quant multiplies by the reciprocal and clamps),
// the nearest table value is torch.argmin's (the first on ties), there is
// no double quantisation, a weight whose size is not a multiple of 64 is
// refused, and a block of zeros gives NaN codes as in PEFT (argmin of NaNs
// is 0: the block dequantises to −0). Its 4-bit table is bitsandbytes' NF4
// table (TestNFTableIsNF4 checks it against quant.Codebook).

// loftqBlockSize is NFQuantizer's block_size.
const loftqBlockSize = 64

// nfOffset is create_normal_map's offset.
const nfOffset = 0.9677083

var nfTables sync.Map // bits → []float32

// nfTable is NFQuantizer.create_normal_map(num_bits=bits) (asymmetric: one
// more positive value than negative, and an exact 0), computed as PEFT
// does: torch.linspace in float32, the normal quantile in float64, the
// values rounded to float32, sorted and divided by the largest.
func nfTable(bits int) []float32 {
	if t, ok := nfTables.Load(bits); ok {
		return t.([]float32)
	}
	n := 1 << bits
	var v []float32
	for _, p := range linspace32(nfOffset, 0.5, n/2+1)[:n/2] {
		v = append(v, float32(normalQuantile(float64(p))))
	}
	v = append(v, 0)
	for _, p := range linspace32(nfOffset, 0.5, n/2)[:n/2-1] {
		v = append(v, float32(-normalQuantile(float64(p))))
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	mx := v[len(v)-1]
	for i := range v {
		v[i] /= mx
	}
	nfTables.Store(bits, v)
	return v
}

// normalQuantile is the standard normal's inverse CDF (scipy's norm.ppf).
func normalQuantile(p float64) float64 { return math.Sqrt2 * math.Erfinv(2*p-1) }

// linspace32 is torch.linspace(start, end, steps) in float32 as libtorch
// 1.13's CPU kernel computes it with its AVX2 kernels (the x86 build the
// fixtures come from): element i is start + step·i below steps/2 and
// end − step·(steps−1−i) above, except that runs of 16 elements are filled
// 8 at a time as base + k·step, base being computed with a fused
// multiply-add. Tables of up to 16 entries (2 and 4 bits) only take the
// element-wise path; the 8-bit table depends on these details (linspace32
// and the three tables are checked bit for bit against torch and scipy in
// TestNFTablesMatchTorch), and a PEFT on torch's AVX-512 kernels would
// compute a few 8-bit values differently.
func linspace32(start, end float32, steps int) []float32 {
	step := (end - start) / float32(steps-1)
	out := make([]float32, steps)
	half := steps / 2
	const vec = 8 // Vectorized<float>::size() with AVX2
	i := 0
	for ; i+2*vec <= steps; i += 2 * vec {
		for j := i; j < i+2*vec; j += vec {
			var base float32
			if j < half {
				base = float32(math.FMA(float64(step), float64(j), float64(start)))
			} else {
				base = float32(math.FMA(-float64(step), float64(steps-j-1), float64(end)))
			}
			for k := 0; k < vec; k++ {
				out[j+k] = base + float32(float32(k)*step)
			}
		}
	}
	for ; i < steps; i++ {
		if i < half {
			out[i] = start + float32(step*float32(i))
		} else {
			out[i] = end - float32(step*float32(steps-i-1))
		}
	}
	return out
}

// nfQuantDequant is NFQuantizer.quantize_block followed by
// dequantize_block on w (float32, 2-D): the weight as the quantiser
// stores it.
func nfQuantDequant(s *tensor.Scope, w *tensor.T, bits int) (*tensor.T, error) {
	sh := w.Shape()
	if len(sh) != 2 {
		return nil, fmt.Errorf("LoftQ quantises 2-D weights, got shape %v", sh)
	}
	n := sh[0] * sh[1]
	if n%loftqBlockSize != 0 {
		return nil, fmt.Errorf("LoftQ: weight of shape %v has %d elements, not a multiple of the block size %d", sh, n, loftqBlockSize)
	}
	code := nfTable(bits)
	blocks := s.Reshape(s.Contiguous(w), -1, loftqBlockSize)
	mx := s.Unsqueeze(s.Amax(s.Abs(blocks), false, 1), 1) // [L, 1]
	scaled := s.Unsqueeze(s.Div(blocks, mx), 2)           // [L, B, 1]
	table := s.FromFloat32(code, int64(len(code)))        // on the scope's device: the weight's
	row := s.View(table, 1, -1)
	// nearest value in chunks of blocks: the [chunk, B, 2^bits] distances stay small
	L := n / loftqBlockSize
	chunk := max(int64(1<<22)/(loftqBlockSize*int64(len(code))), 1)
	var parts []*tensor.T
	for start := int64(0); start < L && s.Err() == nil; start += chunk {
		m := min(chunk, L-start)
		mark := s.Mark()
		idx := s.Argmin(s.Abs(s.Sub(s.Narrow(scaled, 0, start, m), row)), 2, false) // [m, B]
		s.FreeSince(mark, idx)
		parts = append(parts, idx)
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("LoftQ: weight of shape %v is empty", sh)
	}
	idx := parts[0]
	if len(parts) > 1 {
		idx = s.Cat(0, parts...)
	}
	deq := s.Mul(s.View(s.IndexSelect(table, 0, s.Reshape(idx, -1)), L, loftqBlockSize), mx)
	return s.View(deq, sh[0], sh[1]), s.Err()
}

// loftqInit runs PEFT's loftq_init on w (float32 [out, in]): the
// quantised-dequantised weight and A [r, in], B [out, r].
func loftqInit(s *tensor.Scope, w *tensor.T, bits, iters, r int) (q, a, b *tensor.T, err error) {
	switch bits {
	case 2, 4, 8:
	default:
		return nil, nil, nil, fmt.Errorf("LoftQ: loftq_bits must be 2, 4 or 8, got %d", bits)
	}
	if iters <= 0 {
		return nil, nil, nil, fmt.Errorf("LoftQ: loftq_iter must be positive, got %d", iters)
	}
	res := w
	for i := 0; i < iters; i++ {
		if q, err = nfQuantDequant(s, res, bits); err != nil {
			return nil, nil, nil, err
		}
		u, sv, vh := s.SVD(s.Sub(w, q))
		root := s.Sqrt(s.Narrow(sv, 0, 0, int64(r)))
		b = s.Mul(s.Narrow(u, 1, 0, int64(r)), s.Unsqueeze(root, 0))
		a = s.Mul(s.Unsqueeze(root, 1), s.Narrow(vh, 0, 0, int64(r)))
		res = s.Sub(w, s.Matmul(b, a))
		if err := s.Err(); err != nil {
			return nil, nil, nil, err
		}
	}
	return q, s.Contiguous(a), s.Contiguous(b), s.Err()
}
