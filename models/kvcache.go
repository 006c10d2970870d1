package models

import "github.com/gopeft/peft/tensor"

// cacheHeadroom is how many positions beyond the prompt a decoding cache
// allocates at first; it doubles when full.
const cacheHeadroom = 128

// free releases the layer's tensors and empties it.
func (kv *KV) free() {
	kv.K.Free()
	kv.V.Free()
	kv.kBuf.Free()
	kv.vBuf.Free()
	*kv = KV{}
}

// Set replaces the layer's keys and values with k and v (which the cache
// now owns), freeing the old ones: beam search reorders a cache this way.
func (kv *KV) Set(k, v *tensor.T) {
	kv.free()
	kv.K, kv.V = k, v
}

// AttendKV returns the keys and values one attention layer attends over,
// [B, kv_heads, T, head_dim]: the prefix (prefix tuning; never rotated),
// then the cached past, then this call's k and v. When cache is not nil it
// takes the result for the next call. past and cache are the same entry
// when a decoding step extends its cache; past without cache is read only.
//
// Without autograd, the cache grows in place: it keeps a buffer with room
// for cacheHeadroom more positions (doubling when full) and each step
// copies only the new positions into it, where concatenation would copy
// the whole past every step (at batch 4 after a 256-token prompt, ~40 MB
// per step on the benchmark model). The returned tensors are views of
// that buffer, owned by the cache.
func AttendKV(s *tensor.Scope, prefix, past, cache *KV, k, v *tensor.T) (*tensor.T, *tensor.T) {
	if prefix != nil {
		pk, pv := prefix.K, prefix.V
		if b := k.Size(0); pk.Size(0) != b {
			pk, pv = s.Expand(pk, b, -1, -1, -1), s.Expand(pv, b, -1, -1, -1)
		}
		k, v = s.Cat(2, pk, k), s.Cat(2, pv, v)
	}
	if s.Err() != nil {
		return nil, nil
	}
	if cache != nil && (past == nil || past == cache) && !k.RequiresGrad() && !v.RequiresGrad() {
		return cache.appendInPlace(s, k, v)
	}
	if past != nil && past.K != nil {
		k, v = s.Cat(2, past.K, k), s.Cat(2, past.V, v)
	}
	if cache != nil && s.Err() == nil {
		cache.Set(s.Keep(s.Contiguous(k)), s.Keep(s.Contiguous(v)))
		return cache.K, cache.V
	}
	return k, v
}

// appendInPlace writes k and v after the cached positions, growing the
// buffers when they are full (or missing, or of another batch/head shape).
func (kv *KV) appendInPlace(s *tensor.Scope, k, v *tensor.T) (*tensor.T, *tensor.T) {
	var n int64
	if kv.K != nil {
		n = kv.K.Size(2)
	}
	l := k.Size(2)
	if !kv.fits(k, n+l) {
		grown := n + l + cacheHeadroom
		if kv.kBuf != nil {
			grown = max(grown, 2*kv.kBuf.Size(2))
		}
		kb, vb := s.Keep(grownBuffer(s, k, grown)), s.Keep(grownBuffer(s, v, grown))
		if n > 0 {
			s.Copy_(s.Narrow(kb, 2, 0, n), kv.K)
			s.Copy_(s.Narrow(vb, 2, 0, n), kv.V)
		}
		kv.free()
		kv.kBuf, kv.vBuf = kb, vb
	}
	s.Copy_(s.Narrow(kv.kBuf, 2, n, l), k)
	s.Copy_(s.Narrow(kv.vBuf, 2, n, l), v)
	if s.Err() != nil {
		return nil, nil
	}
	kv.K.Free()
	kv.V.Free()
	kv.K, kv.V = s.Keep(s.Narrow(kv.kBuf, 2, 0, n+l)), s.Keep(s.Narrow(kv.vBuf, 2, 0, n+l))
	return kv.K, kv.V
}

// fits reports whether the buffers hold t positions of tensors shaped like k.
func (kv *KV) fits(k *tensor.T, t int64) bool {
	if kv.kBuf == nil || kv.kBuf.Size(2) < t || kv.kBuf.DType() != k.DType() {
		return false
	}
	for _, d := range []int{0, 1, 3} {
		if kv.kBuf.Size(d) != k.Size(d) {
			return false
		}
	}
	return true
}

func grownBuffer(s *tensor.Scope, like *tensor.T, positions int64) *tensor.T {
	sh := like.Shape()
	sh[2] = positions
	return s.Empty(like.DType(), sh...)
}
