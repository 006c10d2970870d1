// Package torchrand reproduces, in pure Go, the draws of PyTorch's CPU
// random generator (torch.Generator(device="cpu"): a 32-bit Mersenne
// Twister, ATen's at::mt19937) for the few operations PEFT uses with a
// seeded generator of its own: torch.randperm (FourierFT's spectrum
// locations) and Tensor.uniform_ on float32 (VeRA's kaiming-uniform
// projections). The sequences equal libtorch 1.13's bit for bit (the tests
// check them against tensors PEFT saved), with no libtorch global state
// touched: a Generator is a value of its own, seeded like
// torch.Generator().manual_seed(seed).
//
// A Generator is not safe for concurrent use.
package torchrand

import "math"

const (
	stateN   = 624
	stateM   = 397
	matrixA  = 0x9908b0df
	upperBit = 0x80000000
	lowerBit = 0x7fffffff
)

// Generator is torch's CPU generator (CPUGeneratorImpl) after
// manual_seed: MT19937 seeded with the low 32 bits of the seed.
type Generator struct {
	state [stateN]uint32
	left  int
	next  int
}

// New returns a generator in the state of
// torch.Generator(device="cpu").manual_seed(seed).
func New(seed uint64) *Generator {
	g := &Generator{}
	g.state[0] = uint32(seed & 0xffffffff)
	for j := 1; j < stateN; j++ {
		p := g.state[j-1]
		g.state[j] = 1812433253*(p^(p>>30)) + uint32(j)
	}
	g.left, g.next = 1, 0
	return g
}

func mix(u, v uint32) uint32 { return (u & upperBit) | (v & lowerBit) }

func twist(u, v uint32) uint32 {
	t := mix(u, v) >> 1
	if v&1 != 0 {
		t ^= matrixA
	}
	return t
}

func (g *Generator) nextState() {
	s := &g.state
	g.left, g.next = stateN, 0
	i := 0
	for ; i < stateN-stateM; i++ {
		s[i] = s[i+stateM] ^ twist(s[i], s[i+1])
	}
	for ; i < stateN-1; i++ {
		s[i] = s[i+stateM-stateN] ^ twist(s[i], s[i+1])
	}
	s[stateN-1] = s[stateM-1] ^ twist(s[stateN-1], s[0])
}

// Random is the generator's next 32-bit draw (CPUGeneratorImpl::random).
func (g *Generator) Random() uint32 {
	g.left--
	if g.left == 0 {
		g.nextState()
	}
	y := g.state[g.next]
	g.next++
	y ^= y >> 11
	y ^= (y << 7) & 0x9d2c5680
	y ^= (y << 15) & 0xefc60000
	y ^= y >> 18
	return y
}

// Randperm is torch.randperm(n, generator=g) on the CPU (int64): the
// identity permutation shuffled by swapping position i with
// i + random() % (n-i), for i = 0 … n-2 (libtorch 1.13's randperm_cpu).
func (g *Generator) Randperm(n int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i)
	}
	for i := int64(0); i < n-1; i++ {
		z := int64(uint64(g.Random()) % uint64(n-i))
		out[i], out[i+z] = out[i+z], out[i]
	}
	return out
}

// UniformFloat32 fills a new float32 slice of n values as
// torch.empty(n).uniform_(from, to, generator=g) does on the CPU: each
// value is (random() & (2²⁴-1)) · 2⁻²⁴ scaled to [from, to) in float32
// arithmetic with a fused multiply-add, the bounds first rounded to
// float32.
func (g *Generator) UniformFloat32(n int, from, to float64) []float32 {
	f, t := float32(from), float32(to)
	out := make([]float32, n)
	for i := range out {
		x := float32(g.Random()&(1<<24-1)) * (1.0 / (1 << 24))
		// libtorch's build contracts x·(to−from)+from into one fused
		// multiply-add: the product is not rounded on its own
		out[i] = float32(math.FMA(float64(x), float64(t-f), float64(f)))
	}
	return out
}

// KaimingUniform draws a [rows, cols] float32 matrix (row-major) as PEFT's
// VeRA _kaiming_init does: uniform in ±√3·√2/√fan_in with fan_in = cols
// (torch's fan_in of a 2-D tensor is its second dimension).
func (g *Generator) KaimingUniform(rows, cols int) []float32 {
	std := math.Sqrt(2) / math.Sqrt(float64(cols))
	bound := math.Sqrt(3.0) * std
	return g.UniformFloat32(rows*cols, -bound, bound)
}
