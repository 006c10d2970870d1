package torchrand

import (
	"math/rand"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/safetensors"
	"github.com/stretchr/testify/require"
)

func open(t *testing.T, rel string) *safetensors.Set {
	set, err := safetensors.OpenFiles(filepath.Join("..", "..", "testdata", "hf", rel))
	require.NoError(t, err)
	t.Cleanup(func() { set.Close() })
	return set
}

// The first draws of MT19937 seeded with 5489 (the reference
// implementation's default seed) are the published ones.
func TestMT19937Reference(t *testing.T) {
	g := New(5489)
	require.Equal(t, []uint32{3499211612, 581869302, 3890346734, 3586334585, 545404204},
		[]uint32{g.Random(), g.Random(), g.Random(), g.Random(), g.Random()})
	// the 10000th output of std::mt19937 default-seeded (C++11 [rand.predef])
	g = New(5489)
	var v uint32
	for i := 0; i < 10000; i++ {
		v = g.Random()
	}
	require.Equal(t, uint32(4123659995), v)
}

// PEFT 0.13.2's FourierFT indices for llama-tiny (random_loc_seed 777):
// torch.randperm(out·in, generator=manual_seed(777))[:64], as rows and
// columns.
func TestRandpermMatchesTorch(t *testing.T) {
	set := open(t, "expected/llama-tiny__fourierft.safetensors")
	for _, c := range []struct {
		key     string
		out, in int64
	}{{"model.layers.0.self_attn.q_proj", 64, 64}, {"model.layers.1.self_attn.v_proj", 32, 64}} {
		b, err := set.Data("fourierft_indices." + c.key)
		require.NoError(t, err)
		want := safetensors.Int64s(b)
		perm := New(777).Randperm(c.out * c.in)[:64]
		got := make([]int64, 128)
		for i, p := range perm {
			got[i], got[64+i] = p/c.in, p%c.in
		}
		require.Equal(t, want, got, c.key)
	}
}

// PEFT 0.13.2's VeRA projections for llama-tiny (projection_prng_key
// 24301, r 16, largest layer [64, 64]): vera_A = kaiming((16, 64)), then
// vera_B = kaiming((64, 16)) from the same generator — bit for bit.
func TestKaimingMatchesTorch(t *testing.T) {
	set := open(t, "adapters/llama-tiny/vera/adapter_model.safetensors")
	g := New(24301)
	a := g.KaimingUniform(16, 64)
	b := g.KaimingUniform(64, 16)
	for key, got := range map[string][]float32{"base_model.vera_A": a, "base_model.vera_B": b} {
		data, err := set.Data(key)
		require.NoError(t, err)
		require.Equal(t, safetensors.Float32s(data), got, key)
	}
}

// A permutation holds every index once, and the same seed gives the same
// draws.
func TestRandpermIsAPermutation(t *testing.T) {
	for _, n := range []int64{1, 2, 7, 1000} {
		p := New(uint64(rand.Int63())).Randperm(n)
		seen := make([]bool, n)
		for _, v := range p {
			require.False(t, seen[v])
			seen[v] = true
		}
	}
	require.Equal(t, New(3).Randperm(50), New(3).Randperm(50))
	require.NotEqual(t, New(3).Randperm(50), New(4).Randperm(50))
}
