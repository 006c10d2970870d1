// Package testutil holds what the library's tests share: reading the golden
// fixtures in testdata/, comparing logits, and checks that hold across CPUs.
// It is internal: tests only.
package testutil

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// BF16Stats compares logits computed in bf16 with a reference's bf16 logits
// over the positions mask keeps (mask nil keeps all; vocab = len/len(mask)).
type BF16Stats struct {
	Max     float64 // max |got - want|
	Equal   float64 // fraction of logits bit-equal to want
	AllBF16 bool    // every got value is a bf16 value (low 16 bits zero)
}

// CompareBF16 measures got against want.
func CompareBF16(got, want []float32, mask []int64) BF16Stats {
	st := BF16Stats{AllBF16: true}
	if mask == nil {
		mask = []int64{1}
	}
	vocab := len(got) / len(mask)
	var n, eq int
	for p, m := range mask {
		if m == 0 {
			continue
		}
		for j := p * vocab; j < (p+1)*vocab; j++ {
			n++
			if got[j] == want[j] {
				eq++
			}
			st.Max = math.Max(st.Max, math.Abs(float64(got[j])-float64(want[j])))
			if math.Float32bits(got[j])&0xffff != 0 {
				st.AllBF16 = false
			}
		}
	}
	if n > 0 {
		st.Equal = float64(eq) / float64(n)
	}
	return st
}

// RequireBF16Like asserts that got was computed in bf16 the way the
// reference computed want, on whatever kernels this CPU has. gap is the
// reference's own max |bf16 - fp32| (the fixtures' max_abs_bf16_vs_fp32).
//
// libtorch's bf16 matmuls round differently with and without AVX-512
// (oneDNN's bf16 path vs the float-accumulating fallback), so a CPU other
// than the one the fixture was made on lands a bf16 step away on some
// logits: on the fixture's CPU the port matches bit for bit, on an AVX2-only
// CPU about a third of the logits are bit-equal. A port computing in float32
// matches none and its values are not bf16 values, so the test holds it
// apart on every CPU: every value is a bf16 value, at least minEqual of them
// equal the reference's bits, and none is further than 1.5 gaps away.
func RequireBF16Like(t testing.TB, got, want []float32, mask []int64, gap float64, msgAndArgs ...any) {
	t.Helper()
	const minEqual = 0.25
	st := CompareBF16(got, want, mask)
	t.Logf("bf16 vs reference bf16: max |diff| %.5f (reference's bf16-vs-fp32 gap %.5f), %.1f%% bit-equal", st.Max, gap, 100*st.Equal)
	require.True(t, st.AllBF16, append([]any{"logits are not bf16 values: computed in float32?"}, msgAndArgs...)...)
	require.GreaterOrEqual(t, st.Equal, minEqual, msgAndArgs...)
	require.LessOrEqual(t, st.Max, 1.5*gap, msgAndArgs...)
}

// MaxAbsDiff is max |a-b| over the positions mask keeps (nil keeps all;
// each position holds len(a)/len(mask) values).
func MaxAbsDiff(a, b []float32, mask []int64) float64 {
	return CompareBF16(a, b, mask).Max
}
