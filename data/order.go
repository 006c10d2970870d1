package data

// Order is the sample order of one epoch: a permutation of 0…n−1 drawn
// from seed and epoch (the identity when shuffle is false). It depends on
// nothing else, so a run resumed at (epoch, position) sees the same order
// as the uninterrupted one.
func Order(n int, seed int64, epoch int, shuffle bool) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	if !shuffle {
		return idx
	}
	r := splitmix{state: uint64(seed)*0x9E3779B97F4A7C15 ^ uint64(epoch+1)*0xD1B54A32D192ED03}
	for i := n - 1; i > 0; i-- { // Fisher–Yates
		j := int(r.below(uint64(i + 1)))
		idx[i], idx[j] = idx[j], idx[i]
	}
	return idx
}

// Shuffle reorders the dataset's samples with Order(seed, 0).
func (d *Dataset) Shuffle(seed int64) {
	order := Order(len(d.Samples), seed, 0, true)
	out := make([]Sample, len(order))
	for i, j := range order {
		out[i] = d.Samples[j]
	}
	d.Samples = out
}

// splitmix is SplitMix64: a small generator whose sequence is fixed by
// this code (not by a Go release).
type splitmix struct{ state uint64 }

func (r *splitmix) next() uint64 {
	r.state += 0x9E3779B97F4A7C15
	z := r.state
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// below returns a uniform value in [0, n) (rejection sampling).
func (r *splitmix) below(n uint64) uint64 {
	limit := -n % n // 2^64 mod n
	for {
		v := r.next()
		if v >= limit {
			return v % n
		}
	}
}
