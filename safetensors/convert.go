package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"
)

// F16ToF32 decodes little-endian IEEE 754 half-precision values from src into
// dst, handling zeros, subnormals, infinities and NaNs exactly (every half
// value is representable in float32). It converts len(src)/2 values and
// panics if src has odd length or dst is shorter than that.
func F16ToF32(dst []float32, src []byte) {
	n := checkLen("F16ToF32", len(dst), len(src), 2)
	for i := 0; i < n; i++ {
		dst[i] = halfToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

func halfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch exp {
	case 0:
		// Zero or subnormal: mant * 2^-24, exact in float32.
		v := float32(mant) * (1.0 / (1 << 24))
		return math.Float32frombits(math.Float32bits(v) | sign)
	case 0x1f:
		// Infinity (mant == 0) or NaN (payload kept).
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// BF16ToF32 decodes little-endian bfloat16 values from src into dst. It
// converts len(src)/2 values and panics if src has odd length or dst is
// shorter than that.
func BF16ToF32(dst []float32, src []byte) {
	n := checkLen("BF16ToF32", len(dst), len(src), 2)
	for i := 0; i < n; i++ {
		dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
	}
}

func checkLen(fn string, dst, src, size int) int {
	if src%size != 0 {
		panic(fmt.Sprintf("safetensors.%s: %d source bytes is not a multiple of %d", fn, src, size))
	}
	n := src / size
	if dst < n {
		panic(fmt.Sprintf("safetensors.%s: destination holds %d values, source has %d", fn, dst, n))
	}
	return n
}

// Float32s decodes little-endian float32 values into a new slice. It panics
// if len(b) is not a multiple of 4.
func Float32s(b []byte) []float32 {
	out := make([]float32, checkLen("Float32s", math.MaxInt, len(b), 4))
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// Int64s decodes little-endian int64 values into a new slice. It panics if
// len(b) is not a multiple of 8.
func Int64s(b []byte) []int64 {
	out := make([]int64, checkLen("Int64s", math.MaxInt, len(b), 8))
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out
}

// Float32Bytes encodes v as little-endian bytes (for Tensor.Data).
func Float32Bytes(v []float32) []byte {
	out := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(x))
	}
	return out
}

// Int64Bytes encodes v as little-endian bytes (for Tensor.Data).
func Int64Bytes(v []int64) []byte {
	out := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(out[8*i:], uint64(x))
	}
	return out
}
