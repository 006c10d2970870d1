// Package bert is the BERT family of encoders (bert-base-*, BioBERT,
// bert-base-chinese, …) loaded from HF checkpoint folders, with HF's module
// names (bert.encoder.layer.0.attention.self.query, classifier, …) so that
// state dicts and PEFT adapters map 1:1 onto the files. It is the encoder
// behind the BitFit, adapter and prompt-tuning papers' experiments.
//
// Three models share one encoder (Model, HF's BertModel):
//
//   - Model: embeddings, encoder and pooler; its output is the last hidden
//     state [B, L, hidden] and the pooled [CLS] vector [B, hidden] (PEFT's
//     FEATURE_EXTRACTION task).
//   - ForSequenceClassification: the pooled vector → dropout → classifier,
//     logits [B, num_labels]; labels give HF's loss for the problem type
//     (regression: MSE; single-label: cross-entropy; multi-label: BCE with
//     logits) (PEFT's SEQ_CLS task).
//   - ForTokenClassification: every token's hidden state → dropout →
//     classifier, logits [B, L, num_labels], cross-entropy ignoring -100
//     (PEFT's TOKEN_CLS task).
//
// The forward pass follows transformers 4.39 (eager attention):
// embeddings = LayerNorm(word + token_type + position) with positions
// past…past+L-1 (past = the prefix length under prefix tuning) unless
// position ids are given and token types 0 unless given; post-LayerNorm
// layers (self-attention query/key/value, attention.output.dense + residual
// + LayerNorm, intermediate.dense + GELU, output.dense + residual +
// LayerNorm); bidirectional attention in which only padded keys are masked,
// by adding (1-mask)·min to the scores (a padded query attends normally);
// the pooler is tanh(dense(h[:, 0])). Prefix key/values (prefix tuning) are
// put in front of every layer's keys and values. An encoder has no KV
// cache.
package bert

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
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
)

// Model is BertModel: embeddings, encoder and (when it has one) pooler.
type Model struct {
	Embeddings *Embeddings `nn:"embeddings"`
	Encoder    *Encoder    `nn:"encoder"`
	Pooler     *Pooler     `nn:"pooler"` // nil without a pooling layer

	Config *Config
	// Path is the folder the model was loaded from (HF's name_or_path).
	Path string

	act      models.ActFn
	training bool
	weights  models.Weights
	device   tensor.Device
}

// Embeddings is BertEmbeddings.
type Embeddings struct {
	WordEmbeddings      nn.Layer `nn:"word_embeddings"`
	PositionEmbeddings  nn.Layer `nn:"position_embeddings"`
	TokenTypeEmbeddings nn.Layer `nn:"token_type_embeddings"`
	LayerNorm           nn.Layer `nn:"LayerNorm"`
}

// Encoder is BertEncoder.
type Encoder struct {
	Layer *nn.ModuleList `nn:"layer"`
}

// Layer is BertLayer.
type Layer struct {
	Attention    *Attention    `nn:"attention"`
	Intermediate *Intermediate `nn:"intermediate"`
	Output       *LayerOutput  `nn:"output"`
}

// Attention is BertAttention: self-attention and its output projection.
type Attention struct {
	Self   *SelfAttention `nn:"self"`
	Output *SelfOutput    `nn:"output"`
}

// SelfAttention is BertSelfAttention.
type SelfAttention struct {
	Query nn.Layer `nn:"query"`
	Key   nn.Layer `nn:"key"`
	Value nn.Layer `nn:"value"`
}

// SelfOutput is BertSelfOutput: dense, then LayerNorm of it plus the
// attention's input.
type SelfOutput struct {
	Dense     nn.Layer `nn:"dense"`
	LayerNorm nn.Layer `nn:"LayerNorm"`
}

// Intermediate is BertIntermediate: dense then the activation.
type Intermediate struct {
	Dense nn.Layer `nn:"dense"`
}

// LayerOutput is BertOutput: dense, then LayerNorm of it plus the
// attention block's output.
type LayerOutput struct {
	Dense     nn.Layer `nn:"dense"`
	LayerNorm nn.Layer `nn:"LayerNorm"`
}

// Pooler is BertPooler: tanh(dense(first token)).
type Pooler struct {
	Dense nn.Layer `nn:"dense"`
}

// ForSequenceClassification is BertForSequenceClassification.
type ForSequenceClassification struct {
	Bert       *Model   `nn:"bert"`
	Classifier nn.Layer `nn:"classifier"`

	training bool
}

// ForTokenClassification is BertForTokenClassification (its encoder has no
// pooler).
type ForTokenClassification struct {
	Bert       *Model   `nn:"bert"`
	Classifier nn.Layer `nn:"classifier"`

	training bool
}

// TypeName prints HF's class names in the module tree.
func (*Model) TypeName() string                     { return "BertModel" }
func (*Embeddings) TypeName() string                { return "BertEmbeddings" }
func (*Encoder) TypeName() string                   { return "BertEncoder" }
func (*Layer) TypeName() string                     { return "BertLayer" }
func (*Attention) TypeName() string                 { return "BertAttention" }
func (*SelfAttention) TypeName() string             { return "BertSelfAttention" }
func (*SelfOutput) TypeName() string                { return "BertSelfOutput" }
func (*Intermediate) TypeName() string              { return "BertIntermediate" }
func (*LayerOutput) TypeName() string               { return "BertOutput" }
func (*Pooler) TypeName() string                    { return "BertPooler" }
func (*ForSequenceClassification) TypeName() string { return "BertForSequenceClassification" }
func (*ForTokenClassification) TypeName() string    { return "BertForTokenClassification" }
func (*Model) ExtraRepr() string                    { return "" }
func (*ForSequenceClassification) ExtraRepr() string {
	return ""
}
func (*ForTokenClassification) ExtraRepr() string { return "" }

// SetTraining switches dropout on or off; nn.SetTraining calls it.
func (m *Model) SetTraining(on bool)                     { m.training = on }
func (m *ForSequenceClassification) SetTraining(on bool) { m.training = on }
func (m *ForTokenClassification) SetTraining(on bool)    { m.training = on }

// HeadOptions adjust a classification head when loading: a base
// checkpoint (bert-base-uncased has no classifier) gets a new, randomly
// initialised head of NumLabels outputs, as HF's from_pretrained(...,
// num_labels=n) does.
type HeadOptions struct {
	// NumLabels overrides config.json's num_labels / id2label (0 keeps it).
	NumLabels int64
	// ProblemType overrides config.json's problem_type ("" keeps it).
	ProblemType string
	// Seed seeds the initialisation of parameters the checkpoint lacks.
	Seed int64
	// Load are the load options (dtype, device, mapping) every family's
	// Load takes; see models.LoadOption.
	Load []models.LoadOption
}

// ---- construction ------------------------------------------------------------

// builder makes layers; init chooses random initialisation (New) or
// uninitialised storage (Load).
type builder struct {
	s    *tensor.Scope
	cfg  *Config
	init bool
}

func (b builder) param(std float64, shape ...int64) *nn.Param {
	if !b.init {
		return nn.Placeholder(b.s, shape...)
	}
	t := b.s.Zeros(tensor.Float32, shape...)
	if std > 0 {
		b.s.Normal(t, 0, std)
	}
	return nn.NewParam(b.s.Keep(t))
}

func (b builder) linear(in, out int64) *nn.Linear {
	return &nn.Linear{Weight: b.param(b.cfg.InitializerRange, out, in), Bias: b.param(0, out)}
}

func (b builder) embedding(n, d int64) *nn.Embedding {
	return &nn.Embedding{Weight: b.param(b.cfg.InitializerRange, n, d)}
}

func (b builder) layerNorm() *nn.LayerNorm {
	return nn.NewLayerNorm(b.s, b.cfg.HiddenSize, b.cfg.LayerNormEps)
}

func (b builder) model(pooler bool) *Model {
	cfg := b.cfg
	h := cfg.HiddenSize
	layers := make([]nn.Module, cfg.NumHiddenLayers)
	for i := range layers {
		layers[i] = &Layer{
			Attention: &Attention{
				Self:   &SelfAttention{Query: b.linear(h, h), Key: b.linear(h, h), Value: b.linear(h, h)},
				Output: &SelfOutput{Dense: b.linear(h, h), LayerNorm: b.layerNorm()},
			},
			Intermediate: &Intermediate{Dense: b.linear(h, cfg.IntermediateSize)},
			Output:       &LayerOutput{Dense: b.linear(cfg.IntermediateSize, h), LayerNorm: b.layerNorm()},
		}
	}
	word := b.embedding(cfg.VocabSize, h)
	if b.init && cfg.PadTokenID != nil && *cfg.PadTokenID >= 0 && *cfg.PadTokenID < cfg.VocabSize {
		b.s.Zero(b.s.Select(word.Weight.T(), 0, *cfg.PadTokenID)) // nn.Embedding(padding_idx=pad_token_id)
	}
	m := &Model{
		Embeddings: &Embeddings{WordEmbeddings: word, PositionEmbeddings: b.embedding(cfg.MaxPositionEmbeddings, h),
			TokenTypeEmbeddings: b.embedding(cfg.TypeVocabSize, h), LayerNorm: b.layerNorm()},
		Encoder: &Encoder{Layer: &nn.ModuleList{Items: layers}},
		Config:  cfg,
	}
	if pooler {
		m.Pooler = &Pooler{Dense: b.linear(h, h)}
	}
	m.act, _ = models.Activation(cfg.HiddenAct)
	return m
}

func newBuilt[T nn.Module](cfg *Config, seed int64, init bool, mk func(b builder) T) (T, error) {
	var zero T
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return zero, fmt.Errorf("bert: %w", err)
	}
	s := tensor.NoGradScope()
	defer s.Close()
	if init {
		tensor.ManualSeed(seed)
	}
	m := mk(builder{s: s, cfg: cfg, init: init})
	if err := s.Err(); err != nil {
		return zero, fmt.Errorf("bert: init: %w", err)
	}
	if init {
		if err := nn.Unfreeze(m); err != nil {
			return zero, err
		}
	}
	return m, nil
}

// NewModel makes a BertModel (with pooler) with HF's random initialisation
// (normal(0, initializer_range) weights and embeddings, the padding row
// zero, zero biases, unit LayerNorms), seeded.
func NewModel(cfg *Config, seed int64) (*Model, error) {
	return newBuilt(cfg, seed, true, func(b builder) *Model { return b.model(true) })
}

// NewForSequenceClassification makes a BertForSequenceClassification with
// cfg.NumLabels outputs and HF's random initialisation, seeded.
func NewForSequenceClassification(cfg *Config, seed int64) (*ForSequenceClassification, error) {
	return newBuilt(cfg, seed, true, func(b builder) *ForSequenceClassification {
		return &ForSequenceClassification{Bert: b.model(true), Classifier: b.linear(cfg.HiddenSize, cfg.NumLabels)}
	})
}

// NewForTokenClassification makes a BertForTokenClassification with
// cfg.NumLabels outputs and HF's random initialisation, seeded.
func NewForTokenClassification(cfg *Config, seed int64) (*ForTokenClassification, error) {
	return newBuilt(cfg, seed, true, func(b builder) *ForTokenClassification {
		return &ForTokenClassification{Bert: b.model(false), Classifier: b.linear(cfg.HiddenSize, cfg.NumLabels)}
	})
}

// ---- loading -----------------------------------------------------------------

// Load reads a HF folder and builds the model its config.json's
// architectures names: BertForSequenceClassification,
// BertForTokenClassification, or else (BertModel, BertForMaskedLM,
// BertForPreTraining, …) the bare encoder BertModel.
func Load(dir string, lopts ...models.LoadOption) (models.Model, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	switch cfg.architecture() {
	case "BertForSequenceClassification":
		return LoadForSequenceClassification(dir, HeadOptions{Load: lopts})
	case "BertForTokenClassification":
		return LoadForTokenClassification(dir, HeadOptions{Load: lopts})
	}
	return LoadModel(dir, lopts...)
}

// LoadModel reads a HF folder as BertModel (any BERT checkpoint: the
// encoder's keys with or without the "bert." prefix; pre-training and
// classification heads in the file are skipped). A checkpoint without a
// pooler gets a randomly initialised one, as in HF.
func LoadModel(dir string, lopts ...models.LoadOption) (*Model, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	if err := preflight(dir, cfg); err != nil {
		return nil, err
	}
	m, err := newBuilt(cfg, 0, false, func(b builder) *Model { return b.model(true) })
	if err != nil {
		return nil, err
	}
	if err := load(dir, m, m, "", 0, lopts); err != nil {
		return nil, err
	}
	return m, nil
}

// LoadForSequenceClassification reads a HF folder as
// BertForSequenceClassification. A checkpoint without a classifier (a base
// BERT) gets a new one of num_labels outputs (opts.NumLabels when given),
// randomly initialised, as HF's from_pretrained does.
func LoadForSequenceClassification(dir string, opts ...HeadOptions) (*ForSequenceClassification, error) {
	cfg, err := headConfig(dir, opts)
	if err != nil {
		return nil, err
	}
	if err := preflight(dir, cfg); err != nil {
		return nil, err
	}
	m, err := newBuilt(cfg, 0, false, func(b builder) *ForSequenceClassification {
		return &ForSequenceClassification{Bert: b.model(true), Classifier: b.linear(cfg.HiddenSize, cfg.NumLabels)}
	})
	if err != nil {
		return nil, err
	}
	if err := load(dir, m, m.Bert, "bert.", seedOf(opts), loadOf(opts)); err != nil {
		return nil, err
	}
	return m, nil
}

// LoadForTokenClassification reads a HF folder as
// BertForTokenClassification (a new classifier when the checkpoint has
// none, as for sequence classification).
func LoadForTokenClassification(dir string, opts ...HeadOptions) (*ForTokenClassification, error) {
	cfg, err := headConfig(dir, opts)
	if err != nil {
		return nil, err
	}
	if err := preflight(dir, cfg); err != nil {
		return nil, err
	}
	m, err := newBuilt(cfg, 0, false, func(b builder) *ForTokenClassification {
		return &ForTokenClassification{Bert: b.model(false), Classifier: b.linear(cfg.HiddenSize, cfg.NumLabels)}
	})
	if err != nil {
		return nil, err
	}
	if err := load(dir, m, m.Bert, "bert.", seedOf(opts), loadOf(opts)); err != nil {
		return nil, err
	}
	return m, nil
}

// preflight compares config.json with the checkpoint's headers before
// anything is built (an absurd num_hidden_layers is an error, not an
// allocation).
func preflight(dir string, cfg *Config) error {
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("bert: %w", err)
	}
	defer set.Close()
	if err := models.CheckLayerCount(set, "num_hidden_layers", cfg.NumHiddenLayers); err != nil {
		return fmt.Errorf("bert: %s: %w", dir, err)
	}
	if err := models.CheckEmbedding(set, "embeddings.word_embeddings.weight", cfg.VocabSize, cfg.HiddenSize, "vocab_size", "hidden_size"); err != nil {
		return fmt.Errorf("bert: %s: %w", dir, err)
	}
	return nil
}

func headConfig(dir string, opts []HeadOptions) (*Config, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	for _, o := range opts {
		if o.NumLabels < 0 {
			return nil, fmt.Errorf("bert: HeadOptions.NumLabels must be positive, got %d", o.NumLabels)
		}
		if o.NumLabels > 0 {
			cfg.NumLabels = o.NumLabels
		}
		if o.ProblemType != "" {
			cfg.ProblemType = o.ProblemType
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bert: %w", err)
	}
	return cfg, nil
}

func loadOf(opts []HeadOptions) []models.LoadOption {
	var out []models.LoadOption
	for _, o := range opts {
		out = append(out, o.Load...)
	}
	return out
}

func seedOf(opts []HeadOptions) int64 {
	if len(opts) > 0 {
		return opts[0].Seed
	}
	return 0
}

// load fills root's parameters from dir's safetensors. The encoder enc
// sits at encPrefix in root ("bert." for the heads); the file may name the
// encoder's keys with or without "bert." (a BertModel checkpoint), and
// LayerNorm parameters by their old names gamma/beta. The pooler and the
// classifier may be missing (randomly initialised, seeded); keys of heads
// the model does not have (cls.*, classifier.*, pooler.* of a model
// without one) and the old position_ids buffer are skipped; any other key
// is an error, as is a missing or misshapen tensor.
func load(dir string, root nn.Module, enc *Model, encPrefix string, seed int64, lopts []models.LoadOption) error {
	wf, err := models.OpenWeights(dir, enc.Config.Raw, lopts)
	if err != nil {
		nn.FreeParams(root)
		return fmt.Errorf("bert: %w", err)
	}
	set := wf.Set
	fail := func(err error) error {
		nn.FreeParams(root)
		wf.Close()
		return fmt.Errorf("bert: %w", err)
	}
	const probe = "embeddings.word_embeddings.weight"
	filePrefix := ""
	switch {
	case has(set, "bert."+probe):
		filePrefix = "bert."
	case has(set, probe):
	default:
		return fail(fmt.Errorf("%s: no %q or %q: not a BERT checkpoint", setName(set, dir), "bert."+probe, probe))
	}
	type plan struct {
		p   *nn.Param
		key string
	}
	var loads []plan
	var missing []nn.NamedParam
	used := map[string]bool{}
	for _, np := range nn.NamedParams(root) {
		name := np.Name
		var cands []string
		if rest, ok := strings.CutPrefix(name, encPrefix); ok {
			cands = []string{filePrefix + rest}
		} else {
			cands = []string{name}
		}
		if strings.HasSuffix(cands[0], "LayerNorm.weight") {
			cands = append(cands, strings.TrimSuffix(cands[0], "weight")+"gamma")
		} else if strings.HasSuffix(cands[0], "LayerNorm.bias") {
			cands = append(cands, strings.TrimSuffix(cands[0], "bias")+"beta")
		}
		key := ""
		for _, c := range cands {
			if has(set, c) {
				key = c
				break
			}
		}
		if key == "" {
			if strings.HasPrefix(name, "classifier.") || strings.Contains(name, "pooler.") {
				missing = append(missing, np)
				continue
			}
			return fail(fmt.Errorf("%s: missing tensor %q", setName(set, dir), cands[0]))
		}
		info, f, _ := set.Info(key)
		if !nn.SameShape(info.Shape, np.Param.Shape()) {
			hint := ""
			if strings.HasPrefix(name, "classifier.") {
				hint = " (num_labels differs: load with HeadOptions.NumLabels for a new head)"
			}
			return fail(fmt.Errorf("%s: tensor %q has shape %v, the model expects %v%s", f.Path(), key, info.Shape, np.Param.Shape(), hint))
		}
		if dt, ok := nn.DTypeOf(info.DType); !ok || (dt != tensor.Float32 && dt != tensor.Float16 && dt != tensor.BFloat16 && dt != tensor.Float64) {
			return fail(fmt.Errorf("%s: tensor %q has dtype %s, the model expects floating-point data", f.Path(), key, info.DType))
		}
		used[key] = true
		loads = append(loads, plan{np.Param, key})
	}
	for _, key := range set.Names() {
		if used[key] || skippable(key, filePrefix) {
			continue
		}
		_, f, _ := set.Info(key)
		return fail(fmt.Errorf("%s: unexpected tensor %q (no such parameter in the model)", f.Path(), key))
	}
	s := tensor.NoGradScope()
	defer s.Close()
	for _, l := range loads {
		t, err := wf.Tensor(s, l.key)
		if err != nil {
			return fail(err)
		}
		s.SetRequiresGrad(t, true)
		l.p.Set(s.Keep(t))
	}
	if len(missing) > 0 { // HF's _init_weights for the new Linear layers
		tensor.ManualSeed(seed)
		s.SetDevice(wf.Spec.Device)
		for _, np := range missing {
			t := s.Zeros(wf.DType, np.Param.Shape()...)
			if !strings.HasSuffix(np.Name, ".bias") {
				s.Normal(t, 0, enc.Config.InitializerRange)
			}
			s.SetRequiresGrad(t, true)
			np.Param.Set(s.Keep(t))
		}
	}
	if err := s.Err(); err != nil {
		return fail(err)
	}
	enc.Path = dir
	enc.weights, enc.device = wf.Keep(), wf.Spec.Device
	return nil
}

// skippable reports keys a BERT checkpoint may hold that the model does not
// load: pre-training heads, the position_ids buffer, and heads or pooler
// weights of another architecture.
func skippable(key, filePrefix string) bool {
	rest := strings.TrimPrefix(key, filePrefix)
	return strings.HasPrefix(key, "cls.") || strings.HasSuffix(key, "position_ids") ||
		strings.HasPrefix(key, "classifier.") || strings.HasPrefix(rest, "pooler.")
}

func has(set *safetensors.Set, key string) bool {
	_, _, ok := set.Info(key)
	return ok
}

func setName(set *safetensors.Set, dir string) string {
	if fs := set.Files(); len(fs) == 1 {
		return fs[0].Path()
	}
	return dir
}

// ---- forward -----------------------------------------------------------------

// Free releases every tensor of the model, then the mapped checkpoint its
// frozen weights viewed.
func (m *Model) Free() {
	nn.FreeParams(m)
	m.weights.Release()
}

// Free releases every tensor of the model.
func (m *ForSequenceClassification) Free() {
	nn.FreeParams(m)
	m.Bert.weights.Release()
}

// Free releases every tensor of the model.
func (m *ForTokenClassification) Free() {
	nn.FreeParams(m)
	m.Bert.weights.Release()
}

// NumLayers is the number of encoder layers.
func (m *Model) NumLayers() int { return len(m.Encoder.Layer.Items) }

// Forward runs the encoder (the public entry point): Outputs has
// LastHiddenState and PoolerOutput.
func (m *Model) Forward(s *tensor.Scope, in models.Inputs) (*models.Outputs, error) {
	return models.Run(s, "bert", m.ForwardT, in)
}

// Forward runs the model (the public entry point): logits [B, num_labels].
func (m *ForSequenceClassification) Forward(s *tensor.Scope, in models.Inputs) (*models.Outputs, error) {
	return models.Run(s, "bert", m.ForwardT, in)
}

// Forward runs the model (the public entry point): logits [B, L, num_labels].
func (m *ForTokenClassification) Forward(s *tensor.Scope, in models.Inputs) (*models.Outputs, error) {
	return models.Run(s, "bert", m.ForwardT, in)
}

// ForwardT runs the encoder in scope s: Output.LastHiddenState [B, L,
// hidden] and (with a pooler) Output.PoolerOutput [B, hidden]. BertModel
// has no head, so labels are an error.
func (m *Model) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	if b.Labels != nil {
		return &models.Output{Logits: s.Failf("labels need a head (BertForSequenceClassification or BertForTokenClassification); BertModel computes no loss")}
	}
	seq, pooled := m.encode(s, b)
	return &models.Output{LastHiddenState: seq, PoolerOutput: pooled}
}

// ForwardT runs the model in scope s: logits [B, num_labels] and, with
// labels, HF's loss for the problem type.
func (m *ForSequenceClassification) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	_, pooled := m.Bert.encode(s, b)
	if s.Err() != nil {
		return &models.Output{}
	}
	if pooled == nil {
		return &models.Output{Logits: s.Failf("sequence classification needs the pooler")}
	}
	cfg := m.Bert.Config
	logits := m.Classifier.Forward(s, dropout(s, pooled, cfg.classifierDropout(), m.training))
	out := &models.Output{Logits: logits}
	if b.Labels != nil {
		out.Loss = sequenceLoss(s, cfg, logits, b.Labels)
	}
	return out
}

// ForwardT runs the model in scope s: logits [B, L, num_labels] and, with
// labels [B, L], the mean cross-entropy over labels != -100.
func (m *ForTokenClassification) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	seq, _ := m.Bert.encode(s, b)
	if s.Err() != nil {
		return &models.Output{}
	}
	cfg := m.Bert.Config
	logits := m.Classifier.Forward(s, dropout(s, seq, cfg.classifierDropout(), m.training))
	out := &models.Output{Logits: logits}
	if b.Labels != nil {
		sh := logits.Shape()
		if ls := b.Labels.Shape(); !nn.SameShape(ls, sh[:2]) {
			out.Loss = s.Failf("labels: shape %v, want %v like the logits (under prompt learning the logits include the virtual tokens: pad the labels with -100)", ls, sh[:2])
			return out
		}
		out.Loss = s.CrossEntropy(s.Reshape(logits, -1, cfg.NumLabels), s.Reshape(s.To(b.Labels, tensor.Int64), -1), models.IgnoreIndex)
	}
	return out
}

// sequenceLoss is BertForSequenceClassification's loss: the problem type
// is the config's, or regression for one label, single-label for int
// labels, multi-label otherwise.
func sequenceLoss(s *tensor.Scope, cfg *Config, logits, labels *tensor.T) *tensor.T {
	B, n := logits.Size(0), cfg.NumLabels
	pt := cfg.ProblemType
	isInt := labels.DType() == tensor.Int64 || labels.DType() == tensor.Int32
	if pt == "" {
		switch {
		case n == 1:
			pt = Regression
		case isInt:
			pt = SingleLabelClassification
		default:
			pt = MultiLabelClassification
		}
	}
	switch pt {
	case Regression:
		if labels.Numel() != B*n {
			return s.Failf("labels: shape %v for regression with %d label(s), want [%d] or [%d %d]", labels.Shape(), n, B, B, n)
		}
		target := s.To(labels, logits.DType())
		if n == 1 {
			return s.MSELoss(s.Reshape(logits, -1), s.Reshape(target, -1))
		}
		return s.MSELoss(logits, s.Reshape(target, B, n))
	case SingleLabelClassification:
		if !isInt || labels.Numel() != B {
			return s.Failf("labels: %s%v for single-label classification, want int64 class ids [%d]", labels.DType(), labels.Shape(), B)
		}
		return s.CrossEntropy(s.Reshape(logits, -1, n), s.Reshape(s.To(labels, tensor.Int64), -1), models.IgnoreIndex)
	default:
		if !nn.SameShape(labels.Shape(), []int64{B, n}) {
			return s.Failf("labels: shape %v for multi-label classification, want [%d %d] targets in [0, 1]", labels.Shape(), B, n)
		}
		return s.BCEWithLogits(logits, s.To(labels, logits.DType()))
	}
}

func dropout(s *tensor.Scope, x *tensor.T, p float64, training bool) *tensor.T {
	if !training || p == 0 {
		return x
	}
	return s.Dropout(x, p, true)
}

// encode runs embeddings, encoder and pooler: the last hidden state and the
// pooled first token (nil without a pooler).
func (m *Model) encode(s *tensor.Scope, b *models.Batch) (seq, pooled *tensor.T) {
	cfg := m.Config
	defer s.SetDevice(s.SetDevice(m.device))
	if m.device.IsCUDA() {
		b.ToDevice(s, m.device)
	}
	emb := m.Embeddings
	if b.PastKeyValues.Len() > 0 || b.UseCache {
		s.Failf("BERT is an encoder: it keeps no key/value cache (prefix key/values go in PrefixKV)")
		return nil, nil
	}
	var x *tensor.T
	switch {
	case b.InputsEmbeds != nil:
		x = b.InputsEmbeds
	case b.InputIDs != nil:
		if b.InputIDs.Dim() != 2 {
			s.Failf("input_ids: want [batch, seq], got shape %v", b.InputIDs.Shape())
			return nil, nil
		}
		x = emb.WordEmbeddings.Forward(s, b.InputIDs)
	default:
		s.Failf("either input_ids or inputs_embeds is required")
		return nil, nil
	}
	if s.Err() != nil {
		return nil, nil
	}
	sh := x.Shape()
	if len(sh) != 3 || sh[2] != cfg.HiddenSize {
		s.Failf("inputs_embeds: want [batch, seq, %d], got %v", cfg.HiddenSize, sh)
		return nil, nil
	}
	B, L := sh[0], sh[1]
	if len(b.PrefixKV) != 0 && len(b.PrefixKV) != m.NumLayers() {
		s.Failf("prefix key/values for %d layers, the model has %d", len(b.PrefixKV), m.NumLayers())
		return nil, nil
	}
	var past int64
	if len(b.PrefixKV) > 0 {
		past = b.PrefixKV[0].K.Size(2)
	}
	T := past + L

	pos := b.PositionIDs
	if pos == nil {
		if T > cfg.MaxPositionEmbeddings {
			s.Failf("%d positions (prefix %d + %d tokens) exceed max_position_embeddings %d", T, past, L, cfg.MaxPositionEmbeddings)
			return nil, nil
		}
		pos = s.Unsqueeze(s.Arange(tensor.Int64, past, T), 0)
	} else if ps := pos.Shape(); len(ps) != 2 || ps[1] != L || (ps[0] != B && ps[0] != 1) {
		s.Failf("position_ids: shape %v, want [%d, %d]", ps, B, L)
		return nil, nil
	}
	tt := b.TokenTypeIDs
	if tt == nil {
		tt = s.Zeros(tensor.Int64, 1, L)
	} else if !nn.SameShape(tt.Shape(), []int64{B, L}) {
		s.Failf("token_type_ids: shape %v, want [%d, %d]", tt.Shape(), B, L)
		return nil, nil
	}
	x = s.Add(s.Add(x, emb.TokenTypeEmbeddings.Forward(s, tt)), emb.PositionEmbeddings.Forward(s, pos))
	x = dropout(s, emb.LayerNorm.Forward(s, x), cfg.HiddenDropoutProb, m.training)

	mask := m.extendedMask(s, b.AttentionMask, x.DType(), B, T, past)
	if s.Err() != nil {
		return nil, nil
	}
	for i, item := range m.Encoder.Layer.Items {
		var prefix *models.KV
		if len(b.PrefixKV) > 0 {
			prefix = &b.PrefixKV[i]
		}
		layer := item.(*Layer)
		mark := s.Mark()
		x = b.Checkpoint.Layer(s, layer, x, func(s *tensor.Scope, x *tensor.T) *tensor.T { // nil: no activation checkpointing
			return m.layer(s, layer, x, mask, prefix)
		}, append([]*tensor.T{mask}, prefix.Tensors()...)...)
		if s.Err() != nil {
			return nil, nil
		}
		s.FreeSince(mark, x) // the layer's intermediates: peak memory stays one layer deep
	}
	seq = x
	if m.Pooler != nil {
		pooled = s.Tanh(m.Pooler.Dense.Forward(s, s.Select(x, 1, 0)))
	}
	return seq, pooled
}

// extendedMask is HF's additive mask (1-mask)·min over the keys, [B, 1, 1,
// T], or nil without an attention mask. A mask over the real tokens only
// gets ones for the prefix positions.
func (m *Model) extendedMask(s *tensor.Scope, am *tensor.T, dt tensor.DType, B, T, prefixLen int64) *tensor.T {
	if am == nil {
		return nil
	}
	if am.Dim() != 2 || am.Size(0) != B || (am.Size(1) != T && am.Size(1) != T-prefixLen) {
		return s.Failf("attention_mask: shape %v, want [%d, %d]", am.Shape(), B, T-prefixLen)
	}
	if am.Size(1) != T {
		am = s.Cat(1, s.Ones(am.DType(), B, prefixLen), am)
	}
	f := s.View(s.To(am, dt), B, 1, 1, T)
	return s.MulScalar(s.AddScalar(s.Neg(f), 1), tensor.Lowest(dt))
}

func (m *Model) layer(s *tensor.Scope, l *Layer, x, mask *tensor.T, prefix *models.KV) *tensor.T {
	cfg := m.Config
	a := m.selfAttention(s, l.Attention.Self, x, mask, prefix)
	a = dropout(s, l.Attention.Output.Dense.Forward(s, a), cfg.HiddenDropoutProb, m.training)
	x = l.Attention.Output.LayerNorm.Forward(s, s.Add(a, x))
	h := m.act(s, l.Intermediate.Dense.Forward(s, x))
	h = dropout(s, l.Output.Dense.Forward(s, h), cfg.HiddenDropoutProb, m.training)
	return l.Output.LayerNorm.Forward(s, s.Add(h, x))
}

func (m *Model) selfAttention(s *tensor.Scope, a *SelfAttention, x, mask *tensor.T, prefix *models.KV) *tensor.T {
	cfg := m.Config
	sh := x.Shape()
	B, L, E := sh[0], sh[1], sh[2]
	H, D := cfg.NumAttentionHeads, cfg.HeadDim()
	heads := func(t *tensor.T) *tensor.T { return s.Transpose(s.View(t, B, L, H, D), 1, 2) } // [B, H, L, D]
	q := heads(a.Query.Forward(s, x))
	k := heads(a.Key.Forward(s, x))
	v := heads(a.Value.Forward(s, x))
	if prefix != nil { // prefix keys/values go first
		pk, pv := prefix.K, prefix.V
		if pk.Size(0) != B {
			pk, pv = s.Expand(pk, B, -1, -1, -1), s.Expand(pv, B, -1, -1, -1)
		}
		k, v = s.Cat(2, pk, k), s.Cat(2, pv, v)
	}
	if s.Err() != nil {
		return nil
	}
	scores := s.MulScalar(s.Matmul(q, s.Transpose(k, 2, 3)), 1/math.Sqrt(float64(D)))
	if mask != nil {
		if mask.DType() != scores.DType() {
			mask = s.To(mask, scores.DType())
		}
		scores = s.Add(scores, mask)
	}
	p := s.Softmax(scores, -1, tensor.Float32)
	if p != nil && p.DType() != v.DType() {
		p = s.To(p, v.DType())
	}
	p = dropout(s, p, cfg.AttentionProbsDropout, m.training)
	return s.Reshape(s.Transpose(s.Matmul(p, v), 1, 2), B, L, E)
}

// ---- saving and reporting ----------------------------------------------------

func save(dir, architecture string, cfg *Config, m nn.Module) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bert: save: %w", err)
	}
	models.RecordDType(&cfg.Raw, m)
	js, err := cfg.JSON(architecture)
	if err != nil {
		return fmt.Errorf("bert: save config: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, "config.json"), append(js, '\n')); err != nil {
		return fmt.Errorf("bert: %w", err)
	}
	if err := nn.SaveState(m, filepath.Join(dir, "model.safetensors"), map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("bert: save: %w", err)
	}
	return nil
}

// Save writes the model as a HF folder (config.json with architectures
// BertModel, model.safetensors with the encoder's keys unprefixed, as
// BertModel.save_pretrained writes them), atomically per file.
func (m *Model) Save(dir string) error { return save(dir, "BertModel", m.Config, m) }

// Save writes the model as a HF folder that transformers loads as
// BertForSequenceClassification.
func (m *ForSequenceClassification) Save(dir string) error {
	return save(dir, "BertForSequenceClassification", m.Bert.Config, m)
}

// Save writes the model as a HF folder that transformers loads as
// BertForTokenClassification.
func (m *ForTokenClassification) Save(dir string) error {
	return save(dir, "BertForTokenClassification", m.Bert.Config, m)
}

// NumLabels is the classifier's output width (models.Classifier).
func (m *ForSequenceClassification) NumLabels() int64 { return m.Bert.Config.NumLabels }

// PerToken is false: one prediction per sequence (models.Classifier).
func (m *ForSequenceClassification) PerToken() bool { return false }

// NumLabels is the classifier's output width (models.Classifier).
func (m *ForTokenClassification) NumLabels() int64 { return m.Bert.Config.NumLabels }

// PerToken is true: one prediction per token (models.Classifier).
func (m *ForTokenClassification) PerToken() bool { return true }

// NameOrPath is where the model came from (PEFT records it in
// adapter_config.json as base_model_name_or_path).
func (m *Model) NameOrPath() string                     { return m.Path }
func (m *ForSequenceClassification) NameOrPath() string { return m.Bert.Path }
func (m *ForTokenClassification) NameOrPath() string    { return m.Bert.Path }

// ModelType is config.json's model_type ("bert"), which PEFT uses to pick
// default target modules.
func (m *Model) ModelType() string                     { return m.Config.ModelType }
func (m *ForSequenceClassification) ModelType() string { return m.Bert.Config.ModelType }
func (m *ForTokenClassification) ModelType() string    { return m.Bert.Config.ModelType }

// Dims reports the encoder's sizes (models.Sized).
func (m *Model) Dims() models.Dims {
	c := m.Config
	return models.Dims{
		HiddenSize:        c.HiddenSize,
		NumLayers:         int64(m.NumLayers()),
		NumAttentionHeads: c.NumAttentionHeads,
		NumKeyValueHeads:  c.NumAttentionHeads,
		HeadDim:           c.HeadDim(),
		VocabSize:         c.VocabSize,
	}
}
func (m *ForSequenceClassification) Dims() models.Dims { return m.Bert.Dims() }
func (m *ForTokenClassification) Dims() models.Dims    { return m.Bert.Dims() }

// InputEmbeddings is embeddings.word_embeddings (models.InputEmbedder).
func (m *Model) InputEmbeddings() nn.Layer                     { return m.Embeddings.WordEmbeddings }
func (m *ForSequenceClassification) InputEmbeddings() nn.Layer { return m.Bert.InputEmbeddings() }
func (m *ForTokenClassification) InputEmbeddings() nn.Layer    { return m.Bert.InputEmbeddings() }

var (
	_ models.Model         = (*Model)(nil)
	_ models.Classifier    = (*ForSequenceClassification)(nil)
	_ models.Classifier    = (*ForTokenClassification)(nil)
	_ models.Sized         = (*ForSequenceClassification)(nil)
	_ models.InputEmbedder = (*ForSequenceClassification)(nil)
	_ models.Sized         = (*ForTokenClassification)(nil)
	_ models.InputEmbedder = (*ForTokenClassification)(nil)
	_ models.Sized         = (*Model)(nil)
	_ models.InputEmbedder = (*Model)(nil)
)
