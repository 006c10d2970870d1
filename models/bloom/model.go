// Package bloom is the BLOOM family of decoders (bigscience/bloom-*,
// Langboat/bloom-*-zh, BLOOMZ) loaded from HF checkpoint folders, with HF's
// module names (transformer.h.0.self_attention.query_key_value, …) so that
// state dicts and PEFT adapters map 1:1 onto the files.
//
// The forward pass follows transformers 4.39's BloomForCausalLM: a
// LayerNorm right after the word embeddings; a fused query_key_value
// projection whose output rows are laid out per head as
// [head][q, k, v][head_dim]; ALiBi attention biases (one slope per head
// times the key's position, positions counted over the attention mask as
// (cumsum(mask)-1)·mask, so left padding does not shift them); padded and
// future keys masked by replacing their scores with float32's minimum
// (masked_fill, so a fully masked padded query attends uniformly); fp32
// softmax; tanh-approximated GELU; biases on every Linear and LayerNorm; and
// lm_head tied to the word embeddings. Labels give HF's shifted
// cross-entropy loss ignoring -100. BLOOM has no position embeddings:
// Batch.PositionIDs is ignored.
//
// Key/value caches and prefix key/values use the library's layout
// [B, heads, T, head_dim] (HF's BLOOM cache stores keys transposed; the
// values are the same).
package bloom

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"

	"github.com/gopeft/peft/internal/fsutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// Model is BloomForCausalLM.
type Model struct {
	Transformer *Transformer `nn:"transformer"`
	LMHead      nn.Layer     `nn:"lm_head"`

	Config *Config
	// Path is the folder the model was loaded from (HF's name_or_path).
	Path string
	// GenerationConfig is generation_config.json as read (nil if absent).
	GenerationConfig []byte

	slopes   *tensor.T // ALiBi slope per head [1, H, 1, 1], float32
	training bool
	weights  models.Weights
	device   tensor.Device
}

// Transformer is BloomModel.
type Transformer struct {
	WordEmbeddings          nn.Layer       `nn:"word_embeddings"`
	WordEmbeddingsLayernorm nn.Layer       `nn:"word_embeddings_layernorm"`
	H                       *nn.ModuleList `nn:"h"`
	LnF                     nn.Layer       `nn:"ln_f"`
}

// Block is BloomBlock.
type Block struct {
	InputLayernorm         nn.Layer   `nn:"input_layernorm"`
	SelfAttention          *Attention `nn:"self_attention"`
	PostAttentionLayernorm nn.Layer   `nn:"post_attention_layernorm"`
	MLP                    *MLP       `nn:"mlp"`
}

// Attention is BloomAttention.
type Attention struct {
	QueryKeyValue nn.Layer `nn:"query_key_value"`
	Dense         nn.Layer `nn:"dense"`
}

// MLP is BloomMLP.
type MLP struct {
	DenseHTo4H nn.Layer `nn:"dense_h_to_4h"`
	Dense4HToH nn.Layer `nn:"dense_4h_to_h"`
}

// TypeName prints HF's class names in the module tree.
func (*Model) TypeName() string       { return "BloomForCausalLM" }
func (*Transformer) TypeName() string { return "BloomModel" }
func (*Block) TypeName() string       { return "BloomBlock" }
func (*Attention) TypeName() string   { return "BloomAttention" }
func (*MLP) TypeName() string         { return "BloomMLP" }
func (*Model) ExtraRepr() string      { return "" }

// SetTraining switches dropout (hidden_dropout, attention_dropout) on or
// off; nn.SetTraining calls it.
func (m *Model) SetTraining(on bool) { m.training = on }

// New makes a model with HF's random initialisation (normal(0,
// initializer_range) weights, zero biases, unit LayerNorms), seeded.
func New(cfg *Config, seed int64) (*Model, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bloom: %w", err)
	}
	s := tensor.NoGradScope()
	defer s.Close()
	tensor.ManualSeed(seed)
	std := cfg.InitializerRange
	m := build(s, cfg, func(in, out int64) nn.Layer { return nn.NewLinear(s, in, out, true, std) },
		func(n, d int64) nn.Layer { return nn.NewEmbedding(s, n, d, std) })
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("bloom: init: %w", err)
	}
	if err := nn.Unfreeze(m); err != nil {
		return nil, err
	}
	return m, m.initAlibi()
}

// Load reads a HF folder: config.json, model.safetensors (or a sharded
// index) and generation_config.json when present. Checkpoints saved from
// BloomModel (bigscience/bloom-560m and its siblings: keys without the
// "transformer." prefix) load too. Parameters load trainable (PyTorch's
// default; PEFT methods freeze them) in the dtype and on the device the
// options choose (models.LoadOption: by default the checkpoint's
// torch_dtype, on the CPU, frozen weights as views of the mapped file).
func Load(dir string, lopts ...models.LoadOption) (*Model, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	wf, err := models.OpenWeights(dir, cfg.Raw, lopts)
	if err != nil {
		return nil, fmt.Errorf("bloom: %w", err)
	}
	if err := models.CheckLayerCount(wf.Set, "n_layer", cfg.NLayer); err != nil { // before the skeleton is built
		wf.Close()
		return nil, fmt.Errorf("bloom: %s: %w", dir, err)
	}
	if err := models.CheckEmbedding(wf.Set, "word_embeddings.weight", cfg.VocabSize, cfg.HiddenSize, "vocab_size", "hidden_size"); err != nil {
		wf.Close()
		return nil, fmt.Errorf("bloom: %s: %w", dir, err)
	}
	set := wf.Set
	m, err := skeleton(cfg)
	if err != nil {
		wf.Close()
		return nil, err
	}
	m.device = wf.Spec.Device
	var opts nn.LoadOptions
	if cfg.TieWordEmbeddings {
		// some tied checkpoints also store lm_head.weight: the tie wins, as in HF
		opts.IgnoreUnexpected = func(k string) bool { return k == "lm_head.weight" }
	}
	var target nn.Module = m
	_, _, prefixed := set.Info("transformer.word_embeddings.weight")
	if _, _, bare := set.Info("word_embeddings.weight"); bare && !prefixed && cfg.TieWordEmbeddings {
		target = m.Transformer // a BloomModel checkpoint
	}
	if err := wf.LoadState(target, opts); err != nil {
		nn.FreeParams(m)
		wf.Close()
		return nil, fmt.Errorf("bloom: %w", err)
	}
	m.weights = wf.Keep()
	m.Path = dir
	if gc, err := os.ReadFile(filepath.Join(dir, "generation_config.json")); err == nil {
		m.GenerationConfig = gc
	}
	return m, m.initAlibi()
}

// skeleton builds the module tree with uninitialised parameters of the
// right shapes (pages untouched until the checkpoint is copied in).
func skeleton(cfg *Config) (*Model, error) {
	s := tensor.NoGradScope()
	defer s.Close()
	empty := func(shape ...int64) *nn.Param { return nn.Placeholder(s, shape...) }
	m := build(s, cfg,
		func(in, out int64) nn.Layer { return &nn.Linear{Weight: empty(out, in), Bias: empty(out)} },
		func(n, d int64) nn.Layer { return &nn.Embedding{Weight: empty(n, d)} })
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("bloom: %w", err)
	}
	return m, nil
}

func build(s *tensor.Scope, cfg *Config, linear func(in, out int64) nn.Layer, embed func(n, d int64) nn.Layer) *Model {
	h := cfg.HiddenSize
	ln := func() nn.Layer { return nn.NewLayerNorm(s, h, cfg.LayerNormEpsilon) }
	blocks := make([]nn.Module, cfg.NLayer)
	for i := range blocks {
		blocks[i] = &Block{
			InputLayernorm:         ln(),
			SelfAttention:          &Attention{QueryKeyValue: linear(h, 3*h), Dense: linear(h, h)},
			PostAttentionLayernorm: ln(),
			MLP:                    &MLP{DenseHTo4H: linear(h, 4*h), Dense4HToH: linear(4*h, h)},
		}
	}
	emb := embed(cfg.VocabSize, h)
	m := &Model{
		Transformer: &Transformer{WordEmbeddings: emb, WordEmbeddingsLayernorm: ln(),
			H: &nn.ModuleList{Items: blocks}, LnF: ln()},
		Config: cfg,
	}
	if cfg.TieWordEmbeddings {
		m.LMHead = &nn.Linear{Weight: emb.(*nn.Embedding).Weight}
	} else {
		w := linear(h, cfg.VocabSize).(*nn.Linear)
		m.LMHead = &nn.Linear{Weight: w.Weight} // BLOOM's lm_head has no bias
		w.Bias.Free()
	}
	return m
}

// Slopes returns BLOOM's ALiBi slope of each of n heads
// (transformers' build_alibi_tensor): with p the largest power of two ≤ n,
// head i < p gets 2^(-8(i+1)/p); the remaining heads get every other slope
// of the 2p-head sequence, 2^(-4(2j+1)/p).
func Slopes(n int64) []float32 {
	p := int64(1)
	for p*2 <= n {
		p *= 2
	}
	base := math.Pow(2, -math.Pow(2, -(math.Log2(float64(p))-3)))
	out := make([]float32, 0, n)
	for i := int64(1); i <= p; i++ {
		out = append(out, float32(math.Pow(base, float64(i))))
	}
	if p != n {
		extra := math.Pow(2, -math.Pow(2, -(math.Log2(float64(2*p))-3)))
		rem := n - p
		if rem > p {
			rem = p
		}
		for i := int64(1); i < 1+2*rem; i += 2 {
			out = append(out, float32(math.Pow(extra, float64(i))))
		}
	}
	return out
}

func (m *Model) initAlibi() error {
	sl := Slopes(m.Config.NHead)
	s := tensor.NewScope()
	defer s.Close()
	s.SetDevice(m.device)
	m.slopes = s.Keep(s.FromFloat32(sl, 1, int64(len(sl)), 1, 1))
	return s.Err()
}

// Free releases every tensor of the model.
func (m *Model) Free() {
	nn.FreeParams(m)
	m.slopes.Free()
	m.weights.Release()
}

// NumLayers is the number of blocks.
func (m *Model) NumLayers() int { return len(m.Transformer.H.Items) }

// Forward runs the model in scope s (the public entry point): see models.Run.
func (m *Model) Forward(s *tensor.Scope, in models.Inputs) (*models.Outputs, error) {
	return models.Run(s, "bloom", m.ForwardT, in)
}

// ForwardT runs the model in scope s. Intermediates stay in s; the new cache
// (when b.UseCache) owns its tensors.
func (m *Model) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	cfg := m.Config
	defer s.SetDevice(s.SetDevice(m.device))
	if m.device.IsCUDA() {
		b.ToDevice(s, m.device)
	}
	var x *tensor.T
	switch {
	case b.InputsEmbeds != nil:
		x = b.InputsEmbeds
	case b.InputIDs != nil:
		if b.InputIDs.Dim() != 2 {
			return &models.Output{Logits: s.Failf("input_ids: want [batch, seq], got shape %v", b.InputIDs.Shape())}
		}
		x = m.Transformer.WordEmbeddings.Forward(s, b.InputIDs)
	default:
		return &models.Output{Logits: s.Failf("either input_ids or inputs_embeds is required")}
	}
	if s.Err() != nil {
		return &models.Output{}
	}
	sh := x.Shape()
	if len(sh) != 3 || sh[2] != cfg.HiddenSize {
		return &models.Output{Logits: s.Failf("inputs_embeds: want [batch, seq, %d], got %v", cfg.HiddenSize, sh)}
	}
	B, L := sh[0], sh[1]
	if len(b.PrefixKV) != 0 && len(b.PrefixKV) != m.NumLayers() {
		return &models.Output{Logits: s.Failf("prefix key/values for %d layers, the model has %d", len(b.PrefixKV), m.NumLayers())}
	}
	var prefixLen int64
	if len(b.PrefixKV) > 0 {
		prefixLen = b.PrefixKV[0].K.Size(2)
	}
	past := b.PastKeyValues.Len() + prefixLen
	x = m.Transformer.WordEmbeddingsLayernorm.Forward(s, x)

	am := m.fullMask(s, b.AttentionMask, B, past+L, prefixLen)
	alibi := m.alibi(s, am)
	if dt := x.DType(); alibi != nil && dt != tensor.Float32 { // HF: computed in float32, cast to the activations' dtype
		alibi = s.To(alibi, dt)
	}
	mask := causalMask(s, am, B, L, past)
	if s.Err() != nil {
		return &models.Output{}
	}
	if err := b.PastKeyValues.CheckLayers(m.NumLayers()); err != nil {
		return &models.Output{Logits: s.Fail(err)}
	}

	hasPast := b.PastKeyValues.Len() > 0
	var cache *models.Cache
	if b.UseCache {
		cache = b.PastKeyValues
		if cache == nil {
			cache = &models.Cache{}
		}
		if len(cache.Layers) == 0 {
			cache.Layers = make([]models.KV, m.NumLayers())
		}
	}
	ckpt := b.Checkpoint // activation checkpointing (training only)
	if b.UseCache {
		ckpt = nil
	}
	for i, item := range m.Transformer.H.Items {
		block := item.(*Block)
		var pastKV, prefix, newKV *models.KV
		if hasPast {
			pastKV = &b.PastKeyValues.Layers[i]
		}
		if len(b.PrefixKV) > 0 {
			prefix = &b.PrefixKV[i]
		}
		if cache != nil {
			newKV = &cache.Layers[i]
		}
		mark := s.Mark()
		x = ckpt.Layer(s, block, x, func(s *tensor.Scope, x *tensor.T) *tensor.T {
			return m.block(s, block, x, alibi, mask, pastKV, prefix, newKV)
		}, append([]*tensor.T{alibi, mask}, prefix.Tensors()...)...)
		if s.Err() != nil {
			return &models.Output{}
		}
		s.FreeSince(mark, x) // the block's intermediates: peak memory stays one block deep
	}
	x = m.Transformer.LnF.Forward(s, x)
	logits, loss := models.CausalLMHead(s, b, x, m.LMHead)
	return &models.Output{Logits: logits, Loss: loss, PastKeyValues: cache}
}

// fullMask returns the int64 attention mask over all T key positions
// (prefix, past and new): the caller's mask (prefixed by ones for the
// prefix when it does not cover it), or all ones.
func (m *Model) fullMask(s *tensor.Scope, am *tensor.T, B, T, prefixLen int64) *tensor.T {
	if am == nil {
		return s.Ones(tensor.Int64, B, T)
	}
	if am.Dim() != 2 || am.Size(0) != B {
		return s.Failf("attention_mask: shape %v, want [%d, %d]", am.Shape(), B, T-prefixLen)
	}
	if am.DType() != tensor.Int64 {
		am = s.To(am, tensor.Int64)
	}
	switch am.Size(1) {
	case T:
		return am
	case T - prefixLen:
		return s.Cat(1, s.Ones(tensor.Int64, B, prefixLen), am) // prefix positions always attend
	}
	return s.Failf("attention_mask: shape %v, want [%d, %d]", am.Shape(), B, T-prefixLen)
}

// alibi is the per-head bias added to the scores, [B, H, 1, T]: slope ×
// the key's position (cumsum(mask)-1)·mask.
func (m *Model) alibi(s *tensor.Scope, am *tensor.T) *tensor.T {
	if am == nil {
		return nil
	}
	B, T := am.Size(0), am.Size(1)
	pos := s.Mul(s.AddScalar(s.Cumsum(am, 1), -1), am)
	pos = s.View(s.To(pos, tensor.Float32), B, 1, 1, T)
	return s.Mul(m.slopes, pos)
}

// causalMask is true where query i may not see key j ([B, 1, L, T]): j in
// the future of i, or a padding key. It is nil when nothing is masked.
func causalMask(s *tensor.Scope, am *tensor.T, B, L, past int64) *tensor.T {
	if am == nil {
		return nil
	}
	T := past + L
	pad := s.View(s.EqScalar(am, 0), B, 1, 1, T)
	hasPad := s.Item(s.Sum(s.EqScalar(am, 0), false)) > 0
	if L == 1 && !hasPad {
		return nil
	}
	keys := s.Unsqueeze(s.Arange(tensor.Int64, 0, T), 0)       // [1, T]
	queries := s.Unsqueeze(s.Arange(tensor.Int64, past, T), 1) // [L, 1]
	future := s.View(s.Gt(keys, queries), 1, 1, L, T)
	if !hasPad {
		return future
	}
	return s.LogicalOr(future, pad)
}

func (m *Model) dropout(s *tensor.Scope, x *tensor.T, p float64) *tensor.T {
	if !m.training || p == 0 {
		return x
	}
	return s.Dropout(x, p, true)
}

func (m *Model) block(s *tensor.Scope, l *Block, x, alibi, mask *tensor.T, past, prefix, newKV *models.KV) *tensor.T {
	cfg := m.Config
	h := l.InputLayernorm.Forward(s, x)
	residual := x
	if cfg.ApplyResidualConnectionPostLayernorm {
		residual = h
	}
	mark := s.Mark()
	a := m.attention(s, l.SelfAttention, h, alibi, mask, past, prefix, newKV)
	x = s.Add(m.dropout(s, a, cfg.HiddenDropout), residual)
	s.FreeSince(mark, x) // the attention block's intermediates (autograd keeps what it needs)
	h = l.PostAttentionLayernorm.Forward(s, x)
	residual = x
	if cfg.ApplyResidualConnectionPostLayernorm {
		residual = h
	}
	f := l.MLP.Dense4HToH.Forward(s, s.Gelu(l.MLP.DenseHTo4H.Forward(s, h), "tanh"))
	return s.Add(m.dropout(s, f, cfg.HiddenDropout), residual)
}

func (m *Model) attention(s *tensor.Scope, a *Attention, h, alibi, mask *tensor.T, past, prefix, newKV *models.KV) *tensor.T {
	sh := h.Shape()
	if len(sh) != 3 {
		return s.Failf("attention: hidden states of shape %v", sh)
	}
	B, L := sh[0], sh[1]
	H, D := m.Config.NHead, m.Config.HeadDim()
	qkv := s.View(a.QueryKeyValue.Forward(s, h), B, L, H, 3, D) // rows per head: [q, k, v]
	q := s.Transpose(s.Select(qkv, 3, 0), 1, 2)                 // [B, H, L, D]
	k := s.Transpose(s.Select(qkv, 3, 1), 1, 2)
	v := s.Transpose(s.Select(qkv, 3, 2), 1, 2)
	k, v = models.AttendKV(s, prefix, past, newKV, k, v) // prefix keys/values go first
	if s.Err() != nil {
		return nil
	}
	scores := s.MulScalar(s.Matmul(q, s.Transpose(k, 2, 3)), 1/math.Sqrt(float64(D)))
	if alibi != nil {
		scores = s.Add(scores, alibi)
	}
	dt := scores.DType()
	if mask != nil {
		scores = s.MaskedFill(scores, mask, tensor.Lowest(dt)) // torch.finfo(dtype).min
	}
	p := s.Softmax(scores, -1, tensor.Float32)
	if dt != tensor.Float32 {
		p = s.To(p, dt)
	}
	p = m.dropout(s, p, m.Config.AttentionDropout)
	o := s.Reshape(s.Transpose(s.Matmul(p, v), 1, 2), B, L, H*D)
	return a.Dense.Forward(s, o)
}

// Save writes the model as a HF folder that transformers can load:
// config.json, model.safetensors (tied lm_head omitted, as HF does) and
// generation_config.json when the model has one. Files are written to
// temporary names and renamed.
func (m *Model) Save(dir string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bloom: save: %w", err)
	}
	models.RecordDType(&m.Config.Raw, m)
	cfg, err := m.Config.JSON()
	if err != nil {
		return fmt.Errorf("bloom: save config: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, "config.json"), append(cfg, '\n')); err != nil {
		return fmt.Errorf("bloom: %w", err)
	}
	if m.GenerationConfig != nil {
		if err := fsutil.WriteFileAtomic(filepath.Join(dir, "generation_config.json"), m.GenerationConfig); err != nil {
			return fmt.Errorf("bloom: %w", err)
		}
	}
	if err := nn.SaveState(m, filepath.Join(dir, "model.safetensors"), map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("bloom: save: %w", err)
	}
	return nil
}

// NameOrPath is where the model came from (PEFT records it in
// adapter_config.json as base_model_name_or_path).
func (m *Model) NameOrPath() string { return m.Path }

// ModelType is config.json's model_type ("bloom"), which PEFT uses to pick
// default target modules.
func (m *Model) ModelType() string { return m.Config.ModelType }

// Dims reports the model's sizes (models.Sized).
func (m *Model) Dims() models.Dims {
	c := m.Config
	return models.Dims{
		HiddenSize:        c.HiddenSize,
		NumLayers:         int64(m.NumLayers()),
		NumAttentionHeads: c.NHead,
		NumKeyValueHeads:  c.NHead,
		HeadDim:           c.HeadDim(),
		VocabSize:         c.VocabSize,
	}
}

// InputEmbeddings is transformer.word_embeddings (models.InputEmbedder).
func (m *Model) InputEmbeddings() nn.Layer { return m.Transformer.WordEmbeddings }

var (
	_ models.CausalLM      = (*Model)(nil)
	_ models.Sized         = (*Model)(nil)
	_ models.InputEmbedder = (*Model)(nil)
)
