package peft

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// Prompt learning (prompt tuning, P-tuning, prefix tuning) changes the
// model's inputs, not its layers: each adapter is a prompt encoder in
// Model.PromptEncoder (PEFT's prompt_encoder ModuleDict) whose output is
// either prepended to the input embeddings or handed to every attention
// layer as a key/value prefix.

// PromptEmbeddingsKey is the one tensor PEFT saves for a prompt-learning
// adapter.
const PromptEmbeddingsKey = "prompt_embeddings"

// ErrNotMergeable is wrapped by the error Merge and MergeAndUnload return
// for adapters that are not weight deltas (prompt tuning, P-tuning, prefix
// tuning).
var ErrNotMergeable = errors.New("not mergeable")

// PromptConfig is implemented by the configs of prompt-learning methods.
// Model never calls their Inject: it builds the adapter's prompt encoder
// with NewPromptEncoder instead.
type PromptConfig interface {
	Config
	// VirtualTokens is the number of virtual tokens an adapter adds
	// (num_virtual_tokens × num_transformer_submodules).
	VirtualTokens() int64
	// NewPromptEncoder fills the config's fields that derive from the model
	// (token_dim, num_layers, num_attention_heads, encoder_hidden_size, as
	// PEFT's _prepare_prompt_learning_config does), checks that the config
	// fits the model, and builds one adapter's prompt encoder: freshly
	// initialised for training, or with inference set — the form PEFT
	// loads saved adapters in — only the table that the saved
	// prompt_embeddings fill.
	NewPromptEncoder(base models.CausalLM, inference bool) (PromptEncoder, error)
}

// PrefixConfig is implemented by prompt configs whose encoder output is a
// key/value prefix for every attention layer (prefix tuning) rather than
// embeddings to prepend.
type PrefixConfig interface {
	PromptConfig
	// PrefixShape is the prefix geometry: decoder layers, key/value heads
	// and head size. The encoder output [P, numLayers·2·numHeads·headDim]
	// holds, for layer l, the keys in block 2l and the values in block 2l+1.
	PrefixShape() (numLayers, numHeads, headDim int64)
}

// PromptEncoder is one adapter's prompt encoder (PEFT's PromptEmbedding,
// PromptEncoder or PrefixEncoder).
type PromptEncoder interface {
	nn.Module
	// Prompt computes the virtual tokens' values for one batch row:
	// [P, token_dim] embeddings (prompt tuning, P-tuning) or
	// [P, num_layers·2·token_dim] key/value prefixes (prefix tuning). This
	// is the tensor PEFT saves as prompt_embeddings. The result belongs to
	// s, or is Table's own tensor.
	Prompt(s *tensor.Scope) *tensor.T
	// Table is the parameter that holds Prompt's values directly (prompt
	// tuning, prefix tuning without projection, every adapter loaded from a
	// file), or nil when Prompt computes them through an encoder network
	// (P-tuning, prefix projection) that is not saved.
	Table() *nn.Param
}

// TaskPromptEncoder is a prompt encoder whose virtual tokens depend on
// each row's task (PEFT's MultitaskPromptEmbedding): the forward needs
// models.Batch.TaskIDs, and the adapter file holds TaskState's tensors
// beside prompt_embeddings (which is Table, the shared table).
type TaskPromptEncoder interface {
	PromptEncoder
	// TaskPrompt computes every row's virtual tokens for its task:
	// taskIDs int64 [B] in, [B, P, token_dim] out (belonging to s).
	TaskPrompt(s *tensor.Scope, taskIDs *tensor.T) *tensor.T
	// TaskState lists the encoder's other saved tensors under their file
	// keys (prefix_task_cols, prefix_task_rows).
	TaskState() []nn.NamedParam
}

// PromptLearningConfig holds the fields every prompt-learning config has
// (PEFT's PromptLearningConfig), with PEFT's JSON names. Method configs
// embed it.
type PromptLearningConfig struct {
	// NumVirtualTokens is the number of virtual tokens (prompt or prefix
	// positions) the adapter learns.
	NumVirtualTokens int `json:"num_virtual_tokens"`
	// TokenDim is the width of a virtual token: the model's hidden size
	// (filled from the model when 0).
	TokenDim int `json:"token_dim"`
	// NumTransformerSubmodules is how many stacks get virtual tokens: 1
	// for decoder-only and encoder-only models (0 becomes 1), 2 for
	// encoder-decoders (which this library does not have).
	NumTransformerSubmodules int `json:"num_transformer_submodules"`
	// NumAttentionHeads is the model's attention head count (filled from
	// the model when 0; prefix tuning shapes its key/values with it).
	NumAttentionHeads int `json:"num_attention_heads"`
	// NumLayers is the model's layer count (filled from the model when 0).
	NumLayers int `json:"num_layers"`
	// Task is PEFT's task_type (CAUSAL_LM by default).
	Task TaskType `json:"task_type"`
	// BaseModelNameOrPath is the base model the adapter was made for;
	// filled from the base model's path when the adapter is added.
	BaseModelNameOrPath string `json:"base_model_name_or_path"`
	// Revision is the base model's revision on the Hub (kept, not used).
	Revision *string `json:"revision"`
}

// TaskType is task_type.
func (c *PromptLearningConfig) TaskType() TaskType { return c.Task }

// BaseModelName is base_model_name_or_path.
func (c *PromptLearningConfig) BaseModelName() string { return c.BaseModelNameOrPath }

// SetBaseModelName sets base_model_name_or_path.
func (c *PromptLearningConfig) SetBaseModelName(n string) { c.BaseModelNameOrPath = n }

// VirtualTokens is num_virtual_tokens × num_transformer_submodules.
func (c *PromptLearningConfig) VirtualTokens() int64 {
	subs := c.NumTransformerSubmodules
	if subs < 1 {
		subs = 1
	}
	return int64(c.NumVirtualTokens) * int64(subs)
}

// Prepare checks the common fields and fills the ones left zero from the
// model's sizes (num_layers, token_dim = hidden_size, num_attention_heads,
// num_transformer_submodules = 1, task_type = CAUSAL_LM), as PEFT does when
// it adds a prompt-learning adapter. Task types CAUSAL_LM, SEQ_CLS,
// TOKEN_CLS and FEATURE_EXTRACTION are supported. It returns the model's
// sizes.
func (c *PromptLearningConfig) Prepare(base models.CausalLM) (models.Dims, error) {
	if c.NumVirtualTokens <= 0 {
		return models.Dims{}, fmt.Errorf("field \"num_virtual_tokens\" must be positive, got %d", c.NumVirtualTokens)
	}
	switch c.Task {
	case "":
		c.Task = CausalLM
	case CausalLM, SeqCls, TokenCls, FeatureExtraction:
	default:
		return models.Dims{}, fmt.Errorf("field \"task_type\": %q is not supported for prompt learning (CAUSAL_LM, SEQ_CLS, TOKEN_CLS, FEATURE_EXTRACTION)", c.Task)
	}
	switch c.NumTransformerSubmodules {
	case 0:
		c.NumTransformerSubmodules = 1
	case 1:
	default:
		return models.Dims{}, fmt.Errorf("field \"num_transformer_submodules\": %d is for encoder-decoder models; decoder-only models use 1", c.NumTransformerSubmodules)
	}
	sized, ok := base.(models.Sized)
	if !ok {
		return models.Dims{}, fmt.Errorf("model %s does not report its sizes (models.Sized), which prompt learning needs", nn.TypeName(base))
	}
	d := sized.Dims()
	if c.NumLayers == 0 {
		c.NumLayers = int(d.NumLayers)
	}
	if c.TokenDim == 0 {
		c.TokenDim = int(d.HiddenSize)
	}
	if c.NumAttentionHeads == 0 {
		c.NumAttentionHeads = int(d.NumAttentionHeads)
	}
	return d, nil
}

// JSONFields sets the common keys of adapter_config.json in out: the keys
// PEFT 0.10 writes for every prompt-learning config.
func (c *PromptLearningConfig) JSONFields(out map[string]any) {
	null := func(n int) any {
		if n == 0 {
			return nil
		}
		return n
	}
	out["num_virtual_tokens"] = c.NumVirtualTokens
	out["token_dim"] = null(c.TokenDim)
	out["num_transformer_submodules"] = null(c.NumTransformerSubmodules)
	out["num_attention_heads"] = null(c.NumAttentionHeads)
	out["num_layers"] = null(c.NumLayers)
	if c.Task != "" {
		out["task_type"] = c.Task
	} else {
		out["task_type"] = nil
	}
	if c.BaseModelNameOrPath != "" {
		out["base_model_name_or_path"] = c.BaseModelNameOrPath
	} else {
		out["base_model_name_or_path"] = nil
	}
	if c.Revision != nil {
		out["revision"] = *c.Revision
	} else {
		out["revision"] = nil
	}
	if _, ok := out["auto_mapping"]; !ok {
		out["auto_mapping"] = nil
	}
	out["inference_mode"] = true
}

// EncodeConfig renders adapter_config.json as PEFT writes it
// (json.dumps(indent=2, sort_keys=True)): keys sorted, two-space indent.
func EncodeConfig(fields map[string]any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(fields); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// callPrompt returns the prompt config and encoder of the call in s (its
// Selection's adapter, else the active one), or nils when the model's
// method is not prompt learning or the call's adapters are off.
func (m *Model) callPrompt(s *tensor.Scope) (PromptConfig, PromptEncoder) {
	if m.PromptEncoder == nil {
		return nil, nil
	}
	names, off := CallAdapters(s, m.active, m.disabled)
	if off || len(names) == 0 {
		return nil, nil
	}
	pc, ok := m.configs[names[0]].(PromptConfig)
	if !ok {
		return nil, nil
	}
	e, ok := m.PromptEncoder.Get(names[0])
	if !ok {
		return nil, nil
	}
	return pc, e.(PromptEncoder)
}

// promptEncoder returns adapter name's prompt encoder.
func (m *Model) promptEncoder(name string) (PromptEncoder, bool) {
	if m.PromptEncoder == nil {
		return nil, false
	}
	e, ok := m.PromptEncoder.Get(name)
	if !ok {
		return nil, false
	}
	return e.(PromptEncoder), true
}

// addPromptAdapter builds cfg's prompt encoder (frozen until SetAdapter).
func (m *Model) addPromptAdapter(name string, cfg PromptConfig, inference bool) error {
	enc, err := cfg.NewPromptEncoder(m.BaseModel.Model, inference)
	if err != nil {
		return err
	}
	if err := nn.Freeze(enc); err != nil {
		nn.FreeParams(enc)
		return err
	}
	if m.PromptEncoder == nil {
		m.PromptEncoder = nn.NewModuleDict()
	}
	m.PromptEncoder.Set(name, enc)
	return nil
}

// setPromptTrainable makes adapter name's prompt encoder the only
// trainable one.
func (m *Model) setPromptTrainable(name string) error {
	if m.PromptEncoder == nil {
		return nil
	}
	for _, k := range m.PromptEncoder.Keys() {
		e, _ := m.PromptEncoder.Get(k)
		if err := nn.SetRequiresGrad(e, k == name); err != nil {
			return err
		}
	}
	return nil
}

// dropPromptEncoder frees adapter name's prompt encoder.
func (m *Model) dropPromptEncoder(name string) {
	if m.PromptEncoder == nil {
		return
	}
	if e, ok := m.PromptEncoder.Get(name); ok {
		nn.FreeParams(e)
		m.PromptEncoder.Delete(name)
	}
	if m.PromptEncoder.Len() == 0 {
		m.PromptEncoder = nil
	}
}

// promptTaskState lists what a TaskPromptEncoder saves beside
// prompt_embeddings (nothing for other encoders).
func (m *Model) promptTaskState(name string) []nn.NamedParam {
	if enc, ok := m.promptEncoder(name); ok {
		if te, ok := enc.(TaskPromptEncoder); ok {
			return te.TaskState()
		}
	}
	return nil
}

// promptEmbeddings is what PEFT saves for a prompt-learning adapter: the
// table itself when there is one (owned false), else the encoder's output
// computed now, detached (owned true: the caller frees it).
func (m *Model) promptEmbeddings(name string) (p *nn.Param, owned bool, err error) {
	enc, ok := m.promptEncoder(name)
	if !ok {
		return nil, false, fmt.Errorf("peft: adapter %q has no prompt encoder", name)
	}
	if t := enc.Table(); t != nil {
		return t, false, nil
	}
	s := tensor.NoGradScope()
	defer s.Close()
	out := s.Copy(s.Detach(enc.Prompt(s)))
	if err := s.Err(); err != nil {
		return nil, false, fmt.Errorf("peft: adapter %q: prompt embeddings: %w", name, err)
	}
	return nn.NewParam(s.Keep(out)), true, nil
}

// promptBatch applies a prompt-learning adapter to a batch, as
// PeftModelForCausalLM.forward and its prepare_inputs_for_generation do.
// While the KV cache is empty (a first call) it injects the virtual tokens:
// prompt tuning / P-tuning prepend P embeddings to inputs_embeds (computed
// from input_ids with the model's embedding layer) and P labels of -100;
// prefix tuning supplies every layer's key/value prefix. With a non-empty
// cache the virtual tokens are already in it and nothing is injected. In
// every call the attention mask (which covers the caller's tokens only)
// gets P ones in front. Explicit position ids are dropped for prompt
// tuning / P-tuning (the model numbers positions 0…P+L−1, as PEFT does)
// and shifted by P for prefix tuning. Other task types differ as PEFT's
// wrappers do (see task.go): no label padding, position ids dropped, token
// type ids prefixed with P zeros (SEQ_CLS, TOKEN_CLS) or dropped.
func (m *Model) promptBatch(s *tensor.Scope, cfg PromptConfig, enc PromptEncoder, b *models.Batch) *models.Batch {
	nb := *b
	var batch int64
	switch {
	case b.InputsEmbeds != nil:
		batch = b.InputsEmbeds.Size(0)
	case b.InputIDs != nil:
		if b.InputIDs.Dim() != 2 {
			s.Failf("peft: input_ids: want [batch, seq], got shape %v", b.InputIDs.Shape())
			return &nb
		}
		batch = b.InputIDs.Size(0)
	default:
		s.Failf("peft: either input_ids or inputs_embeds is required")
		return &nb
	}
	p := cfg.VirtualTokens()
	prefill := b.PastKeyValues.Len() == 0
	if b.AttentionMask != nil {
		nb.AttentionMask = s.Cat(1, s.Ones(b.AttentionMask.DType(), batch, p), b.AttentionMask)
	}
	task := normTask(cfg.TaskType())
	_, isPrefix := cfg.(PrefixConfig)
	switch {
	case task == SeqCls || task == TokenCls:
		nb.PositionIDs = nil
		if b.TokenTypeIDs != nil && !isPrefix && prefill { // the virtual tokens are segment 0
			nb.TokenTypeIDs = s.Cat(1, s.Zeros(b.TokenTypeIDs.DType(), batch, p), b.TokenTypeIDs)
		}
	case task != CausalLM:
		nb.PositionIDs, nb.TokenTypeIDs = nil, nil
	default:
		nb.TokenTypeIDs = nil
	}
	if pre, ok := cfg.(PrefixConfig); ok {
		if b.PositionIDs != nil && task == CausalLM {
			nb.PositionIDs = s.Add(b.PositionIDs, s.Full(b.PositionIDs.DType(), float64(p), 1))
		}
		if prefill {
			if len(b.PrefixKV) > 0 {
				s.Failf("peft: the batch already has prefix key/values; prefix tuning supplies them")
				return &nb
			}
			nb.PrefixKV = m.prefixKV(s, pre, enc)
		}
		return &nb
	}
	nb.PositionIDs = nil
	if !prefill {
		return &nb
	}
	embeds := b.InputsEmbeds
	if embeds == nil {
		emb, ok := m.BaseModel.Model.(models.InputEmbedder)
		if !ok {
			s.Failf("peft: model %s does not expose its input embeddings (models.InputEmbedder)", nn.TypeName(m.BaseModel.Model))
			return &nb
		}
		embeds = emb.InputEmbeddings().Forward(s, b.InputIDs)
	}
	var prompts *tensor.T
	if te, ok := enc.(TaskPromptEncoder); ok {
		if b.TaskIDs == nil {
			s.Failf("peft: %s needs task_ids (one task id per batch row): task_ids cannot be None", cfg.PeftType())
			return &nb
		}
		if ts := b.TaskIDs.Shape(); len(ts) != 1 || ts[0] != batch {
			s.Failf("peft: task_ids: shape %v, want [%d] (one per batch row)", ts, batch)
			return &nb
		}
		prompts = te.TaskPrompt(s, b.TaskIDs)
		if s.Err() != nil {
			return &nb
		}
		if prompts.Dim() != 3 || prompts.Size(0) != batch || prompts.Size(2) != embeds.Size(-1) {
			s.Failf("peft: task prompts %v do not fit input embeddings %v", prompts.Shape(), embeds.Shape())
			return &nb
		}
	} else {
		prompts = enc.Prompt(s)
		if s.Err() != nil {
			return &nb
		}
		if prompts.Dim() != 2 || prompts.Size(1) != embeds.Size(-1) {
			s.Failf("peft: prompt embeddings %v do not fit input embeddings %v", prompts.Shape(), embeds.Shape())
			return &nb
		}
		prompts = s.Expand(s.Unsqueeze(prompts, 0), batch, -1, -1)
	}
	if prompts.DType() != embeds.DType() {
		prompts = s.To(prompts, embeds.DType())
	}
	nb.InputsEmbeds = s.Cat(1, prompts, embeds)
	nb.InputIDs = nil
	if b.Labels != nil && task == CausalLM {
		nb.Labels = s.Cat(1, s.Full(b.Labels.DType(), models.IgnoreIndex, batch, p), b.Labels)
	}
	return &nb
}

// prefixKV splits a prefix encoder's output [P, layers·2·heads·head_dim]
// into per-layer keys and values [1, heads, P, head_dim] in the model's
// dtype (PeftModel.get_prompt's view and permute).
func (m *Model) prefixKV(s *tensor.Scope, cfg PrefixConfig, enc PromptEncoder) []models.KV {
	layers, heads, hd := cfg.PrefixShape()
	p := cfg.VirtualTokens()
	flat := enc.Prompt(s)
	if s.Err() != nil {
		return nil
	}
	if want := layers * 2 * heads * hd; flat.Dim() != 2 || flat.Size(0) != p || flat.Size(1) != want {
		s.Failf("peft: prefix has shape %v, want [%d %d]", flat.Shape(), p, want)
		return nil
	}
	if dt, ok := modelDType(m.BaseModel.Model); ok && flat.DType() != dt {
		flat = s.To(flat, dt)
	}
	kv := s.Permute(s.Reshape(flat, p, layers*2, heads, hd), 1, 2, 0, 3) // [2·layers, heads, P, hd]
	out := make([]models.KV, layers)
	for l := range out {
		out[l] = models.KV{
			K: s.Unsqueeze(s.Select(kv, 0, int64(2*l)), 0),
			V: s.Unsqueeze(s.Select(kv, 0, int64(2*l+1)), 0),
		}
	}
	return out
}

// modelDType is the dtype of the model's input embeddings.
func modelDType(base models.CausalLM) (tensor.DType, bool) {
	emb, ok := base.(models.InputEmbedder)
	if !ok {
		return 0, false
	}
	for _, np := range nn.NamedParams(emb.InputEmbeddings()) {
		return np.Param.DType(), true
	}
	return 0, false
}

// notMergeable is the error for merging a prompt-learning adapter.
func notMergeable(name string, cfg Config) error {
	return fmt.Errorf("peft: adapter %q is %s, which is %w: prompt-learning methods add virtual tokens or key/value prefixes to the inputs and have no weight delta to fold into the base model (Unload gives the base model back)", name, cfg.PeftType(), ErrNotMergeable)
}
