package llama

import (
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// The llama3 rope rule against the real transformers forward
// (testdata/hf/README-llama3-rope.md): default positions, generation
// positions (cumsum(mask) - 1) and far positions (300..), where the
// scaling matters.
func TestLlama3RopeMatchesHF(t *testing.T) {
	m, err := Load(filepath.Join(fixtures(t), "llama3-rope-tiny"))
	require.NoError(t, err)
	defer m.Free()
	require.Equal(t, "llama3", m.rope.Type)
	plain := loadTiny(t) // the same weights without rope_scaling

	base := openExpected(t, "llama3-rope-tiny__base")
	far := openExpected(t, "llama3-rope-tiny__far")
	ids, shape := base.i64(t, "input_ids")
	mask, _ := base.i64(t, "attention_mask")
	genPos := make([]int64, len(mask)) // cumsum(mask) - 1, clamped at 0
	L := int(shape[1])
	for b := 0; b < int(shape[0]); b++ {
		var c int64
		for j := 0; j < L; j++ {
			c += mask[b*L+j]
			genPos[b*L+j] = max(c-1, 0)
		}
	}
	farIDs, farShape := far.i64(t, "input_ids")
	farMask, _ := far.i64(t, "attention_mask")
	farPos, _ := far.i64(t, "position_ids")
	require.Equal(t, int64(300), farPos[0])

	cases := []struct {
		name      string
		ids, mask []int64
		pos       []int64
		shape     []int64
		want      []float32
	}{
		{"logits", ids, mask, nil, shape, must(base.f32(t, "logits"))},
		{"logits_generation_positions", ids, mask, genPos, shape, must(base.f32(t, "logits_generation_positions"))},
		{"far", farIDs, farMask, farPos, farShape, must(far.f32(t, "logits"))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := tensor.NoGradScope()
			defer s.Close()
			b := &models.Batch{InputIDs: s.FromInt64(c.ids, c.shape...), AttentionMask: s.FromInt64(c.mask, c.shape...)}
			if c.pos != nil {
				b.PositionIDs = s.FromInt64(c.pos, c.shape...)
			}
			got := s.Float32s(m.ForwardT(s, b).Logits)
			require.NoError(t, s.Err())
			d := maxAbsDiff(got, c.want)
			t.Logf("max abs diff vs HF: %.6g (%d values)", d, len(got))
			require.LessOrEqual(t, d, 1e-4)
			if c.name == "far" { // the comparison can fail: unscaled rope is far off there
				unscaled := s.Float32s(plain.ForwardT(s, b).Logits)
				require.NoError(t, s.Err())
				require.Greater(t, maxAbsDiff(unscaled, c.want), 1e-3)
			}
		})
	}
}

func must(v []float32, _ []int64) []float32 { return v }

// transformers 5 writes the rope block as rope_parameters, with rope_theta
// inside; bad blocks fail naming the file and the field.
func TestRopeParametersConfig(t *testing.T) {
	cfg, err := ParseConfig("config.json", []byte(`{"model_type": "qwen3", "hidden_size": 32, "intermediate_size": 64,
		"num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 16, "head_dim": 16,
		"rope_parameters": {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0, "original_max_position_embeddings": 32}}`))
	require.NoError(t, err)
	require.Equal(t, 1e6, cfg.RopeTheta)
	r, err := cfg.Rope()
	require.NoError(t, err)
	require.Equal(t, "yarn", r.Type)
	_, att := r.Frequencies(1)
	require.InDelta(t, 1.1386294361119891, att, 1e-12) // 0.1 ln 4 + 1

	_, err = ParseConfig("dir/config.json", []byte(`{"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
		"num_attention_heads": 4, "vocab_size": 16, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}`))
	require.ErrorContains(t, err, "dir/config.json")
	require.ErrorContains(t, err, `field "rope_scaling.low_freq_factor": missing`)
}
