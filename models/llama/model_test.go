package llama

import (
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"testing"

	"github.com/gopeft/peft/internal/memstat"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

func TestSaveLoadRoundTripIsBitIdentical(t *testing.T) {
	src := filepath.Join(fixtures(t), "llama-tiny")
	m := loadTiny(t)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))

	// same key set, shapes and bytes as the fixture checkpoint
	a, err := safetensors.OpenDir(src)
	require.NoError(t, err)
	defer a.Close()
	b, err := safetensors.OpenDir(dir)
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, a.Names(), b.Names())
	for _, k := range a.Names() {
		ia, _, _ := a.Info(k)
		ib, _, _ := b.Info(k)
		require.Equal(t, ia.Shape, ib.Shape, k)
		da, _ := a.Data(k)
		db, _ := b.Data(k)
		require.Equal(t, da, db, k)
	}
	// and loads back to the same parameters
	m2, err := Load(dir)
	require.NoError(t, err)
	defer m2.Free()
	require.Equal(t, m.Config.HiddenSize, m2.Config.HiddenSize)
	cfg, err := LoadConfig(dir)
	require.NoError(t, err)
	require.Equal(t, "LlamaForCausalLM", cfg.Raw["architectures"].([]any)[0])
	require.Equal(t, 2.0, cfg.Raw["eos_token_id"]) // unknown-to-us fields survive
	_, err = os.Stat(filepath.Join(dir, "generation_config.json"))
	require.NoError(t, err)
}

func TestTiedEmbeddingsSaveWithoutLMHead(t *testing.T) {
	cfg := &Config{HiddenSize: 16, IntermediateSize: 32, NumHiddenLayers: 1, NumAttentionHeads: 2,
		VocabSize: 40, TieWordEmbeddings: true}
	m, err := New(cfg, 1)
	require.NoError(t, err)
	defer m.Free()
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	set, err := safetensors.OpenDir(dir)
	require.NoError(t, err)
	defer set.Close()
	_, _, hasHead := set.Info("lm_head.weight")
	require.False(t, hasHead)
	m2, err := Load(dir)
	require.NoError(t, err)
	defer m2.Free()
	require.Same(t, m2.Model.EmbedTokens.(*nn.Embedding).Weight, m2.LMHead.(*nn.Linear).Weight)
}

func copyDir(t *testing.T, src string) string {
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	require.NoError(t, err)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644))
	}
	return dst
}

func TestLoadErrorsNameFileKeyOrField(t *testing.T) {
	src := filepath.Join(fixtures(t), "llama-tiny")

	t.Run("missing config field", func(t *testing.T) {
		dir := copyDir(t, src)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"),
			[]byte(`{"model_type":"llama","hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":512}`), 0o644))
		_, err := Load(dir)
		require.ErrorContains(t, err, "config.json")
		require.ErrorContains(t, err, `"intermediate_size"`)
	})
	t.Run("inconsistent heads", func(t *testing.T) {
		dir := copyDir(t, src)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"),
			[]byte(`{"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":3,"vocab_size":512}`), 0o644))
		_, err := Load(dir)
		require.ErrorContains(t, err, `"num_key_value_heads"`)
	})
	t.Run("wrong shape", func(t *testing.T) {
		dir := copyDir(t, src)
		cfgPath := filepath.Join(dir, "config.json")
		data, _ := os.ReadFile(cfgPath)
		data = []byte(string(data[:len(data)-2]) + `, "intermediate_size": 96}`)
		// intermediate_size appears twice; the JSON decoder keeps the last one
		require.NoError(t, os.WriteFile(cfgPath, data, 0o644))
		_, err := Load(dir)
		require.ErrorContains(t, err, "model.safetensors")
		require.ErrorContains(t, err, "mlp.gate_proj.weight")
		require.ErrorContains(t, err, "shape")
	})
	t.Run("truncated safetensors", func(t *testing.T) {
		dir := copyDir(t, src)
		p := filepath.Join(dir, "model.safetensors")
		data, _ := os.ReadFile(p)
		require.NoError(t, os.WriteFile(p, data[:len(data)/2], 0o644))
		_, err := Load(dir)
		require.ErrorContains(t, err, "model.safetensors")
		require.ErrorContains(t, err, "truncated")
	})
	t.Run("unknown dtype", func(t *testing.T) {
		dir := copyDir(t, src)
		p := filepath.Join(dir, "model.safetensors")
		data, _ := os.ReadFile(p)
		s := string(data)
		i := indexOf(s, `"model.norm.weight":{"dtype":"F32"`)
		if i < 0 {
			i = indexOf(s, `"model.norm.weight": {"dtype": "F32"`)
		}
		require.GreaterOrEqual(t, i, 0, "fixture header layout")
		j := i + indexOf(s[i:], `F32`)
		data = []byte(s[:j] + "F8X" + s[j+3:])
		require.NoError(t, os.WriteFile(p, data, 0o644))
		_, err := Load(dir)
		require.ErrorContains(t, err, "model.safetensors")
		require.ErrorContains(t, err, "model.norm.weight")
		require.ErrorContains(t, err, "F8X")
	})
	t.Run("missing tensor", func(t *testing.T) {
		dir := t.TempDir()
		cfg := &Config{HiddenSize: 16, IntermediateSize: 32, NumHiddenLayers: 1, NumAttentionHeads: 2, VocabSize: 40}
		m, err := New(cfg, 1)
		require.NoError(t, err)
		defer m.Free()
		require.NoError(t, m.Save(dir))
		cfg2, _ := os.ReadFile(filepath.Join(dir, "config.json"))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"),
			[]byte(string(cfg2[:len(cfg2)-2])+`, "num_hidden_layers": 2}`), 0o644))
		_, err = Load(dir)
		// a whole layer missing is found from the headers, before the skeleton is built
		require.ErrorContains(t, err, `"num_hidden_layers" is 2, the checkpoint has 1 layers`)
	})
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// Feeding tokens one at a time through the KV cache gives the logits of the
// full forward pass.
func TestKVCacheMatchesFullForward(t *testing.T) {
	m := loadTiny(t)
	exp := openExpected(t, "llama-tiny__base")
	ids, _ := exp.i64(t, "input_ids")
	row := ids[:12] // the unpadded row
	want, _ := exp.f32(t, "logits")

	s := tensor.NoGradScope()
	defer s.Close()
	cache := &models.Cache{}
	defer cache.Free()
	// prefill 5 tokens, then decode one by one
	out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(row[:5], 1, 5), PastKeyValues: cache, UseCache: true})
	require.NoError(t, s.Err())
	got := s.Float32s(out.Logits)
	for p := 5; p < 12; p++ {
		out = m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(row[p:p+1], 1, 1), PastKeyValues: cache, UseCache: true})
		require.NoError(t, s.Err())
		got = append(got, s.Float32s(out.Logits)...)
		s.FreeAll()
	}
	require.EqualValues(t, 12, cache.Len())
	require.LessOrEqual(t, maxAbsDiff(got, want[:12*512]), 1e-4)
}

func TestPublicForward(t *testing.T) {
	m := loadTiny(t)
	exp := openExpected(t, "llama-tiny__base")
	ids, shape := exp.i64(t, "input_ids")
	mask, _ := exp.i64(t, "attention_mask")
	want, _ := exp.f32(t, "logits")
	s := tensor.NoGradScope()
	defer s.Close()
	in := s.FromInt64(ids, shape...)
	am := s.FromInt64(mask, shape...)
	mark := s.Mark()
	out, err := m.Forward(s, models.Inputs{InputIDs: in, AttentionMask: am})
	require.NoError(t, err)
	require.Equal(t, []int64{2, 12, 512}, out.Logits.Shape())
	require.Equal(t, mark+1, s.Mark(), "the scope keeps the logits only (intermediates freed)")
	require.True(t, s.Owns(out.Logits))
	require.LessOrEqual(t, maxAbsDiff(s.Float32s(out.Logits), want), 1e-4)
	require.NoError(t, s.Err())

	for _, bad := range []models.Inputs{{}, {InputIDs: s.FromInt64([]int64{1, 2, 3}, 3)}} {
		s2 := tensor.NoGradScope()
		_, err = m.Forward(s2, bad)
		s2.Close()
		require.ErrorContains(t, err, "input_ids")
	}
	_, err = m.Forward(nil, models.Inputs{InputIDs: in})
	require.ErrorContains(t, err, "nil scope")
}

// 200 forward+backward steps of a small model: RSS stays within 5%.
func TestRSSFlatOverTrainingSteps(t *testing.T) {
	cfg := &Config{HiddenSize: 64, IntermediateSize: 128, NumHiddenLayers: 2, NumAttentionHeads: 4,
		NumKeyValueHeads: 2, VocabSize: 256}
	m, err := New(cfg, 7)
	require.NoError(t, err)
	defer m.Free()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ids := make([]int64, 4*32)
	for i := range ids {
		ids[i] = int64((i * 37) % 256)
	}
	step := func() {
		s := tensor.NewScope()
		defer s.Close()
		x := s.FromInt64(ids, 4, 32)
		out := m.ForwardT(s, &models.Batch{InputIDs: x, Labels: x})
		s.Backward(out.Loss)
		require.NoError(t, s.Err())
		require.NoError(t, nn.ZeroGrad(m))
	}
	before, after, growth := memstat.Growth(20, 200, step)
	t.Logf("RSS %d KiB -> %d KiB after 200 steps (%.2f%%)", before>>10, after>>10, 100*growth)
	require.Less(t, growth, 0.05)
}

func TestParamNamesAreHFs(t *testing.T) {
	m := loadTiny(t)
	var names []string
	for _, np := range nn.NamedParams(m) {
		names = append(names, np.Name)
	}
	set, err := safetensors.OpenDir(filepath.Join(fixtures(t), "llama-tiny"))
	require.NoError(t, err)
	defer set.Close()
	sort.Strings(names)
	require.Equal(t, set.Names(), names)
	require.Contains(t, nn.Format(m), "(q_proj): Linear(in_features=64, out_features=64, bias=False)")
}

// Greedy decoding with the KV cache, left padding and generate()-style
// position ids (cumsum(mask)-1, padded slots 1) reproduces HF's
// llama-tiny__generate-base sequences and per-step scores.
func TestGreedyDecodeMatchesHFGenerate(t *testing.T) {
	m := loadTiny(t)
	exp := openExpected(t, "llama-tiny__generate-base")
	ids, shape := exp.i64(t, "input_ids")
	mask, _ := exp.i64(t, "attention_mask")
	wantSeq, _ := exp.i64(t, "sequences")
	wantScores, _ := exp.f32(t, "scores")
	B, L := int(shape[0]), int(shape[1])
	const steps = 8

	s := tensor.NoGradScope()
	defer s.Close()
	cache := &models.Cache{}
	defer cache.Free()
	pos := make([]int64, B*L)
	next := make([]int64, B)
	for b := 0; b < B; b++ {
		var c int64
		for i := 0; i < L; i++ {
			c += mask[b*L+i]
			pos[b*L+i] = c - 1
			if mask[b*L+i] == 0 {
				pos[b*L+i] = 1
			}
		}
		next[b] = c // next position
	}
	seqs := make([][]int64, B)
	for b := range seqs {
		seqs[b] = append([]int64{}, ids[b*L:(b+1)*L]...)
	}
	fullMask := append([]int64{}, mask...)
	width := L
	in, inPos, inLen := ids, pos, L
	var scores []float32
	for step := 0; step < steps; step++ {
		out := m.ForwardT(s, &models.Batch{
			InputIDs:      s.FromInt64(in, int64(B), int64(inLen)),
			AttentionMask: s.FromInt64(fullMask, int64(B), int64(width)),
			PositionIDs:   s.FromInt64(inPos, int64(B), int64(inLen)),
			PastKeyValues: cache, UseCache: true,
		})
		require.NoError(t, s.Err())
		last := s.Float32s(s.Select(out.Logits, 1, int64(inLen-1))) // [B, V]
		V := len(last) / B
		in, inPos, inLen = make([]int64, B), make([]int64, B), 1
		for b := 0; b < B; b++ {
			row := last[b*V : (b+1)*V]
			scores = append(scores, row...)
			in[b] = int64(argmaxF(row))
			inPos[b] = next[b]
			next[b]++
			seqs[b] = append(seqs[b], in[b])
		}
		// grow the mask by one column of ones
		grown := make([]int64, 0, B*(width+1))
		for b := 0; b < B; b++ {
			grown = append(grown, fullMask[b*width:(b+1)*width]...)
			grown = append(grown, 1)
		}
		fullMask, width = grown, width+1
		s.FreeAll()
	}
	var got []int64
	for _, r := range seqs {
		got = append(got, r...)
	}
	require.Equal(t, wantSeq, got)
	// scores are [B, steps, V] in the fixture; ours were collected step-major
	V := len(wantScores) / (B * steps)
	reordered := make([]float32, 0, len(scores))
	for b := 0; b < B; b++ {
		for st := 0; st < steps; st++ {
			reordered = append(reordered, scores[(st*B+b)*V:(st*B+b+1)*V]...)
		}
	}
	require.LessOrEqual(t, maxAbsDiff(reordered, wantScores), 1e-4)
}

func argmaxF(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

// LastLogitsOnly returns exactly the last position of the full logits, and
// is ignored when labels ask for the loss over every position.
func TestLastLogitsOnly(t *testing.T) {
	m := loadTiny(t)
	s := tensor.NoGradScope()
	defer s.Close()
	ids := s.FromInt64([]int64{1, 306, 450, 263, 123, 29, 5, 7}, 2, 4)
	full := m.ForwardT(s, &models.Batch{InputIDs: ids}).Logits
	last := m.ForwardT(s, &models.Batch{InputIDs: ids, LastLogitsOnly: true}).Logits
	require.NoError(t, s.Err())
	require.Equal(t, []int64{2, 1, full.Size(2)}, last.Shape())
	// (the head on 2 rows takes Linear's few-rows kernel: last-bit rounding)
	d := s.Item(s.Amax(s.Abs(s.Sub(s.Narrow(full, 1, 3, 1), last)), false, 0, 1, 2))
	require.Less(t, d, 1e-6)
	withLoss := m.ForwardT(s, &models.Batch{InputIDs: ids, Labels: ids, LastLogitsOnly: true})
	require.NoError(t, s.Err())
	require.Equal(t, full.Shape(), withLoss.Logits.Shape())
}
