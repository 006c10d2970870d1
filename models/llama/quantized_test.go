package llama

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/nn/quant"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

func logitsOf(t *testing.T, m *Model, ids []int64, shape []int64) []float32 {
	t.Helper()
	s := tensor.NoGradScope()
	defer s.Close()
	out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...)})
	require.NoError(t, s.Err())
	return s.Float32s(out.Logits)
}

// LoadQuantized gives the model that loading in float32 and quantizing in
// memory gives, with every Linear but lm_head in 4 bits, the parameter
// count PEFT prints (4-bit weights at their logical size), less memory,
// and logits near the float ones.
func TestLoadQuantized(t *testing.T) {
	dir := filepath.Join(fixtures(t), "llama-tiny")
	ref := loadTiny(t)
	exp := openExpected(t, "llama-tiny__base")
	ids, shape := exp.i64(t, "input_ids")
	want := logitsOf(t, ref, ids, shape)
	_, total := nn.CountParams(ref)
	fp32Bytes := quant.WeightBytes(ref)

	cfg := quant.Config{UseDoubleQuant: true}
	q, err := LoadQuantized(dir, cfg)
	require.NoError(t, err)
	defer q.Free()
	layers := quant.Layers(q)
	require.Len(t, layers, 14) // 2 layers × (q, k, v, o, gate, up, down)
	require.Contains(t, layers, "model.layers.1.mlp.down_proj")
	require.IsType(t, &nn.Linear{}, q.LMHead)
	_, qtotal := nn.CountParams(q)
	require.Equal(t, total, qtotal)
	qBytes := quant.WeightBytes(q)
	got := logitsOf(t, q, ids, shape)
	diff := maxAbsDiff(got, want)
	t.Logf("llama-tiny NF4+DQ: %d of %d weight bytes (%.1f%%), logits max abs diff %.4f", qBytes, fp32Bytes, 100*float64(qBytes)/float64(fp32Bytes), diff)
	scale := maxAbsDiff(want, make([]float32, len(want)))
	t.Logf("float32 logits: max |logit| %.3f", scale)
	require.Less(t, diff, 0.25*scale) // NF4 leaves ~9% RMS error per weight
	require.Greater(t, diff, 0.0)

	// the same model through Quantize on the float one
	other, err := Load(dir)
	require.NoError(t, err)
	defer other.Free()
	require.NoError(t, quant.Quantize(other, cfg))
	require.Equal(t, got, logitsOf(t, other, ids, shape))
	require.Equal(t, qBytes, quant.WeightBytes(other))

	// lm_head in 4 bits too and bfloat16 embeddings: under 30% of float32
	small, err := LoadQuantized(dir, quant.Config{UseDoubleQuant: true, SkipModules: []string{}, EmbeddingDType: "bfloat16"})
	require.NoError(t, err)
	defer small.Free()
	require.IsType(t, &quant.Linear{}, small.LMHead)
	sBytes := quant.WeightBytes(small)
	sDiff := maxAbsDiff(logitsOf(t, small, ids, shape), want)
	t.Logf("llama-tiny NF4+DQ, lm_head 4-bit, bf16 embeddings: %d bytes (%.1f%%), logits max abs diff %.4f", sBytes, 100*float64(sBytes)/float64(fp32Bytes), sDiff)
	require.LessOrEqual(t, float64(sBytes), 0.30*float64(fp32Bytes))
	require.Less(t, sDiff, 0.3*scale)

	_, err = LoadQuantized(dir, quant.Config{QuantType: "int4"})
	require.ErrorContains(t, err, "int4")
}

// Modules chooses the layers to quantize; a checkpoint whose tensor does
// not fit the config, a tied lm_head asked for in 4 bits and a compute
// dtype libtorch lacks are errors naming the key, the layer or the dtype.
func TestLoadQuantizedSelectsAndErrors(t *testing.T) {
	src := filepath.Join(fixtures(t), "llama-tiny")
	q, err := LoadQuantized(src, quant.Config{Modules: []string{"mlp"}, SkipModules: []string{"down_proj"}})
	require.NoError(t, err)
	layers := quant.Layers(q)
	require.Len(t, layers, 4) // gate_proj and up_proj of 2 layers
	require.Contains(t, layers, "model.layers.1.mlp.up_proj")
	require.NotContains(t, layers, "model.layers.0.mlp.down_proj")
	require.NotContains(t, layers, "model.layers.0.self_attn.q_proj")
	q.Free()

	// a config that disagrees with the checkpoint about a quantized weight
	bad := t.TempDir()
	for _, name := range []string{"config.json", "model.safetensors"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		require.NoError(t, err)
		if name == "config.json" {
			require.Contains(t, string(b), `"intermediate_size": 128`)
			b = []byte(strings.Replace(string(b), `"intermediate_size": 128`, `"intermediate_size": 96`, 1))
		}
		require.NoError(t, os.WriteFile(filepath.Join(bad, name), b, 0o644))
	}
	_, err = LoadQuantized(bad, quant.Config{})
	require.ErrorContains(t, err, "model.layers.0.mlp.gate_proj.weight")
	require.ErrorContains(t, err, "shape")

	// tied embeddings: lm_head cannot be quantized on its own
	tied := t.TempDir()
	for _, name := range []string{"config.json", "model.safetensors"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		require.NoError(t, err)
		if name == "config.json" {
			b = []byte(strings.Replace(string(b), `"tie_word_embeddings": false`, `"tie_word_embeddings": true`, 1))
		}
		require.NoError(t, os.WriteFile(filepath.Join(tied, name), b, 0o644))
	}
	_, err = LoadQuantized(tied, quant.Config{SkipModules: []string{}})
	require.ErrorContains(t, err, "tie_word_embeddings")
	m, err := LoadQuantized(tied, quant.Config{}) // lm_head skipped by default: fine
	require.NoError(t, err)
	require.Len(t, quant.Layers(m), 14)
	m.Free()

	_, err = LoadQuantized(src, quant.Config{BlockSize: 100})
	require.ErrorContains(t, err, "block size 100")
}
