// Package gemma is the Gemma family of decoders — Gemma 2 (model_type
// "gemma2") and Gemma 3's text model ("gemma3_text") — loaded from HF
// checkpoint folders, with HF's module names so that state dicts and PEFT
// adapters map 1:1 onto the files.
//
// The forward pass follows transformers' Gemma2ForCausalLM and
// Gemma3ForCausalLM with eager attention: token embeddings scaled by
// √hidden_size (rounded to the embeddings' dtype); RMSNorm computing
// x·(1 + weight) in float32; each layer normalises the attention's input
// and output and the feed-forward's input and output; the feed-forward is
// GeGLU with the tanh-approximated GELU; attention scores are scaled by
// query_pre_attn_scalar^-½, soft-capped (cap·tanh(s/cap), Gemma 2), then
// masked and soft-maxed in float32; local layers see only the last
// sliding_window positions (by cache index, padding included), global
// layers every earlier one; Gemma 3 normalises queries and keys per head
// (q_norm, k_norm) before rotary, whose base is rope_local_base_freq on
// the local layers and rope_theta (with optional linear rope_scaling) on
// the global ones; the head (tied to the embeddings by default) is
// soft-capped when final_logit_softcapping is set.
//
// A Model is safe for concurrent forwards while its adapters do not change;
// loading, merging and saving are not safe concurrently with anything else.
package gemma

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

// Model is Gemma2ForCausalLM or Gemma3ForCausalLM. Concurrent forwards are
// safe while nothing mutates the model (loading adapters, merging, Free).
type Model struct {
	Model  *Decoder `nn:"model"`
	LMHead nn.Layer `nn:"lm_head"`

	Config *Config
	// Path is the folder the model was loaded from (HF's name_or_path).
	Path string
	// GenerationConfig is generation_config.json as read (nil if absent).
	GenerationConfig []byte

	rope, ropeLocal *models.Rope // global and local layers' rotary embeddings (the same for Gemma 2)
	act             models.ActFn
	weights         models.Weights
	dtype           tensor.DType
	device          tensor.Device
}

// Decoder is Gemma2Model / Gemma3TextModel. The module types below are
// parts of a Model and share its concurrency rule.
type Decoder struct {
	EmbedTokens nn.Layer       `nn:"embed_tokens"`
	Layers      *nn.ModuleList `nn:"layers"`
	Norm        nn.Layer       `nn:"norm"`
}

// DecoderLayer is Gemma2DecoderLayer / Gemma3DecoderLayer.
type DecoderLayer struct {
	SelfAttn                 *Attention `nn:"self_attn"`
	MLP                      *MLP       `nn:"mlp"`
	InputLayernorm           nn.Layer   `nn:"input_layernorm"`
	PostAttentionLayernorm   nn.Layer   `nn:"post_attention_layernorm"`
	PreFeedforwardLayernorm  nn.Layer   `nn:"pre_feedforward_layernorm"`
	PostFeedforwardLayernorm nn.Layer   `nn:"post_feedforward_layernorm"`

	sliding bool
	gemma3  bool
}

// Attention is Gemma2Attention / Gemma3Attention (QNorm and KNorm: Gemma 3
// only, nil for Gemma 2).
type Attention struct {
	QProj nn.Layer `nn:"q_proj"`
	KProj nn.Layer `nn:"k_proj"`
	VProj nn.Layer `nn:"v_proj"`
	OProj nn.Layer `nn:"o_proj"`
	QNorm nn.Layer `nn:"q_norm"`
	KNorm nn.Layer `nn:"k_norm"`
}

// MLP is Gemma's GeGLU feed-forward: down(act(gate(x)) · up(x)).
type MLP struct {
	GateProj nn.Layer `nn:"gate_proj"`
	UpProj   nn.Layer `nn:"up_proj"`
	DownProj nn.Layer `nn:"down_proj"`
}

// RMSNorm is Gemma's RMS normalisation: x / sqrt(mean(x²) + eps) · (1 +
// weight), computed in float32 and cast back to x's dtype (a zero weight is
// the identity scale). Its Forward is safe for concurrent use.
type RMSNorm struct {
	Weight *nn.Param `nn:"weight"`
	Eps    float64
	prefix string
}

// ScaledEmbedding is Gemma3TextScaledWordEmbedding: an embedding whose rows
// are multiplied by Scale (√hidden_size) rounded to the weight's dtype. Its
// Forward is safe for concurrent use.
type ScaledEmbedding struct {
	Weight *nn.Param `nn:"weight"`
	Scale  float64
}

// TypeName prints HF's class names in the module tree.
func (m *Model) TypeName() string      { return m.prefix() + "ForCausalLM" }
func (m *Model) ExtraRepr() string     { return "" }
func (d *Decoder) TypeName() string    { return "GemmaModel" }
func (*DecoderLayer) TypeName() string { return "GemmaDecoderLayer" }
func (*Attention) TypeName() string    { return "GemmaAttention" }
func (*MLP) TypeName() string          { return "GemmaMLP" }
func (n *RMSNorm) TypeName() string    { return n.prefix + "RMSNorm" }
func (n *RMSNorm) ExtraRepr() string {
	return fmt.Sprintf("(%d,), eps=%g", n.Weight.T().Size(0), n.Eps)
}
func (*ScaledEmbedding) TypeName() string { return "Gemma3TextScaledWordEmbedding" }
func (e *ScaledEmbedding) ExtraRepr() string {
	sh := e.Weight.T().Shape()
	return fmt.Sprintf("%d, %d", sh[0], sh[1])
}

func (m *Model) prefix() string {
	if m.Config.ModelType == "gemma3_text" {
		return "Gemma3"
	}
	return "Gemma2"
}

// Forward normalises x over its last dimension.
func (n *RMSNorm) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	if x == nil {
		return nil
	}
	dt := x.DType()
	xf := x
	if dt != tensor.Float32 {
		xf = s.To(x, tensor.Float32)
	}
	y := s.Mul(xf, s.Rsqrt(s.AddScalar(s.Mean(s.Mul(xf, xf), true, -1), n.Eps)))
	w := n.Weight.T()
	if w.DType() != tensor.Float32 {
		w = s.To(w, tensor.Float32)
	}
	y = s.Mul(y, s.AddScalar(w, 1))
	if dt != tensor.Float32 {
		y = s.To(y, dt)
	}
	return y
}

// Forward embeds ids and scales the rows.
func (e *ScaledEmbedding) Forward(s *tensor.Scope, ids *tensor.T) *tensor.T {
	w := e.Weight.T()
	return scaleBy(s, s.Embedding(w, ids), e.Scale)
}

// scaleBy multiplies x by v rounded to x's dtype, as transformers'
// torch.tensor(v, dtype=x.dtype) does (√3072 is 55.5 in bfloat16).
func scaleBy(s *tensor.Scope, x *tensor.T, v float64) *tensor.T {
	if x == nil {
		return nil
	}
	return s.Mul(x, s.Full(x.DType(), v, 1))
}

// New makes a model with HF's random initialisation (normal(0,
// initializer_range) weights, zero RMSNorm weights: unit scales), seeded.
func New(cfg *Config, seed int64) (*Model, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gemma: %w", err)
	}
	s := tensor.NoGradScope()
	defer s.Close()
	tensor.ManualSeed(seed)
	std := cfg.InitializerRange
	m := build(s, cfg, func(in, out int64, bias bool) nn.Layer { return nn.NewLinear(s, in, out, bias, std) },
		func(n, d int64) *nn.Param { return nn.NewEmbedding(s, n, d, std).Weight },
		func(d int64) *nn.Param { return nn.NewParam(s.Keep(s.Zeros(tensor.Float32, d))) })
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("gemma: init: %w", err)
	}
	if err := nn.Unfreeze(m); err != nil {
		return nil, err
	}
	return m, m.init()
}

// Load reads a HF folder: config.json, model.safetensors (or a sharded
// index) and generation_config.json when present, with the load options
// every family takes (models.WithDType, models.WithDevice,
// models.WithoutMmap). Parameters load trainable (PEFT methods freeze
// them); on the CPU a weight stored in the wanted dtype is a view of the
// memory-mapped file.
func Load(dir string, opts ...models.LoadOption) (*Model, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	wf, err := models.OpenWeights(dir, cfg.Raw, opts)
	if err != nil {
		return nil, fmt.Errorf("gemma: %w", err)
	}
	if err := models.CheckLayerCount(wf.Set, "num_hidden_layers", cfg.NumHiddenLayers); err != nil {
		wf.Close()
		return nil, fmt.Errorf("gemma: %s: %w", dir, err)
	}
	if err := models.CheckEmbedding(wf.Set, "embed_tokens.weight", cfg.VocabSize, cfg.HiddenSize, "vocab_size", "hidden_size"); err != nil {
		wf.Close()
		return nil, fmt.Errorf("gemma: %s: %w", dir, err)
	}
	s := tensor.NoGradScope()
	empty := func(shape ...int64) *nn.Param { return nn.Placeholder(s, shape...) }
	m := build(s, cfg,
		func(in, out int64, bias bool) nn.Layer {
			l := &nn.Linear{Weight: empty(out, in)}
			if bias {
				l.Bias = empty(out)
			}
			return l
		},
		func(n, d int64) *nn.Param { return empty(n, d) },
		func(d int64) *nn.Param { return empty(d) })
	err = s.Err()
	s.Close()
	if err != nil {
		wf.Close()
		return nil, fmt.Errorf("gemma: %w", err)
	}
	m.dtype, m.device = wf.DType, wf.Spec.Device
	fail := func(err error) (*Model, error) {
		nn.FreeParams(m)
		wf.Close()
		return nil, err
	}
	var lo nn.LoadOptions
	tied := cfg.TieWordEmbeddings
	// a tied checkpoint may also store lm_head.weight (the tie wins, as in
	// HF); older transformers saved rotary inv_freq buffers
	lo.IgnoreUnexpected = func(k string) bool {
		return (tied && k == "lm_head.weight") || filepath.Ext(k) == ".inv_freq"
	}
	if err := wf.LoadState(m, lo); err != nil {
		return fail(fmt.Errorf("gemma: %w", err))
	}
	m.weights = wf.Keep()
	m.Path = dir
	if gc, err := os.ReadFile(filepath.Join(dir, "generation_config.json")); err == nil {
		m.GenerationConfig = gc
	}
	if err := m.init(); err != nil {
		m.Free()
		return nil, err
	}
	return m, nil
}

type linearFn func(in, out int64, bias bool) nn.Layer

func build(s *tensor.Scope, cfg *Config, linear linearFn, embed func(n, d int64) *nn.Param, norm func(d int64) *nn.Param) *Model {
	h, hd := cfg.HiddenSize, cfg.HeadDim
	q, kv := cfg.NumAttentionHeads*hd, cfg.NumKeyValueHeads*hd
	g3 := cfg.ModelType == "gemma3_text"
	prefix := "Gemma2"
	if g3 {
		prefix = "Gemma3"
	}
	rms := func(d int64) nn.Layer { return &RMSNorm{Weight: norm(d), Eps: cfg.RMSNormEps, prefix: prefix} }
	bias := cfg.AttentionBias
	layers := make([]nn.Module, cfg.NumHiddenLayers)
	for i := range layers {
		attn := &Attention{
			QProj: linear(h, q, bias), KProj: linear(h, kv, bias),
			VProj: linear(h, kv, bias), OProj: linear(q, h, bias),
		}
		if g3 {
			attn.QNorm, attn.KNorm = rms(hd), rms(hd)
		}
		layers[i] = &DecoderLayer{
			SelfAttn: attn,
			MLP: &MLP{
				GateProj: linear(h, cfg.IntermediateSize, false),
				UpProj:   linear(h, cfg.IntermediateSize, false),
				DownProj: linear(cfg.IntermediateSize, h, false),
			},
			InputLayernorm:           rms(h),
			PostAttentionLayernorm:   rms(h),
			PreFeedforwardLayernorm:  rms(h),
			PostFeedforwardLayernorm: rms(h),
			sliding:                  cfg.LayerTypes[i] == SlidingAttention,
			gemma3:                   g3,
		}
	}
	w := embed(cfg.VocabSize, h)
	var emb nn.Layer = &nn.Embedding{Weight: w}
	if g3 {
		emb = &ScaledEmbedding{Weight: w, Scale: math.Sqrt(float64(h))}
	}
	m := &Model{
		Model:  &Decoder{EmbedTokens: emb, Layers: &nn.ModuleList{Items: layers}, Norm: rms(h)},
		Config: cfg,
	}
	if cfg.TieWordEmbeddings {
		m.LMHead = &nn.Linear{Weight: w}
	} else {
		m.LMHead = linear(h, cfg.VocabSize, false)
	}
	return m
}

// init reads the rotary embeddings (models.Rope: rope_theta and
// rope_scaling on the global layers, Gemma 3's rope_local_base_freq on the
// local ones) and resolves the activation.
func (m *Model) init() error {
	cfg := m.Config
	act, ok := models.Activation(cfg.HiddenActivation)
	if !ok {
		return fmt.Errorf("gemma: hidden_activation %q is not supported", cfg.HiddenActivation)
	}
	m.act = act
	global, local, err := cfg.Ropes()
	if err != nil {
		return fmt.Errorf("gemma: %w", err)
	}
	m.rope, m.ropeLocal = global, local
	return nil
}

// DType is the dtype of the model's floating-point weights as loaded.
func (m *Model) DType() tensor.DType {
	if m.dtype == 0 {
		return tensor.Float32
	}
	return m.dtype
}

// Device is where the model's weights live.
func (m *Model) Device() tensor.Device { return m.device }

// Free releases every tensor of the model, then the memory-mapped
// checkpoint its frozen weights viewed.
func (m *Model) Free() {
	nn.FreeParams(m)
	m.weights.Release()
}

// NumLayers is the number of decoder layers.
func (m *Model) NumLayers() int { return len(m.Model.Layers.Items) }

// Forward runs the model (the public entry point) in the caller's scope s:
// see models.Inputs and the tensor package's memory rules.
func (m *Model) Forward(s *tensor.Scope, in models.Inputs) (*models.Outputs, error) {
	return models.Run(s, "gemma", m.ForwardT, in)
}

// ForwardT runs the model in scope s. Intermediates stay in s; the new
// cache (when b.UseCache) owns its tensors. Gemma 2 scales inputs_embeds
// by √hidden_size like embedded ids (its model does, after the lookup);
// Gemma 3 scales inside its embedding layer, so inputs_embeds enter as
// given.
func (m *Model) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	cfg := m.Config
	defer s.SetDevice(s.SetDevice(m.device))
	if m.device.IsCUDA() {
		b.ToDevice(s, m.device)
	}
	g3 := cfg.ModelType == "gemma3_text"
	var x *tensor.T
	switch {
	case b.InputsEmbeds != nil:
		x = b.InputsEmbeds
	case b.InputIDs != nil:
		if b.InputIDs.Dim() != 2 {
			return &models.Output{Logits: s.Failf("input_ids: want [batch, seq], got shape %v", b.InputIDs.Shape())}
		}
		x = m.Model.EmbedTokens.Forward(s, b.InputIDs)
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
	if !g3 {
		x = scaleBy(s, x, math.Sqrt(float64(cfg.HiddenSize)))
	}
	B, L := sh[0], sh[1]
	if len(b.PrefixKV) != 0 && len(b.PrefixKV) != m.NumLayers() {
		return &models.Output{Logits: s.Failf("prefix key/values for %d layers, the model has %d", len(b.PrefixKV), m.NumLayers())}
	}
	var prefixLen int64
	if len(b.PrefixKV) > 0 {
		prefixLen = b.PrefixKV[0].K.Size(2)
	}
	if err := b.PastKeyValues.CheckLayers(m.NumLayers()); err != nil {
		return &models.Output{Logits: s.Fail(err)}
	}
	past := b.PastKeyValues.Len() + prefixLen
	T := past + L

	pos := b.PositionIDs
	if pos == nil {
		pos = s.Unsqueeze(s.Arange(tensor.Int64, past, T), 0)
	} else if ps := pos.Shape(); len(ps) != 2 || ps[1] != L || (ps[0] != B && ps[0] != 1) {
		return &models.Output{Logits: s.Failf("position_ids: shape %v, want [%d, %d]", ps, B, L)}
	}
	dt := x.DType()
	global := rotary(s, pos, m.rope, dt)
	local := global
	if m.ropeLocal != m.rope {
		local = rotary(s, pos, m.ropeLocal, dt)
	}
	fullMask, slidingMask := m.attentionMasks(s, b.AttentionMask, B, L, past, prefixLen, dt)
	if s.Err() != nil {
		return &models.Output{}
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
	ckpt := b.Checkpoint
	if b.UseCache {
		ckpt = nil
	}
	for i, item := range m.Model.Layers.Items {
		layer := item.(*DecoderLayer)
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
		rot, mask := global, fullMask
		if layer.sliding {
			rot, mask = local, slidingMask
		}
		mark := s.Mark()
		x = ckpt.Layer(s, layer, x, func(s *tensor.Scope, x *tensor.T) *tensor.T {
			return layer.forward(s, m, x, rot, mask, pastKV, prefix, newKV)
		}, append([]*tensor.T{rot.cos, rot.sin, mask}, prefix.Tensors()...)...)
		if s.Err() != nil {
			return &models.Output{}
		}
		s.FreeSince(mark, x)
	}
	x = m.Model.Norm.Forward(s, x)
	var head nn.Layer = m.LMHead
	if c := cfg.FinalLogitSoftcapping; c != nil {
		head = softcapHead{head: m.LMHead, cap: *c}
	}
	logits, loss := models.CausalLMHead(s, b, x, head)
	return &models.Output{Logits: logits, Loss: loss, PastKeyValues: cache}
}

// softcapHead is the head followed by final-logit soft-capping,
// cap·tanh(logits/cap), in the head's dtype (transformers caps before the
// loss upcasts). It is not part of the module tree: LoRA and
// modules_to_save see lm_head itself.
type softcapHead struct {
	head nn.Layer
	cap  float64
}

func (h softcapHead) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	return softcap(s, h.head.Forward(s, x), h.cap)
}

// softcap is cap·tanh(x/cap).
func softcap(s *tensor.Scope, x *tensor.T, c float64) *tensor.T {
	return s.MulScalar(s.Tanh(s.DivScalar(x, c)), c)
}

// rope is one layer type's rotary cos and sin [B|1, 1, L, head_dim].
type rope struct{ cos, sin *tensor.T }

// rotary computes cos and sin in float32 (models.Rope) for position ids
// [B|1, L] and casts them to the activations' dtype dt.
func rotary(s *tensor.Scope, pos *tensor.T, r *models.Rope, dt tensor.DType) rope {
	cos, sin := r.CosSin(s, pos)
	if dt != tensor.Float32 {
		cos, sin = s.To(cos, dt), s.To(sin, dt)
	}
	return rope{cos, sin}
}

// attentionMasks builds HF's additive masks [B|1, 1, L, T] in dtype dt for
// the global and the local layers: 0 where a query may attend, dt's lowest
// value where the key is in the future, padding, or (local layers) at
// least sliding_window positions behind the query, counted in cache
// indices as transformers does. A mask is nil when it masks nothing.
func (m *Model) attentionMasks(s *tensor.Scope, am *tensor.T, B, L, past, prefixLen int64, dt tensor.DType) (full, sliding *tensor.T) {
	T := past + L
	var pad *tensor.T
	if am != nil {
		if am.Dim() != 2 || am.Size(0) != B {
			return s.Failf("attention_mask: shape %v, want [%d, %d]", am.Shape(), B, T-prefixLen), nil
		}
		switch am.Size(1) {
		case T:
		case T - prefixLen:
			am = s.Cat(1, s.Ones(am.DType(), B, prefixLen), am) // prefix positions always attend
		default:
			return s.Failf("attention_mask: shape %v, want [%d, %d]", am.Shape(), B, T-prefixLen), nil
		}
		if s.Item(s.Sum(s.EqScalar(am, 0), false)) > 0 {
			pad = s.View(s.EqScalar(am, 0), B, 1, 1, T)
		}
	}
	keys := s.Unsqueeze(s.Arange(tensor.Int64, 0, T), 0)       // [1, T]
	queries := s.Unsqueeze(s.Arange(tensor.Int64, past, T), 1) // [L, 1]
	future := s.Gt(keys, queries)                              // [L, T]
	build := func(masked *tensor.T) *tensor.T {
		if pad != nil {
			masked = s.LogicalOr(masked, pad) // [B, 1, L, T]
		} else {
			masked = s.View(masked, 1, 1, L, T)
		}
		return s.MaskedFill(s.Zeros(dt, 1, 1, L, T), masked, tensor.Lowest(dt))
	}
	if L > 1 || pad != nil {
		full = build(future)
	}
	if L > 1 || pad != nil || T > m.Config.SlidingWindow {
		// key j is out of the window of query i when j <= i - sliding_window
		sw := m.Config.SlidingWindow
		edge := s.Unsqueeze(s.Arange(tensor.Int64, past+1-sw, T+1-sw), 1) // [L, 1]: i - sw + 1
		old := s.Gt(edge, keys)
		sliding = build(s.LogicalOr(future, old))
	}
	return full, sliding
}

// forward is one decoder layer: x + post_attn_norm(attn(input_norm(x))),
// then + post_ff_norm(mlp(pre_ff_norm(x))). Each block's intermediates are
// freed (their handles) once its output exists.
func (l *DecoderLayer) forward(s *tensor.Scope, m *Model, x *tensor.T, rot rope, mask *tensor.T, past, prefix, newKV *models.KV) *tensor.T {
	mark := s.Mark()
	h := l.InputLayernorm.Forward(s, x)
	a := l.SelfAttn.forward(s, m.Config, h, rot, mask, past, prefix, newKV)
	x = s.Add(x, l.PostAttentionLayernorm.Forward(s, a))
	s.FreeSince(mark, x)
	mark = s.Mark()
	h = l.PreFeedforwardLayernorm.Forward(s, x)
	mlp := l.MLP
	g := s.Mul(m.act(s, mlp.GateProj.Forward(s, h)), mlp.UpProj.Forward(s, h))
	y := s.Add(x, l.PostFeedforwardLayernorm.Forward(s, mlp.DownProj.Forward(s, g)))
	s.FreeSince(mark, y)
	return y
}

func (a *Attention) forward(s *tensor.Scope, cfg *Config, h *tensor.T, rot rope, mask *tensor.T, past, prefix, newKV *models.KV) *tensor.T {
	sh := h.Shape()
	B, L := sh[0], sh[1]
	H, KV, D := cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim
	q := s.Transpose(s.View(a.QProj.Forward(s, h), B, L, H, D), 1, 2)
	k := s.Transpose(s.View(a.KProj.Forward(s, h), B, L, KV, D), 1, 2)
	v := s.Transpose(s.View(a.VProj.Forward(s, h), B, L, KV, D), 1, 2)
	if a.QNorm != nil {
		q = a.QNorm.Forward(s, q)
	}
	if a.KNorm != nil {
		k = a.KNorm.Forward(s, k)
	}
	q = models.ApplyRotary(s, q, rot.cos, rot.sin)
	k = models.ApplyRotary(s, k, rot.cos, rot.sin)
	k, v = models.AttendKV(s, prefix, past, newKV, k, v) // prefix keys are never rotated
	if s.Err() != nil {
		return nil
	}
	T := k.Size(2)
	if H != KV {
		rep := H / KV
		k = s.Reshape(s.Expand(s.Unsqueeze(k, 2), B, KV, rep, T, D), B, H, T, D)
		v = s.Reshape(s.Expand(s.Unsqueeze(v, 2), B, KV, rep, T, D), B, H, T, D)
	}
	mark := s.Mark()
	scores := s.MulScalar(s.Matmul(q, s.Transpose(k, 2, 3)), math.Pow(cfg.QueryPreAttnScalar, -0.5))
	if c := cfg.AttnLogitSoftcapping; c != nil {
		scores = softcap(s, scores, *c)
	}
	if mask != nil {
		scores = s.Add(scores, mask)
	}
	dt := scores.DType()
	p := s.Softmax(scores, -1, tensor.Float32)
	if dt != tensor.Float32 {
		p = s.To(p, dt)
	}
	s.FreeSince(mark, p)
	o := s.Reshape(s.Transpose(s.Matmul(p, v), 1, 2), B, L, H*D)
	return a.OProj.Forward(s, o)
}

// Save writes the model as a HF folder that transformers can load:
// config.json, model.safetensors (tied lm_head omitted, as HF does) and
// generation_config.json when the model has one, each through a temporary
// file and a rename.
func (m *Model) Save(dir string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("gemma: save: %w", err)
	}
	models.RecordDType(&m.Config.Raw, m)
	cfg, err := m.Config.JSON()
	if err != nil {
		return fmt.Errorf("gemma: save config: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, "config.json"), append(cfg, '\n')); err != nil {
		return err
	}
	if m.GenerationConfig != nil {
		if err := fsutil.WriteFileAtomic(filepath.Join(dir, "generation_config.json"), m.GenerationConfig); err != nil {
			return err
		}
	}
	if err := nn.SaveState(m, filepath.Join(dir, "model.safetensors"), map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("gemma: save: %w", err)
	}
	return nil
}

// NameOrPath is where the model came from (PEFT records it in
// adapter_config.json as base_model_name_or_path).
func (m *Model) NameOrPath() string { return m.Path }

// ModelType is config.json's model_type ("gemma2", "gemma3_text"), which
// PEFT uses to pick default target modules.
func (m *Model) ModelType() string { return m.Config.ModelType }

// Dims reports the model's sizes (models.Sized).
func (m *Model) Dims() models.Dims {
	c := m.Config
	return models.Dims{
		HiddenSize:        c.HiddenSize,
		NumLayers:         int64(m.NumLayers()),
		NumAttentionHeads: c.NumAttentionHeads,
		NumKeyValueHeads:  c.NumKeyValueHeads,
		HeadDim:           c.HeadDim,
		VocabSize:         c.VocabSize,
	}
}

// InputEmbeddings is model.embed_tokens (models.InputEmbedder): for Gemma 3
// the scaled embedding, for Gemma 2 the plain one (the model scales what
// it is given).
func (m *Model) InputEmbeddings() nn.Layer { return m.Model.EmbedTokens }

var (
	_ models.CausalLM      = (*Model)(nil)
	_ models.Sized         = (*Model)(nil)
	_ models.InputEmbedder = (*Model)(nil)
)
