package gemma_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/gemma"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/tokenizer"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

// Gemma-3-1B's real config.json: 26 layers of which every sixth is global
// (5, 11, 17, 23), two rope bases, no soft-capping, tied head by default.
func TestGemma3_1BConfig(t *testing.T) {
	dir := refDir(t, "gemma-3-1b")
	cfg, err := gemma.LoadConfig(dir)
	require.NoError(t, err)
	var global []int
	for i, lt := range cfg.LayerTypes {
		if lt == gemma.FullAttention {
			global = append(global, i)
		}
	}
	require.Equal(t, []int{5, 11, 17, 23}, global)
	require.Len(t, cfg.LayerTypes, 26)
	require.Equal(t, 1e6, cfg.RopeTheta)
	require.Equal(t, 10000.0, cfg.RopeLocalBaseFreq)
	require.Equal(t, int64(256), cfg.HeadDim)
	require.Equal(t, int64(512), cfg.SlidingWindow)
	require.Nil(t, cfg.AttnLogitSoftcapping)
	require.Nil(t, cfg.FinalLogitSoftcapping)
	require.True(t, cfg.TieWordEmbeddings)
}

// Absent fields take transformers' defaults: Gemma 2 alternates local and
// global layers from layer 0 and soft-caps at 50 and 30; transformers 5's
// rope_parameters per layer type are read like the older fields.
func TestConfigDefaults(t *testing.T) {
	base := `"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 4, "num_attention_heads": 2, "vocab_size": 10, "head_dim": 4`
	c, err := gemma.ParseConfig("config.json", []byte(`{"model_type": "gemma2", `+base+`}`))
	require.NoError(t, err)
	require.Equal(t, []string{gemma.SlidingAttention, gemma.FullAttention, gemma.SlidingAttention, gemma.FullAttention}, c.LayerTypes)
	require.Equal(t, 50.0, *c.AttnLogitSoftcapping)
	require.Equal(t, 30.0, *c.FinalLogitSoftcapping)
	require.Equal(t, 256.0, c.QueryPreAttnScalar)
	require.Equal(t, int64(2), c.NumKeyValueHeads)

	c, err = gemma.ParseConfig("config.json", []byte(`{"model_type": "gemma3_text", `+base+`, "rope_parameters": {
		"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
		"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}}`))
	require.NoError(t, err)
	require.Equal(t, 1e6, c.RopeTheta)
	require.Equal(t, 1e4, c.RopeLocalBaseFreq)
	require.Equal(t, "linear", c.RopeScaling["rope_type"])
	require.Nil(t, c.AttnLogitSoftcapping)
	require.Equal(t, gemma.SlidingAttention, c.LayerTypes[3])
}

// Bad config.json fields are refused with the field named.
func TestConfigErrors(t *testing.T) {
	base := `"model_type": "gemma3_text", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 10, "head_dim": 4`
	for _, c := range []struct{ extra, want string }{
		{`, "rope_scaling": {"rope_type": "ntk-by-parts", "factor": 4}`, `"rope_scaling.rope_type"`},
		{`, "rope_scaling": {"rope_type": "linear", "factor": -1}`, `rope_scaling.factor`},
		{`, "layer_types": ["sliding_attention"]`, `"layer_types" has 1 entries`},
		{`, "layer_types": ["sliding_attention", "chunked"]`, `"layer_types"[1]`},
		{`, "hidden_activation": "swiglu"`, `"hidden_activation"`},
		{`, "num_key_value_heads": 3`, `"num_attention_heads" (2) is not a multiple`},
		{`, "head_dim": 3`, `"head_dim" must be even`},
		{`, "sliding_window_pattern": 0`, `"sliding_window_pattern"`},
		{`, "use_bidirectional_attention": true`, `"use_bidirectional_attention"`},
		{`, "final_logit_softcapping": -2`, `"final_logit_softcapping"`},
		{`, "query_pre_attn_scalar": -1`, `"query_pre_attn_scalar"`},
	} {
		_, err := gemma.ParseConfig("x/config.json", []byte(`{`+base+c.extra+`}`))
		require.Error(t, err, c.extra)
		require.Contains(t, err.Error(), c.want, c.extra)
		require.Contains(t, err.Error(), "x/config.json")
	}
	_, err := gemma.ParseConfig("x/config.json", []byte(`{"model_type": "gemma3_text"}`))
	require.ErrorContains(t, err, `missing field "hidden_size"`)
	_, err = gemma.ParseConfig("x/config.json", []byte(`{`+strings.Replace(base, "gemma3_text", "llama", 1)+`}`))
	require.ErrorContains(t, err, `"model_type"`)
}

// Save writes a folder transformers can load: the same tensors, bit for
// bit (no lm_head: tied), and a config.json that keeps what was read and
// loads back to the same logits.
func TestSaveLoadRoundTrip(t *testing.T) {
	for _, name := range tiny {
		t.Run(name, func(t *testing.T) {
			m := load(t, name)
			dir := t.TempDir()
			require.NoError(t, m.Save(dir))
			a, err := safetensors.OpenDir(refDir(t, name))
			require.NoError(t, err)
			defer a.Close()
			b, err := safetensors.OpenDir(dir)
			require.NoError(t, err)
			defer b.Close()
			require.ElementsMatch(t, a.Names(), b.Names())
			for _, k := range a.Names() {
				da, _ := a.Data(k)
				db, _ := b.Data(k)
				require.Equal(t, da, db, k)
			}
			m2, err := gemma.Load(dir)
			require.NoError(t, err)
			defer m2.Free()
			require.Equal(t, m.Config.LayerTypes, m2.Config.LayerTypes)
			require.Equal(t, m.Config.RopeScaling, m2.Config.RopeScaling)
			require.Equal(t, m.Config.FinalLogitSoftcapping, m2.Config.FinalLogitSoftcapping)
			require.Equal(t, name, map[string]string{"Gemma2ForCausalLM": "gemma2-tiny", "Gemma3ForCausalLM": "gemma3-tiny"}[m2.Config.Raw["architectures"].([]any)[0].(string)])
			g := openGolden(t, name)
			s := tensor.NoGradScope()
			defer s.Close()
			logits, _ := forward(t, s, m2, g)
			require.LessOrEqual(t, maxAbsDiff(logits, g.f32(t, "logits")), tol)
			_, err = os.Stat(filepath.Join(dir, "generation_config.json"))
			require.NoError(t, err)
		})
	}
}

// The load options every family takes: bfloat16 weights compute in
// bfloat16 (norms, softmax and rotary in float32) and stay close to the
// float32 logits; without mmap the weights are copies and the logits the
// same as mapped.
func TestLoadOptions(t *testing.T) {
	name := "gemma3-tiny"
	g := openGolden(t, name)
	want := g.f32(t, "logits")
	s := tensor.NoGradScope()
	defer s.Close()
	copied := load(t, name, models.WithoutMmap())
	got, _ := forward(t, s, copied, g)
	require.LessOrEqual(t, maxAbsDiff(got, want), tol)
	require.NoError(t, tensor.CanCompute(tensor.BFloat16, tensor.CPU))
	bf := load(t, name, models.WithDType("bfloat16"))
	require.Equal(t, tensor.BFloat16, bf.DType())
	got, _ = forward(t, s, bf, g)
	var scale float64
	for _, v := range want {
		scale = max(scale, float64(max(v, -v)))
	}
	require.Less(t, maxAbsDiff(got, want), 0.1*scale)
}

// LoRA with PEFT's default targets for the model type (q_proj, v_proj)
// trains: an AdamW step lowers the loss on its batch, only the adapter
// changes, and the fused loss head (Gemma 3: no final soft-capping) gives
// the plain head's loss; with Gemma 2's soft-capping the plain head runs.
func TestLoRATrainStep(t *testing.T) {
	for _, name := range tiny {
		t.Run(name, func(t *testing.T) {
			m := load(t, name)
			pm, err := lora.Wrap(m, &lora.Config{R: 4, LoraAlpha: 8})
			require.NoError(t, err)
			params := nn.TrainableParams(pm)
			require.Len(t, params, 2*2*m.NumLayers()) // A and B of q_proj and v_proj
			for _, p := range params {
				require.Regexp(t, `\.(q_proj|v_proj)\.lora_[AB]\.`, p.Name)
			}
			g := openGolden(t, name)
			ids, sh := g.i64(t, "input_ids")
			labels, _ := g.i64(t, "labels")
			mask, _ := g.i64(t, "attention_mask")
			opt := train.NewAdamW(params, train.AdamWConfig{LR: 1e-2})
			defer opt.Free()
			step := func(lossOnly bool) float64 {
				s := tensor.NewScope()
				defer s.Close()
				out := pm.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, sh...), AttentionMask: s.FromInt64(mask, sh...),
					Labels: s.FromInt64(labels, sh...), LossOnly: lossOnly})
				require.NoError(t, s.Err())
				if lossOnly { // the fused head returns no logits; soft-capping takes the plain head
					require.Equal(t, name == "gemma2-tiny", out.Logits != nil)
				}
				s.Backward(out.Loss)
				require.NoError(t, s.Err())
				return s.Item(out.Loss)
			}
			plain := step(false)
			require.NoError(t, opt.ZeroGrad())
			fused := step(true)
			require.InDelta(t, plain, fused, 1e-4)
			require.InDelta(t, float64(g.f32(t, "loss")[0]), plain, 1e-4) // B starts at zero
			require.NoError(t, opt.Step())
			require.NoError(t, opt.ZeroGrad())
			require.Less(t, step(true), plain)
		})
	}
}

// Gemma 3's tokenizer.json (scripts/fetch-tokenizers.sh) loads and encodes
// a chat turn: <bos>, the turn markers as single special tokens.
func TestGemma3TokenizerChat(t *testing.T) {
	dir := os.Getenv("GOPEFT_TOKENIZERS")
	if dir == "" {
		base := os.Getenv("GOPEFT_CACHE")
		if base == "" {
			if base = os.Getenv("XDG_CACHE_HOME"); base == "" {
				home, _ := os.UserHomeDir()
				base = filepath.Join(home, ".cache")
			}
			base = filepath.Join(base, "gopeft")
		}
		dir = filepath.Join(base, "tokenizers")
	}
	path := filepath.Join(dir, "gemma3", "tokenizer.json")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: run `make setup` (scripts/fetch-tokenizers.sh): %v", path, err)
	}
	tk, err := tokenizer.Load(path)
	require.NoError(t, err)
	ids, err := tk.EncodeIDs("<start_of_turn>user\nWhy is the sky blue?<end_of_turn>\n<start_of_turn>model\n", true)
	require.NoError(t, err)
	require.Equal(t, 2, ids[0])   // <bos>
	require.Equal(t, 105, ids[1]) // <start_of_turn>
	var turns []int
	for i, id := range ids {
		if id == 105 || id == 106 {
			turns = append(turns, i)
		}
	}
	require.Len(t, turns, 3)
	require.Equal(t, 106, ids[turns[1]]) // <end_of_turn>
	for _, id := range ids {
		require.Less(t, id, 262144)
	}
	text, ok := tk.IDToToken(ids[2])
	require.True(t, ok)
	require.Equal(t, "user", text)
}
