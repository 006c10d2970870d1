package generate

import (
	"errors"
	"math"
	"math/rand/v2"
)

// Sampling draws from the processed distribution in Go, with a generator
// owned by the call: a seed reproduces a call's tokens whatever else runs
// in the process (libtorch's global generator would be shared by every
// goroutine).

// Each prompt has its own generators (the per-row sampling state): with
// seed s, sample j of the prompt (its j-th row of NumReturnSequences; beam
// sampling uses j = 0) draws from PCG(s, (s ^ 0x9e3779b97f4a7c15) + j). A
// row's generator depends on its prompt's seed and j only, never on the
// other rows, so batching does not change what a row samples.
func newRNG(seed *int64, j int) *rand.Rand {
	s := rand.Uint64()
	if seed != nil {
		s = uint64(*seed)
	}
	return rand.New(rand.NewPCG(s, (s^0x9e3779b97f4a7c15)+uint64(j)))
}

// promptSeed is prompt i's seed: Input.Seeds[i] when given, else the
// config's Seed (nil: random).
func (in Input) promptSeed(i int, cfgSeed *int64) *int64 {
	if in.Seeds != nil {
		v := in.Seeds[i]
		return &v
	}
	return cfgSeed
}

var errNoMass = errors.New("the processed distribution has no probability mass (every token filtered out, or NaN scores)")

// sampleOne draws an index with probability probs[i] / sum(probs). Tokens
// of probability 0 (filtered to -inf) are never drawn.
func sampleOne(rng *rand.Rand, probs []float32) (int, error) {
	var total float64
	for _, p := range probs {
		if p < 0 || math.IsNaN(float64(p)) || math.IsInf(float64(p), 0) {
			return 0, errNoMass
		}
		total += float64(p)
	}
	if total <= 0 {
		return 0, errNoMass
	}
	u := rng.Float64() * total
	last := -1
	var cum float64
	for i, p := range probs {
		if p == 0 {
			continue
		}
		cum += float64(p)
		last = i
		if u < cum {
			return i, nil
		}
	}
	return last, nil // rounding: u landed on the total
}

// sampleMany draws n distinct indices, each in proportion to the
// probability left among the indices not drawn yet (torch.multinomial
// without replacement). It fails when fewer than n indices have mass.
func sampleMany(rng *rand.Rand, probs []float32, n int) ([]int, error) {
	w := make([]float32, len(probs))
	copy(w, probs)
	nonzero := 0
	for _, p := range w {
		if p > 0 {
			nonzero++
		}
	}
	if nonzero < n {
		return nil, errors.New("fewer tokens with probability mass than beam candidates to sample (raise top_k / top_p)")
	}
	out := make([]int, 0, n)
	for len(out) < n {
		i, err := sampleOne(rng, w)
		if err != nil {
			return nil, err
		}
		out = append(out, i)
		w[i] = 0
	}
	return out, nil
}
