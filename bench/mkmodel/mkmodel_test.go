package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/gemma"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
)

func TestBF16Rounding(t *testing.T) {
	for _, c := range []struct {
		in   uint32
		want uint16
	}{
		{0x3f800000, 0x3f80}, // 1
		{0x3f808000, 0x3f80}, // halfway, even stays
		{0x3f818000, 0x3f82}, // halfway, odd rounds up
		{0x3f808001, 0x3f81}, // above halfway
		{0xbf807fff, 0xbf80}, // below halfway, negative
		{0x7f7fffff, 0x7f80}, // the largest float32 rounds to +inf, as torch does
		{0x7fc00001, 0x7fc0}, // NaN stays NaN
		{0x7f800001, 0x7fc0},
	} {
		require.Equal(t, c.want, BF16(math.Float32frombits(c.in)), "%#08x", c.in)
	}
}

// tiny writes a tiny-qwen2 folder (tied embeddings, q/k/v biases) sharded
// at shardSize bytes.
func tiny(t *testing.T, name string, shardSize int64, seed uint64, workers int) (string, Result) {
	t.Helper()
	dir := t.TempDir()
	cfg, err := LookupConfig(name)
	require.NoError(t, err)
	res, err := Write(dir, cfg, Options{Seed: seed, ShardSize: shardSize, Workers: workers})
	require.NoError(t, err)
	return dir, res
}

func TestShardedQwen2(t *testing.T) {
	const shardSize = 40_000
	dir, res := tiny(t, "tiny-qwen2", shardSize, 7, 3)
	require.Greater(t, len(res.Files), 2)

	// the index: total_size, a weight_map entry for every tensor, shard names
	idx, err := safetensors.ReadIndex(filepath.Join(dir, safetensors.IndexFileName))
	require.NoError(t, err)
	require.EqualValues(t, res.Bytes, idx.Metadata["total_size"])
	require.Equal(t, res.Files, idx.Shards())
	pat := regexp.MustCompile(`^model-\d{5}-of-\d{5}\.safetensors$`)
	for i, f := range res.Files {
		require.Regexp(t, pat, f)
		require.Equal(t, fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(res.Files)), f)
	}
	_, err = os.Stat(filepath.Join(dir, safetensors.SingleFileName))
	require.True(t, os.IsNotExist(err))

	cfg, _ := LookupConfig("tiny-qwen2")
	specs, err := Specs(cfg)
	require.NoError(t, err)
	require.Len(t, idx.WeightMap, len(specs))
	require.NotContains(t, idx.WeightMap, "lm_head.weight") // tied: stored once
	require.Contains(t, idx.WeightMap, "model.layers.1.self_attn.q_proj.bias")
	require.Contains(t, idx.WeightMap, "model.layers.1.self_attn.v_proj.bias")
	require.NotContains(t, idx.WeightMap, "model.layers.1.self_attn.o_proj.bias")

	set, err := safetensors.OpenDir(dir) // checks every weight_map entry against its shard
	require.NoError(t, err)
	defer set.Close()
	var total int64
	for _, f := range set.Files() {
		names := f.Names()
		var size int64
		for _, n := range names {
			info, _ := f.Info(n)
			require.Equal(t, safetensors.BF16, info.DType, n)
			size += info.End - info.Begin
		}
		require.True(t, size <= shardSize || len(names) == 1, "%s: %d bytes in %d tensors", f.Path(), size, len(names))
		require.Equal(t, map[string]string{"format": "pt"}, f.Metadata())
		// the data lies in name order, as the Python library writes it
		sorted := append([]string(nil), names...)
		sort.Strings(sorted)
		require.Equal(t, sorted, names)
		total += size
	}
	require.Equal(t, res.Bytes, total)

	// shards follow state-dict order: the first holds the embeddings, the
	// last the final norm
	require.Equal(t, res.Files[0], idx.WeightMap["model.embed_tokens.weight"])
	require.Equal(t, res.Files[len(res.Files)-1], idx.WeightMap["model.norm.weight"])

	// values: norms exactly 1, weights N(0, 0.02)
	norm, err := set.Data("model.layers.0.input_layernorm.weight")
	require.NoError(t, err)
	for i := 0; i < len(norm); i += 2 {
		require.Equal(t, uint16(0x3f80), binary.LittleEndian.Uint16(norm[i:]))
	}
	emb, err := set.Data("model.embed_tokens.weight")
	require.NoError(t, err)
	v := make([]float32, len(emb)/2)
	safetensors.BF16ToF32(v, emb)
	var sum, sq float64
	for _, x := range v {
		sum += float64(x)
		sq += float64(x) * float64(x)
	}
	mean, std := sum/float64(len(v)), math.Sqrt(sq/float64(len(v)))
	require.InDelta(t, 0, mean, 0.001)
	require.InDelta(t, 0.02, std, 0.0005)

	// the library loads it: shapes, tie, biases
	m, err := llama.Load(dir)
	require.NoError(t, err)
	defer m.Free()
	require.Equal(t, "qwen2", m.Config.ModelType)
	require.True(t, m.Config.TieWordEmbeddings)
	params := map[string][]int64{}
	for _, np := range nn.NamedParams(m) {
		params[np.Name] = np.Param.Shape()
	}
	for _, s := range specs {
		require.Equal(t, s.shape, params[s.name], s.name)
	}
	require.Equal(t, []int64{512, 64}, m.LMHead.(*nn.Linear).Weight.Shape())
}

func TestSingleFileLlama(t *testing.T) {
	dir, res := tiny(t, "tiny-llama", 0, 1, 2)
	require.Equal(t, []string{"model.safetensors"}, res.Files)
	_, err := os.Stat(filepath.Join(dir, safetensors.IndexFileName))
	require.True(t, os.IsNotExist(err))
	set, err := safetensors.OpenDir(dir)
	require.NoError(t, err)
	defer set.Close()
	info, _, ok := set.Info("lm_head.weight")
	require.True(t, ok)
	require.Equal(t, []int64{512, 64}, info.Shape)
	_, _, ok = set.Info("model.layers.0.self_attn.q_proj.bias")
	require.False(t, ok)

	m, err := llama.Load(dir)
	require.NoError(t, err)
	m.Free()
	cfg, err := llama.LoadConfig(dir)
	require.NoError(t, err)
	require.Equal(t, "bfloat16", cfg.Raw["torch_dtype"])
}

// A Gemma 3 folder: zero norms (Gemma scales by 1 + weight), q_norm and
// k_norm, four norms per layer, tied by default; models/gemma loads it.
func TestGemma3(t *testing.T) {
	dir, _ := tiny(t, "tiny-gemma3", 0, 1, 2)
	set, err := safetensors.OpenDir(dir)
	require.NoError(t, err)
	defer set.Close()
	_, _, ok := set.Info("lm_head.weight")
	require.False(t, ok)
	for _, k := range []string{"model.layers.5.self_attn.q_norm.weight", "model.layers.0.post_feedforward_layernorm.weight", "model.norm.weight"} {
		b, err := set.Data(k)
		require.NoError(t, err, k)
		require.Equal(t, make([]byte, len(b)), b, k)
	}
	m, err := gemma.Load(dir)
	require.NoError(t, err)
	defer m.Free()
	require.Equal(t, gemma.FullAttention, m.Config.LayerTypes[5])
	require.Same(t, m.Model.EmbedTokens.(*gemma.ScaledEmbedding).Weight, m.LMHead.(*nn.Linear).Weight)
}

// The files depend on the seed only, not on the number of goroutines, and
// a second run into the same folder replaces the first (a sharded run
// after a single-file one leaves no model.safetensors behind).
func TestDeterministic(t *testing.T) {
	a, res := tiny(t, "tiny-qwen2", 40_000, 3, 1)
	b, _ := tiny(t, "tiny-qwen2", 40_000, 3, 4)
	c, _ := tiny(t, "tiny-qwen2", 40_000, 4, 2)
	files, _ := filepath.Glob(filepath.Join(a, "*"))
	require.NotEmpty(t, files)
	for _, f := range files {
		x, err := os.ReadFile(f)
		require.NoError(t, err)
		y, err := os.ReadFile(filepath.Join(b, filepath.Base(f)))
		require.NoError(t, err)
		require.True(t, bytes.Equal(x, y), filepath.Base(f))
	}
	x, _ := os.ReadFile(filepath.Join(a, res.Files[0]))
	z, _ := os.ReadFile(filepath.Join(c, res.Files[0]))
	require.NotEmpty(t, x)
	require.False(t, bytes.Equal(x, z), "another seed, the same bytes")

	cfg, _ := LookupConfig("tiny-qwen2")
	_, err := Write(a, cfg, Options{Seed: 3})
	require.NoError(t, err)
	left, _ := filepath.Glob(filepath.Join(a, "model*"))
	require.Equal(t, []string{filepath.Join(a, "model.safetensors")}, left)
}

func TestF32(t *testing.T) {
	dir := t.TempDir()
	cfg, _ := LookupConfig("tiny-llama")
	_, err := Write(dir, cfg, Options{DType: "f32"})
	require.NoError(t, err)
	set, err := safetensors.OpenDir(dir)
	require.NoError(t, err)
	defer set.Close()
	info, _, _ := set.Info("model.norm.weight")
	require.Equal(t, safetensors.F32, info.DType)
	c, err := llama.LoadConfig(dir)
	require.NoError(t, err)
	require.Equal(t, "float32", c.Raw["torch_dtype"])
}

// The real Qwen3-0.6B and Phi-4-mini configs (testdata/configs), cut to
// one decoder layer and a 512-token vocabulary so that the test stays
// small, give folders that load (bf16), generate and take a LoRA step
// (Llama-3.2-1B's layers are plain LLaMA ones; its config is checked in
// models/llama's TestRealConfigs). The full-size folders are
// BENCHMARKS.md's.
func TestRealConfigsLoadGenerateTrain(t *testing.T) {
	for _, c := range []struct{ file, target string }{
		{"qwen3-0.6b.json", "q_proj"}, {"phi-4-mini.json", "qkv_proj"},
	} {
		t.Run(c.file, func(t *testing.T) {
			cfg, err := LookupConfig(filepath.Join("..", "..", "testdata", "configs", c.file))
			require.NoError(t, err)
			cfg["num_hidden_layers"], cfg["vocab_size"] = 1, 512
			for _, k := range []string{"bos_token_id", "eos_token_id", "pad_token_id"} {
				delete(cfg, k)
			}
			dir := t.TempDir()
			_, err = Write(dir, cfg, Options{Seed: 1, Workers: 2})
			require.NoError(t, err)
			m, err := llama.Load(dir)
			require.NoError(t, err)
			require.Equal(t, tensor.BFloat16, m.DType())
			out, err := generate.Generate(context.Background(), m, generate.Input{InputIDs: [][]int64{{5, 6, 7, 8}}},
				generate.GenerationConfig{MaxNewTokens: 3})
			require.NoError(t, err)
			require.Len(t, out.Sequences[0], 7)

			pm, err := lora.Wrap(m, &lora.Config{R: 4, LoraAlpha: 8, TargetModules: lora.List(c.target)})
			require.NoError(t, err)
			defer nn.FreeParams(pm)
			s := tensor.NewScope()
			defer s.Close()
			ids := []int64{1, 2, 3, 4, 5, 6, 7, 8}
			res := pm.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, 1, 8), Labels: s.FromInt64(ids, 1, 8)})
			require.NoError(t, s.Err())
			s.Backward(res.Loss)
			require.NoError(t, s.Err())
			for _, np := range pm.TrainableParams() {
				if strings.Contains(np.Name, "lora_B") {
					g := s.Grad(np.Param.T())
					require.NotNil(t, g, np.Name)
					require.Greater(t, s.Item(s.Sum(s.Abs(g), false)), 0.0, np.Name)
				}
			}
		})
	}
}
