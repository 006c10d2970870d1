// Package llama is the LLaMA family of decoders (LLaMA 1–3.x, Qwen2,
// Qwen3, Mistral, Phi-3/Phi-4-mini) loaded from HF checkpoint folders,
// with HF's module names so that state dicts and PEFT adapters map 1:1
// onto the files.
//
// The forward pass follows transformers' LlamaForCausalLM exactly: eager
// attention with a 0/min additive mask, fp32 softmax, rotary embeddings in
// the half-split layout with config.json's RoPE scaling (models.Rope), GQA
// by repeating key/value heads, and HF's shifted cross-entropy loss
// ignoring -100. The variants differ where transformers' classes do:
// Qwen2 has q/k/v biases; Qwen3 (model_type "qwen3") normalises each
// query and key head with its own RMSNorm (self_attn.q_norm, k_norm)
// before the rotation; Phi-3 (model_type "phi3") has fused projections,
// self_attn.qkv_proj ([q; k; v] rows) and mlp.gate_up_proj ([gate; up]
// rows), and may rotate part of each head only (partial_rotary_factor,
// 0.75 in Phi-4-mini).
package llama

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"

	"github.com/gopeft/peft/internal/fsutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
)

// Model is LlamaForCausalLM.
type Model struct {
	Model  *Decoder `nn:"model"`
	LMHead nn.Layer `nn:"lm_head"`

	Config *Config
	// Path is the folder the model was loaded from (HF's name_or_path).
	Path string
	// GenerationConfig is generation_config.json as read (nil if absent).
	GenerationConfig []byte

	rope    *models.Rope
	weights models.Weights
	dtype   tensor.DType  // of the floating-point weights as loaded (0: float32)
	device  tensor.Device // where the weights live
}

// Decoder is LlamaModel.
type Decoder struct {
	EmbedTokens nn.Layer       `nn:"embed_tokens"`
	Layers      *nn.ModuleList `nn:"layers"`
	Norm        nn.Layer       `nn:"norm"`
}

// DecoderLayer is LlamaDecoderLayer. SelfAttn is an *Attention, or a
// models.AttentionWrapper around one (PEFT's adaption prompt): the layer
// runs the wrapped attention and passes its output and state through the
// wrapper's AdaptAttention.
type DecoderLayer struct {
	SelfAttn               nn.Layer `nn:"self_attn"`
	MLP                    *MLP     `nn:"mlp"`
	InputLayernorm         nn.Layer `nn:"input_layernorm"`
	PostAttentionLayernorm nn.Layer `nn:"post_attention_layernorm"`
}

// Attention is LlamaAttention (Qwen3Attention with QNorm and KNorm;
// Phi3Attention with QKVProj instead of QProj, KProj and VProj). Absent
// layers are nil.
type Attention struct {
	QKVProj nn.Layer `nn:"qkv_proj"`
	QProj   nn.Layer `nn:"q_proj"`
	KProj   nn.Layer `nn:"k_proj"`
	VProj   nn.Layer `nn:"v_proj"`
	OProj   nn.Layer `nn:"o_proj"`
	QNorm   nn.Layer `nn:"q_norm"`
	KNorm   nn.Layer `nn:"k_norm"`
}

// MLP is LlamaMLP (SwiGLU; Phi3MLP with GateUpProj instead of GateProj and
// UpProj). Absent layers are nil.
type MLP struct {
	GateUpProj nn.Layer `nn:"gate_up_proj"`
	GateProj   nn.Layer `nn:"gate_proj"`
	UpProj     nn.Layer `nn:"up_proj"`
	DownProj   nn.Layer `nn:"down_proj"`
}

// TypeName prints HF's class names in the module tree.
func (m *Model) TypeName() string      { return prefixOf(m.Config) + "ForCausalLM" }
func (*Decoder) TypeName() string      { return "LlamaModel" }
func (*DecoderLayer) TypeName() string { return "LlamaDecoderLayer" }
func (*Attention) TypeName() string    { return "LlamaAttention" }
func (*MLP) TypeName() string          { return "LlamaMLP" }
func (m *Model) ExtraRepr() string     { return "" }
func prefixOf(c *Config) string {
	switch c.ModelType {
	case "qwen2":
		return "Qwen2"
	case "qwen3":
		return "Qwen3"
	case "mistral":
		return "Mistral"
	case "phi3":
		return "Phi3"
	}
	return "Llama"
}

// New makes a model with HF's random initialisation (normal(0,
// initializer_range) weights, unit norms), seeded.
func New(cfg *Config, seed int64) (*Model, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("llama: %w", err)
	}
	s := tensor.NoGradScope()
	defer s.Close()
	tensor.ManualSeed(seed)
	std := cfg.InitializerRange
	m := build(s, cfg, func(in, out int64, bias bool) nn.Layer { return nn.NewLinear(s, in, out, bias, std) },
		func(n, d int64) nn.Layer { return nn.NewEmbedding(s, n, d, std) })
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("llama: init: %w", err)
	}
	if err := nn.Unfreeze(m); err != nil {
		return nil, err
	}
	return m, m.initRope()
}

// Load reads a HF folder: config.json, model.safetensors (or a sharded
// index) and generation_config.json when present. Parameters load
// trainable (PyTorch's default; PEFT methods freeze them) in the dtype the
// options choose — by default the checkpoint's torch_dtype, as
// transformers 5 does — and, on the CPU, a weight stored in that dtype is
// a view of the memory-mapped file rather than a copy (see
// models.LoadOption).
func Load(dir string, opts ...models.LoadOption) (*Model, error) { return load(dir, nil, opts) }

// loadStep changes the skeleton before the checkpoint is copied in
// (LoadQuantized): it returns the keys it reads itself, which LoadState
// then leaves alone, and a step to run once LoadState is done.
type loadStep func(m *Model, set *safetensors.Set) (own func(key string) bool, finish func() error, err error)

func load(dir string, step loadStep, lopts []models.LoadOption) (*Model, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	wf, err := models.OpenWeights(dir, cfg.Raw, lopts)
	if err != nil {
		return nil, fmt.Errorf("llama: %w", err)
	}
	if err := models.CheckLayerCount(wf.Set, "num_hidden_layers", cfg.NumHiddenLayers); err != nil { // before the skeleton is built
		wf.Close()
		return nil, fmt.Errorf("llama: %s: %w", dir, err)
	}
	if err := models.CheckEmbedding(wf.Set, "embed_tokens.weight", cfg.VocabSize, cfg.HiddenSize, "vocab_size", "hidden_size"); err != nil {
		wf.Close()
		return nil, fmt.Errorf("llama: %s: %w", dir, err)
	}
	set := wf.Set
	m, err := skeleton(cfg)
	if err != nil {
		wf.Close()
		return nil, err
	}
	m.dtype, m.device = wf.DType, wf.Spec.Device
	fail := func(err error) (*Model, error) {
		nn.FreeParams(m)
		wf.Close()
		return nil, err
	}
	own, finish := func(string) bool { return false }, func() error { return nil }
	if step != nil {
		if own, finish, err = step(m, set); err != nil {
			return fail(err)
		}
	}
	var opts nn.LoadOptions
	if cfg.TieWordEmbeddings {
		// some tied checkpoints also store lm_head.weight: the tie wins, as in HF
		opts.IgnoreUnexpected = func(k string) bool { return k == "lm_head.weight" }
	}
	// Non-persistent buffers that older transformers versions saved. (The
	// tied-head rule is read once here: reading opts.IgnoreUnexpected inside
	// the closure would call the closure itself, without end.)
	tiedHead := opts.IgnoreUnexpected
	ignoreRotary := func(k string) bool {
		return filepath.Ext(k) == ".inv_freq" || (tiedHead != nil && tiedHead(k))
	}
	opts.IgnoreUnexpected = func(k string) bool { return own(k) || ignoreRotary(k) }
	if err := wf.LoadState(m, opts); err != nil {
		return fail(fmt.Errorf("llama: %w", err))
	}
	if err := finish(); err != nil {
		return fail(err)
	}
	m.weights = wf.Keep()
	m.Path = dir
	if gc, err := os.ReadFile(filepath.Join(dir, "generation_config.json")); err == nil {
		m.GenerationConfig = gc
	}
	return m, m.initRope()
}

// skeleton builds the module tree with uninitialised parameters of the
// right shapes (pages untouched until the checkpoint is copied in).
func skeleton(cfg *Config) (*Model, error) {
	s := tensor.NoGradScope()
	defer s.Close()
	empty := func(shape ...int64) *nn.Param { return nn.Placeholder(s, shape...) }
	m := build(s, cfg,
		func(in, out int64, bias bool) nn.Layer {
			l := &nn.Linear{Weight: empty(out, in)}
			if bias {
				l.Bias = empty(out)
			}
			return l
		},
		func(n, d int64) nn.Layer { return &nn.Embedding{Weight: empty(n, d)} })
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("llama: %w", err)
	}
	return m, nil
}

type linearFn func(in, out int64, bias bool) nn.Layer
type embedFn func(n, d int64) nn.Layer

func build(s *tensor.Scope, cfg *Config, linear linearFn, embed embedFn) *Model {
	h, hd := cfg.HiddenSize, cfg.HeadSize()
	q, kv := cfg.NumAttentionHeads*hd, cfg.NumKeyValueHeads*hd
	qkvBias := cfg.AttentionBias
	oBias := cfg.AttentionBias && cfg.ModelType != "qwen2"
	layers := make([]nn.Module, cfg.NumHiddenLayers)
	for i := range layers {
		attn := &Attention{OProj: linear(q, h, oBias)}
		mlp := &MLP{DownProj: linear(cfg.IntermediateSize, h, false)}
		if cfg.ModelType == "phi3" {
			attn.QKVProj = linear(h, q+2*kv, qkvBias)
			mlp.GateUpProj = linear(h, 2*cfg.IntermediateSize, false)
		} else {
			attn.QProj, attn.KProj, attn.VProj = linear(h, q, qkvBias), linear(h, kv, qkvBias), linear(h, kv, qkvBias)
			mlp.GateProj, mlp.UpProj = linear(h, cfg.IntermediateSize, false), linear(h, cfg.IntermediateSize, false)
		}
		if cfg.ModelType == "qwen3" {
			attn.QNorm, attn.KNorm = nn.NewRMSNorm(s, hd, cfg.RMSNormEps), nn.NewRMSNorm(s, hd, cfg.RMSNormEps)
		}
		layers[i] = &DecoderLayer{
			SelfAttn:               attn,
			MLP:                    mlp,
			InputLayernorm:         nn.NewRMSNorm(s, h, cfg.RMSNormEps),
			PostAttentionLayernorm: nn.NewRMSNorm(s, h, cfg.RMSNormEps),
		}
	}
	emb := embed(cfg.VocabSize, h)
	m := &Model{
		Model:  &Decoder{EmbedTokens: emb, Layers: &nn.ModuleList{Items: layers}, Norm: nn.NewRMSNorm(s, h, cfg.RMSNormEps)},
		Config: cfg,
	}
	if cfg.TieWordEmbeddings {
		m.LMHead = &nn.Linear{Weight: emb.(*nn.Embedding).Weight}
	} else {
		m.LMHead = linear(h, cfg.VocabSize, false)
	}
	return m
}

// initRope reads the rotary embedding (rope_theta, rope_scaling) of the
// config.
func (m *Model) initRope() error {
	r, err := m.Config.Rope()
	if err != nil {
		return fmt.Errorf("llama: %w", err)
	}
	m.rope = r
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
// checkpoint its frozen weights viewed: no tensor of the model (nor a
// handle taken from one of its parameters) may be used afterwards.
func (m *Model) Free() {
	nn.FreeParams(m)
	m.weights.Release()
}

// NumLayers is the number of decoder layers.
func (m *Model) NumLayers() int { return len(m.Model.Layers.Items) }

// Forward runs the model in scope s (the public entry point): see models.Run.
func (m *Model) Forward(s *tensor.Scope, in models.Inputs) (*models.Outputs, error) {
	return models.Run(s, "llama", m.ForwardT, in)
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
	B, L := sh[0], sh[1]
	if len(b.PrefixKV) != 0 && len(b.PrefixKV) != m.NumLayers() {
		return &models.Output{Logits: s.Failf("prefix key/values for %d layers, the model has %d", len(b.PrefixKV), m.NumLayers())}
	}
	var prefixLen int64
	if len(b.PrefixKV) > 0 {
		prefixLen = b.PrefixKV[0].K.Size(2)
	}
	past := b.PastKeyValues.Len() + prefixLen
	T := past + L

	pos := b.PositionIDs
	if pos == nil {
		pos = s.Unsqueeze(s.Arange(tensor.Int64, past, T), 0)
	} else if ps := pos.Shape(); len(ps) != 2 || ps[1] != L || (ps[0] != B && ps[0] != 1) {
		return &models.Output{Logits: s.Failf("position_ids: shape %v, want [%d, %d]", ps, B, L)}
	}
	cos, sin := m.rope.CosSin(s, pos)
	if dt := x.DType(); dt != tensor.Float32 { // HF: cos/sin computed in float32, cast to the activations' dtype
		cos, sin = s.To(cos, dt), s.To(sin, dt)
	}
	mask := m.attentionMask(s, b.AttentionMask, B, L, past, prefixLen, x.DType())
	if s.Err() != nil { // a bad mask or position ids: nothing below may use the nil results
		return &models.Output{}
	}
	if err := b.PastKeyValues.CheckLayers(m.NumLayers()); err != nil {
		return &models.Output{Logits: s.Fail(err)}
	}

	hasPast := b.PastKeyValues.Len() > 0 // before the loop starts filling the cache
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
	for i, item := range m.Model.Layers.Items {
		layer := item.(*DecoderLayer)
		var pastKV, prefix *models.KV
		if hasPast {
			pastKV = &b.PastKeyValues.Layers[i]
		}
		if len(b.PrefixKV) > 0 {
			prefix = &b.PrefixKV[i]
		}
		var newKV *models.KV
		if cache != nil {
			newKV = &cache.Layers[i]
		}
		mark := s.Mark()
		x = ckpt.Layer(s, layer, x, func(s *tensor.Scope, x *tensor.T) *tensor.T {
			return layer.forward(s, cfg, x, cos, sin, mask, pastKV, prefix, newKV)
		}, append([]*tensor.T{cos, sin, mask}, prefix.Tensors()...)...)
		if s.Err() != nil {
			return &models.Output{}
		}
		s.FreeSince(mark, x) // the layer's intermediates: peak memory stays one layer deep

	}
	x = m.Model.Norm.Forward(s, x)
	logits, loss := models.CausalLMHead(s, b, x, m.LMHead)
	return &models.Output{Logits: logits, Loss: loss, PastKeyValues: cache}
}

// attentionMask builds HF's additive mask [B, 1, L, T] in the activations'
// dtype dt: 0 where a query may attend, dt's lowest value where the key is
// in the future or padding, or (Mistral, Phi-3 with sliding_window w) when
// the query is w or more positions after it. It returns nil when nothing
// is masked (one new token, no padding, inside the window).
func (m *Model) attentionMask(s *tensor.Scope, am *tensor.T, B, L, past, prefixLen int64, dt tensor.DType) *tensor.T {
	T := past + L
	var pad *tensor.T
	if am != nil {
		if am.Dim() != 2 || am.Size(0) != B {
			return s.Failf("attention_mask: shape %v, want [%d, %d]", am.Shape(), B, T-prefixLen)
		}
		switch am.Size(1) {
		case T:
		case T - prefixLen:
			am = s.Cat(1, s.Ones(am.DType(), B, prefixLen), am) // prefix positions always attend
		default:
			return s.Failf("attention_mask: shape %v, want [%d, %d]", am.Shape(), B, T-prefixLen)
		}
		if s.Item(s.Sum(s.EqScalar(am, 0), false)) > 0 {
			pad = s.View(s.EqScalar(am, 0), B, 1, 1, T)
		}
	}
	w := m.Config.window()
	windowed := w > 0 && T > w
	if L == 1 && pad == nil && !windowed {
		return nil
	}
	// key j is in the future of query i when j > past + i
	keys := s.Unsqueeze(s.Arange(tensor.Int64, 0, T), 0)       // [1, T]
	queries := s.Unsqueeze(s.Arange(tensor.Int64, past, T), 1) // [L, 1]
	masked := s.Gt(keys, queries)                              // [L, T]
	if windowed {                                              // queries - keys >= w, i.e. queries - w + 1 > keys
		masked = s.LogicalOr(masked, s.Gt(s.AddScalar(queries, float64(1-w)), keys))
	}
	if pad != nil {
		masked = s.LogicalOr(masked, pad) // [B, 1, L, T]
	} else {
		masked = s.View(masked, 1, 1, L, T)
	}
	return s.MaskedFill(s.Zeros(dt, 1, 1, L, T), masked, tensor.Lowest(dt))
}

// forward frees each block's intermediates (their handles; autograd keeps
// what backward needs) as soon as the block's output exists, so that
// inference holds one block's temporaries at a time, not the whole layer's.
func (l *DecoderLayer) forward(s *tensor.Scope, cfg *Config, x, cos, sin, mask *tensor.T, past, prefix, newKV *models.KV) *tensor.T {
	mark := s.Mark()
	h := l.InputLayernorm.Forward(s, x)
	a := l.attention(s, cfg, h, cos, sin, mask, past, prefix, newKV)
	x = s.Add(x, a)
	s.FreeSince(mark, x)
	mark = s.Mark()
	h = l.PostAttentionLayernorm.Forward(s, x)
	g := l.MLP.gated(s, h)
	y := s.Add(x, l.MLP.DownProj.Forward(s, g))
	s.FreeSince(mark, y)
	return y
}

// gated is silu(gate) · up, from gate_proj and up_proj or from the halves
// of Phi-3's gate_up_proj.
func (mlp *MLP) gated(s *tensor.Scope, h *tensor.T) *tensor.T {
	if mlp.GateUpProj != nil {
		gu := mlp.GateUpProj.Forward(s, h)
		n := gu.Size(-1) / 2
		return s.Mul(s.Silu(s.Narrow(gu, -1, 0, n)), s.Narrow(gu, -1, n, n))
	}
	return s.Mul(s.Silu(mlp.GateProj.Forward(s, h)), mlp.UpProj.Forward(s, h))
}

// attention runs the layer's attention module, through its
// models.AttentionWrapper when it has one.
func (l *DecoderLayer) attention(s *tensor.Scope, cfg *Config, h, cos, sin, mask *tensor.T, past, prefix, newKV *models.KV) *tensor.T {
	switch a := l.SelfAttn.(type) {
	case *Attention:
		return a.forward(s, cfg, h, cos, sin, mask, past, prefix, newKV, nil)
	case models.AttentionWrapper:
		inner, ok := a.WrappedAttention().(*Attention)
		if !ok {
			return s.Failf("llama: self_attn: the %s wraps a %s, not a LlamaAttention", nn.TypeName(a), nn.TypeName(a.WrappedAttention()))
		}
		st := &models.AttentionState{}
		out := inner.forward(s, cfg, h, cos, sin, mask, past, prefix, newKV, st)
		if s.Err() != nil {
			return nil
		}
		return a.AdaptAttention(s, st, out)
	}
	return s.Failf("llama: self_attn is a %s, neither a LlamaAttention nor a models.AttentionWrapper", nn.TypeName(l.SelfAttn))
}

// Forward implements nn.Layer so that an attention module fits the
// decoder layer's slot (and a models.AttentionWrapper can wrap it); the
// attention needs the layer's rotary embedding, mask and cache, so it only
// runs inside its decoder layer and this fails the scope.
func (a *Attention) Forward(s *tensor.Scope, _ *tensor.T) *tensor.T {
	return s.Failf("llama: LlamaAttention runs inside its decoder layer (it needs the rotary embedding, mask and cache)")
}

// forward is the attention pass; st, when not nil, receives the state a
// models.AttentionWrapper reads.
func (a *Attention) forward(s *tensor.Scope, cfg *Config, h, cos, sin, mask *tensor.T, past, prefix, newKV *models.KV, st *models.AttentionState) *tensor.T {
	if s.Err() != nil { // a layer before failed the scope (h is nil): no shapes to read
		return nil
	}
	sh := h.Shape()
	B, L := sh[0], sh[1]
	H, KV, D := cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadSize()
	var q, k, v *tensor.T
	if a.QKVProj != nil { // Phi-3: one projection, [q; k; v] along the output
		qkv := a.QKVProj.Forward(s, h)
		q = s.Reshape(s.Narrow(qkv, -1, 0, H*D), B, L, H, D)
		k = s.Reshape(s.Narrow(qkv, -1, H*D, KV*D), B, L, KV, D)
		v = s.Reshape(s.Narrow(qkv, -1, (H+KV)*D, KV*D), B, L, KV, D)
	} else {
		q = s.View(a.QProj.Forward(s, h), B, L, H, D)
		k = s.View(a.KProj.Forward(s, h), B, L, KV, D)
		v = s.View(a.VProj.Forward(s, h), B, L, KV, D)
	}
	if a.QNorm != nil { // Qwen3: RMSNorm over each head's dimensions, before the rotation
		q, k = a.QNorm.Forward(s, q), a.KNorm.Forward(s, k)
	}
	q, k, v = s.Transpose(q, 1, 2), s.Transpose(k, 1, 2), s.Transpose(v, 1, 2)
	q = models.ApplyRotary(s, q, cos, sin)
	k = models.ApplyRotary(s, k, cos, sin)
	if st != nil {
		*st = models.AttentionState{Hidden: h, Query: q, NumHeads: H, NumKVHeads: KV, HeadDim: D,
			KProj: a.KProj, VProj: a.VProj, OProj: a.OProj}
	}
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
	// Scaled and masked in place (matmul's backward does not need its
	// output), and freed once softmax has read them: at a 4×256 prefill
	// each copy of the scores is 8 MiB per layer.
	mark := s.Mark()
	scores := s.Matmul(q, s.Transpose(k, 2, 3))
	s.DivScalar_(scores, math.Sqrt(float64(D)))
	switch {
	case mask == nil:
	case mask.DType() == scores.DType():
		s.Add_(scores, mask)
	default: // a float32 mask promotes half-precision scores, as in HF
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
// generation_config.json when the model has one. Files are written to
// temporary names and renamed.
func (m *Model) Save(dir string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("llama: save: %w", err)
	}
	models.RecordDType(&m.Config.Raw, m)
	cfg, err := m.Config.JSON()
	if err != nil {
		return fmt.Errorf("llama: save config: %w", err)
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
		return fmt.Errorf("llama: save: %w", err)
	}
	return nil
}

var _ models.CausalLM = (*Model)(nil)

// NameOrPath is where the model came from (PEFT records it in
// adapter_config.json as base_model_name_or_path).
func (m *Model) NameOrPath() string { return m.Path }

// ModelType is config.json's model_type ("llama", "qwen2", "qwen3",
// "mistral", "phi3"),
// which PEFT uses to pick default target modules.
func (m *Model) ModelType() string { return m.Config.ModelType }
