// Package gpt2 is the GPT-2 family of decoders (openai-community/gpt2,
// distilgpt2, DialoGPT, uer/gpt2-chinese-*, …) loaded from HF checkpoint
// folders, with HF's module names (transformer.h.0.attn.c_attn, …) so that
// state dicts and PEFT adapters map 1:1 onto the files.
//
// The forward pass follows transformers 4.39's GPT2LMHeadModel (eager
// attention): learned token (wte) and position (wpe) embeddings — so left
// padding needs position ids derived from the mask, which the caller passes
// in Batch.PositionIDs as generate does (cumsum(mask)-1, padded slots 1),
// while without them positions are past…past+L-1 for every row, as HF's
// forward() does; pre-LayerNorm blocks (ln_1, ln_2, ln_f); GPT-2's Conv1D
// layers, whose weights are stored [in, out] (what PEFT's fan_in_fan_out
// is for); a fused c_attn projection laid out [q | k | v]; causal masking
// with torch.where(causal, scores, min) and then the padding mask added as
// (1-mask)·min, exactly as HF does, so outputs at padded positions match
// too; fp32 softmax; gelu_new; and lm_head tied to wte. Labels give HF's
// shifted cross-entropy ignoring -100. Token type ids, when given, are
// embedded with wte and added, as GPT2Model does.
//
// Key/value caches and prefix key/values use the library's layout
// [B, heads, T, head_dim] (HF's layout for GPT-2).
package gpt2

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/gopeft/peft/internal/fsutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// Model is GPT2LMHeadModel.
type Model struct {
	Transformer *Transformer `nn:"transformer"`
	LMHead      nn.Layer     `nn:"lm_head"`

	Config *Config
	// Path is the folder the model was loaded from (HF's name_or_path).
	Path string
	// GenerationConfig is generation_config.json as read (nil if absent).
	GenerationConfig []byte

	act      models.ActFn
	training bool
	weights  models.Weights
	device   tensor.Device
}

// Transformer is GPT2Model.
type Transformer struct {
	Wte nn.Layer       `nn:"wte"`
	Wpe nn.Layer       `nn:"wpe"`
	H   *nn.ModuleList `nn:"h"`
	LnF nn.Layer       `nn:"ln_f"`
}

// Block is GPT2Block.
type Block struct {
	Ln1  nn.Layer   `nn:"ln_1"`
	Attn *Attention `nn:"attn"`
	Ln2  nn.Layer   `nn:"ln_2"`
	MLP  *MLP       `nn:"mlp"`
}

// Attention is GPT2Attention: the fused c_attn (Conv1D n_embd → 3·n_embd)
// and the output projection c_proj.
type Attention struct {
	CAttn nn.Layer `nn:"c_attn"`
	CProj nn.Layer `nn:"c_proj"`
}

// MLP is GPT2MLP.
type MLP struct {
	CFc   nn.Layer `nn:"c_fc"`
	CProj nn.Layer `nn:"c_proj"`
}

// TypeName prints HF's class names in the module tree.
func (*Model) TypeName() string       { return "GPT2LMHeadModel" }
func (*Transformer) TypeName() string { return "GPT2Model" }
func (*Block) TypeName() string       { return "GPT2Block" }
func (*Attention) TypeName() string   { return "GPT2Attention" }
func (*MLP) TypeName() string         { return "GPT2MLP" }
func (*Model) ExtraRepr() string      { return "" }

// SetTraining switches dropout (embd_pdrop, attn_pdrop, resid_pdrop) on or
// off; nn.SetTraining calls it.
func (m *Model) SetTraining(on bool) { m.training = on }

// New makes a model with HF's random initialisation (normal(0,
// initializer_range) weights — c_proj weights with std
// initializer_range/√(2·n_layer), as GPT-2's _init_weights does — zero
// biases, unit LayerNorms), seeded.
func New(cfg *Config, seed int64) (*Model, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gpt2: %w", err)
	}
	s := tensor.NoGradScope()
	defer s.Close()
	tensor.ManualSeed(seed)
	normal := func(std float64, shape ...int64) *nn.Param {
		t := s.Zeros(tensor.Float32, shape...)
		s.Normal(t, 0, std)
		return nn.NewParam(s.Keep(t))
	}
	std := cfg.InitializerRange
	projStd := std / math.Sqrt(float64(2*cfg.NLayer))
	m := build(s, cfg, func(in, out int64, proj bool) *nn.Conv1D {
		sd := std
		if proj {
			sd = projStd
		}
		return &nn.Conv1D{Weight: normal(sd, in, out), Bias: nn.NewParam(s.Keep(s.Zeros(tensor.Float32, out)))}
	}, func(n, d int64) *nn.Embedding { return &nn.Embedding{Weight: normal(std, n, d)} })
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("gpt2: init: %w", err)
	}
	if err := nn.Unfreeze(m); err != nil {
		return nil, err
	}
	return m, nil
}

// Load reads a HF folder: config.json, model.safetensors (or a sharded
// index) and generation_config.json when present. Checkpoints saved from
// GPT2Model (openai-community/gpt2 and its siblings: keys without the
// "transformer." prefix, with the attn.bias / attn.masked_bias buffers)
// load too. Parameters load trainable (PyTorch's default; PEFT methods
// freeze them) in the dtype and on the device the options choose
// (models.LoadOption: by default the checkpoint's torch_dtype, on the CPU,
// frozen weights as views of the mapped file).
func Load(dir string, lopts ...models.LoadOption) (*Model, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	wf, err := models.OpenWeights(dir, cfg.Raw, lopts)
	if err != nil {
		return nil, fmt.Errorf("gpt2: %w", err)
	}
	if err := models.CheckLayerCount(wf.Set, "n_layer", cfg.NLayer); err != nil { // before the skeleton is built
		wf.Close()
		return nil, fmt.Errorf("gpt2: %s: %w", dir, err)
	}
	if err := models.CheckEmbedding(wf.Set, "wte.weight", cfg.VocabSize, cfg.NEmbd, "vocab_size", "n_embd"); err != nil {
		wf.Close()
		return nil, fmt.Errorf("gpt2: %s: %w", dir, err)
	}
	set := wf.Set
	m, err := skeleton(cfg)
	if err != nil {
		wf.Close()
		return nil, err
	}
	m.device = wf.Spec.Device
	opts := nn.LoadOptions{IgnoreUnexpected: func(k string) bool {
		// the causal-mask buffers of old checkpoints; a tied lm_head also
		// stored in the file (the tie wins, as in HF)
		return strings.HasSuffix(k, ".attn.bias") || strings.HasSuffix(k, ".attn.masked_bias") ||
			(cfg.TieWordEmbeddings && k == "lm_head.weight")
	}}
	var target nn.Module = m
	_, _, prefixed := set.Info("transformer.wte.weight")
	if _, _, bare := set.Info("wte.weight"); bare && !prefixed && cfg.TieWordEmbeddings {
		target = m.Transformer // a GPT2Model checkpoint
	}
	if err := wf.LoadState(target, opts); err != nil {
		nn.FreeParams(m)
		wf.Close()
		return nil, fmt.Errorf("gpt2: %w", err)
	}
	m.weights = wf.Keep()
	m.Path = dir
	if gc, err := os.ReadFile(filepath.Join(dir, "generation_config.json")); err == nil {
		m.GenerationConfig = gc
	}
	return m, nil
}

// skeleton builds the module tree with uninitialised parameters of the
// right shapes (pages untouched until the checkpoint is copied in).
func skeleton(cfg *Config) (*Model, error) {
	s := tensor.NoGradScope()
	defer s.Close()
	empty := func(shape ...int64) *nn.Param { return nn.Placeholder(s, shape...) }
	m := build(s, cfg,
		func(in, out int64, _ bool) *nn.Conv1D { return &nn.Conv1D{Weight: empty(in, out), Bias: empty(out)} },
		func(n, d int64) *nn.Embedding { return &nn.Embedding{Weight: empty(n, d)} })
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("gpt2: %w", err)
	}
	return m, nil
}

func build(s *tensor.Scope, cfg *Config, conv func(in, out int64, proj bool) *nn.Conv1D, embed func(n, d int64) *nn.Embedding) *Model {
	h, inner := cfg.NEmbd, cfg.Inner()
	ln := func() nn.Layer { return nn.NewLayerNorm(s, h, cfg.LayerNormEpsilon) }
	blocks := make([]nn.Module, cfg.NLayer)
	for i := range blocks {
		blocks[i] = &Block{
			Ln1:  ln(),
			Attn: &Attention{CAttn: conv(h, 3*h, false), CProj: conv(h, h, true)},
			Ln2:  ln(),
			MLP:  &MLP{CFc: conv(h, inner, false), CProj: conv(inner, h, true)},
		}
	}
	wte := embed(cfg.VocabSize, h)
	m := &Model{
		Transformer: &Transformer{Wte: wte, Wpe: embed(cfg.NPositions, h), H: &nn.ModuleList{Items: blocks}, LnF: ln()},
		Config:      cfg,
	}
	m.act, _ = models.Activation(cfg.ActivationFunction)
	if cfg.TieWordEmbeddings {
		m.LMHead = &nn.Linear{Weight: wte.Weight}
	} else {
		w := embed(cfg.VocabSize, h) // lm_head: Linear(n_embd, vocab, bias=False), weight [vocab, n_embd]
		m.LMHead = &nn.Linear{Weight: w.Weight}
	}
	return m
}

// Free releases every tensor of the model, then the mapped checkpoint
// its frozen weights viewed.
func (m *Model) Free() {
	nn.FreeParams(m)
	m.weights.Release()
}

// NumLayers is the number of blocks.
func (m *Model) NumLayers() int { return len(m.Transformer.H.Items) }

// Forward runs the model in scope s (the public entry point): see models.Run.
func (m *Model) Forward(s *tensor.Scope, in models.Inputs) (*models.Outputs, error) {
	return models.Run(s, "gpt2", m.ForwardT, in)
}

// ForwardT runs the model in scope s. Intermediates stay in s; the new cache
// (when b.UseCache) owns its tensors.
func (m *Model) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	cfg := m.Config
	defer s.SetDevice(s.SetDevice(m.device))
	if m.device.IsCUDA() {
		b.ToDevice(s, m.device)
	}
	tr := m.Transformer
	var x *tensor.T
	switch {
	case b.InputsEmbeds != nil:
		x = b.InputsEmbeds
	case b.InputIDs != nil:
		if b.InputIDs.Dim() != 2 {
			return &models.Output{Logits: s.Failf("input_ids: want [batch, seq], got shape %v", b.InputIDs.Shape())}
		}
		x = tr.Wte.Forward(s, b.InputIDs)
	default:
		return &models.Output{Logits: s.Failf("either input_ids or inputs_embeds is required")}
	}
	if s.Err() != nil {
		return &models.Output{}
	}
	sh := x.Shape()
	if len(sh) != 3 || sh[2] != cfg.NEmbd {
		return &models.Output{Logits: s.Failf("inputs_embeds: want [batch, seq, %d], got %v", cfg.NEmbd, sh)}
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
		if T > cfg.NPositions {
			return &models.Output{Logits: s.Failf("%d positions (past %d + %d tokens) exceed n_positions %d", T, past, L, cfg.NPositions)}
		}
		pos = s.Unsqueeze(s.Arange(tensor.Int64, past, T), 0)
	} else if ps := pos.Shape(); len(ps) != 2 || ps[1] != L || (ps[0] != B && ps[0] != 1) {
		return &models.Output{Logits: s.Failf("position_ids: shape %v, want [%d, %d]", ps, B, L)}
	}
	x = s.Add(x, tr.Wpe.Forward(s, pos))
	if tt := b.TokenTypeIDs; tt != nil {
		if !nn.SameShape(tt.Shape(), []int64{B, L}) {
			return &models.Output{Logits: s.Failf("token_type_ids: shape %v, want [%d, %d]", tt.Shape(), B, L)}
		}
		x = s.Add(x, tr.Wte.Forward(s, tt))
	}
	x = m.dropout(s, x, cfg.EmbdPdrop)

	causal, padding := m.masks(s, b.AttentionMask, x.DType(), B, L, past, prefixLen)
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
	for i, item := range tr.H.Items {
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
			return m.block(s, i, block, x, causal, padding, pastKV, prefix, newKV)
		}, append([]*tensor.T{causal, padding}, prefix.Tensors()...)...)
		if s.Err() != nil {
			return &models.Output{}
		}
		s.FreeSince(mark, x) // the block's intermediates: peak memory stays one block deep
	}
	x = tr.LnF.Forward(s, x)
	logits, loss := models.CausalLMHead(s, b, x, m.LMHead)
	return &models.Output{Logits: logits, Loss: loss, PastKeyValues: cache}
}

// masks returns the causal mask (true where key j lies in query i's
// future, [1, 1, L, T]; nil for a single new token) and the additive
// padding mask (1-mask)·min [B, 1, 1, T] (nil without an attention mask).
// The caller's mask covers every key position, or all but the prefix (the
// prefix always attends).
func (m *Model) masks(s *tensor.Scope, am *tensor.T, dt tensor.DType, B, L, past, prefixLen int64) (causal, padding *tensor.T) {
	T := past + L
	if L > 1 {
		keys := s.Unsqueeze(s.Arange(tensor.Int64, 0, T), 0)       // [1, T]
		queries := s.Unsqueeze(s.Arange(tensor.Int64, past, T), 1) // [L, 1]
		causal = s.View(s.Gt(keys, queries), 1, 1, L, T)
	}
	if am == nil {
		return causal, nil
	}
	if am.Dim() != 2 || am.Size(0) != B || (am.Size(1) != T && am.Size(1) != T-prefixLen) {
		s.Failf("attention_mask: shape %v, want [%d, %d]", am.Shape(), B, T-prefixLen)
		return nil, nil
	}
	if am.Size(1) != T {
		am = s.Cat(1, s.Ones(am.DType(), B, prefixLen), am)
	}
	f := s.View(s.To(am, dt), B, 1, 1, T)
	padding = s.MulScalar(s.AddScalar(s.Neg(f), 1), tensor.Lowest(dt))
	return causal, padding
}

func (m *Model) dropout(s *tensor.Scope, x *tensor.T, p float64) *tensor.T {
	if !m.training || p == 0 {
		return x
	}
	return s.Dropout(x, p, true)
}

func (m *Model) block(s *tensor.Scope, idx int, l *Block, x, causal, padding *tensor.T, past, prefix, newKV *models.KV) *tensor.T {
	mark := s.Mark()
	a := m.attention(s, idx, l.Attn, l.Ln1.Forward(s, x), causal, padding, past, prefix, newKV)
	x = s.Add(a, x)
	s.FreeSince(mark, x) // the attention block's intermediates (autograd keeps what it needs)
	f := l.MLP.CProj.Forward(s, m.act(s, l.MLP.CFc.Forward(s, l.Ln2.Forward(s, x))))
	return s.Add(x, m.dropout(s, f, m.Config.ResidPdrop))
}

func (m *Model) attention(s *tensor.Scope, idx int, a *Attention, h, causal, padding *tensor.T, past, prefix, newKV *models.KV) *tensor.T {
	cfg := m.Config
	sh := h.Shape()
	if len(sh) != 3 {
		return s.Failf("attention: hidden states of shape %v", sh)
	}
	B, L, E := sh[0], sh[1], sh[2]
	H, D := cfg.NHead, cfg.HeadDim()
	qkv := a.CAttn.Forward(s, h) // [B, L, 3E]: q | k | v
	heads := func(t *tensor.T) *tensor.T { return s.Transpose(s.View(s.Contiguous(t), B, L, H, D), 1, 2) }
	q := heads(s.Narrow(qkv, 2, 0, E))
	k := heads(s.Narrow(qkv, 2, E, E))
	v := heads(s.Narrow(qkv, 2, 2*E, E))
	k, v = models.AttendKV(s, prefix, past, newKV, k, v) // prefix keys/values go first
	if s.Err() != nil {
		return nil
	}
	dt := q.DType()
	if cfg.ReorderAndUpcastAttn && dt != tensor.Float32 {
		q, k = s.To(q, tensor.Float32), s.To(k, tensor.Float32)
	}
	scores := s.Matmul(q, s.Transpose(k, 2, 3))
	scale := 1.0
	if cfg.ScaleAttnWeights {
		scale /= math.Sqrt(float64(D))
	}
	if cfg.ScaleAttnByInverseLayerIdx {
		scale /= float64(idx + 1)
	}
	if scale != 1 {
		scores = s.MulScalar(scores, scale)
	}
	sdt := scores.DType()
	if causal != nil {
		scores = s.MaskedFill(scores, causal, tensor.Lowest(sdt)) // where(causal, scores, min)
	}
	if padding != nil {
		if padding.DType() != sdt {
			padding = s.To(padding, sdt)
		}
		scores = s.Add(scores, padding) // doubly masked keys become -inf, as in HF
	}
	p := s.Softmax(scores, -1, tensor.Float32)
	if p != nil && p.DType() != v.DType() {
		p = s.To(p, v.DType())
	}
	p = m.dropout(s, p, cfg.AttnPdrop)
	o := s.Reshape(s.Transpose(s.Matmul(p, v), 1, 2), B, L, E)
	return m.dropout(s, a.CProj.Forward(s, o), cfg.ResidPdrop)
}

// Save writes the model as a HF folder that transformers can load:
// config.json, model.safetensors (tied lm_head omitted, as HF does) and
// generation_config.json when the model has one. Files are written to
// temporary names and renamed.
func (m *Model) Save(dir string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("gpt2: save: %w", err)
	}
	models.RecordDType(&m.Config.Raw, m)
	cfg, err := m.Config.JSON()
	if err != nil {
		return fmt.Errorf("gpt2: save config: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, "config.json"), append(cfg, '\n')); err != nil {
		return fmt.Errorf("gpt2: %w", err)
	}
	if m.GenerationConfig != nil {
		if err := fsutil.WriteFileAtomic(filepath.Join(dir, "generation_config.json"), m.GenerationConfig); err != nil {
			return fmt.Errorf("gpt2: %w", err)
		}
	}
	if err := nn.SaveState(m, filepath.Join(dir, "model.safetensors"), map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("gpt2: save: %w", err)
	}
	return nil
}

// NameOrPath is where the model came from (PEFT records it in
// adapter_config.json as base_model_name_or_path).
func (m *Model) NameOrPath() string { return m.Path }

// ModelType is config.json's model_type ("gpt2"), which PEFT uses to pick
// default target modules.
func (m *Model) ModelType() string { return m.Config.ModelType }

// Dims reports the model's sizes (models.Sized).
func (m *Model) Dims() models.Dims {
	c := m.Config
	return models.Dims{
		HiddenSize:        c.NEmbd,
		NumLayers:         int64(m.NumLayers()),
		NumAttentionHeads: c.NHead,
		NumKeyValueHeads:  c.NHead,
		HeadDim:           c.HeadDim(),
		VocabSize:         c.VocabSize,
	}
}

// InputEmbeddings is transformer.wte (models.InputEmbedder).
func (m *Model) InputEmbeddings() nn.Layer { return m.Transformer.Wte }

// PositionIDs returns generate's position ids for a left-padded batch's
// attention mask (int64 [B, L]): cumsum(mask)-1 along each row, with
// padded slots set to 1 (HF's prepare_inputs_for_generation), so every
// row's first real token gets position 0. GPT-2's learned positions need
// them for left padding: pass them as Inputs.PositionIDs. The result is
// owned by s.
func PositionIDs(s *tensor.Scope, mask *tensor.T) (*tensor.T, error) {
	pos := PositionIDsT(s, mask)
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("gpt2: position ids: %w", err)
	}
	return pos, nil
}

// PositionIDsT is PositionIDs in scope s (the library's internal form).
func PositionIDsT(s *tensor.Scope, mask *tensor.T) *tensor.T {
	if mask == nil {
		return s.Failf("gpt2: position ids need an attention mask")
	}
	if mask.Dim() != 2 {
		return s.Failf("attention_mask: want [batch, seq], got shape %v", mask.Shape())
	}
	if mask.DType() != tensor.Int64 {
		mask = s.To(mask, tensor.Int64)
	}
	pos := s.AddScalar(s.Cumsum(mask, 1), -1) // a float scalar makes the sum float
	return s.To(s.MaskedFill(pos, s.EqScalar(mask, 0), 1), tensor.Int64)
}

var (
	_ models.CausalLM      = (*Model)(nil)
	_ models.Sized         = (*Model)(nil)
	_ models.InputEmbedder = (*Model)(nil)
)
