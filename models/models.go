// Package models holds what every model family of the library shares: the
// inputs and outputs of a forward pass, the key/value cache, and the Model
// interface (with its decoder flavour CausalLM and its encoder flavour
// Classifier) that methods (prompt tuning, prefix tuning), training and
// generation program against.
//
// A forward pass takes one Inputs value (token ids or embeddings, attention
// mask, token type ids, position ids, KV cache, per-layer prefix
// key/values, labels) and returns Outputs (logits, loss, new cache, and for
// encoders the hidden states). The public Forward(s, in) runs in the
// caller's tensor.Scope: the inputs are borrowed and the outputs belong to
// s (package tensor states the memory rules). Families live in sub-packages
// (models/llama, models/bloom, models/gpt2, models/bert) and know nothing
// of PEFT.
//
// Checkpoint is activation checkpointing per decoder layer for training:
// set on a Batch, it keeps only each layer's input in the forward pass and
// recomputes the layer in its Backward.
package models

import (
	"fmt"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// IgnoreIndex is the label that the loss skips (prompt tokens, padding).
const IgnoreIndex = -100

// Inputs is the public form of a forward pass's inputs (see Forward). Its
// tensors are borrowed: the caller keeps ownership, and the forward never
// frees or changes them.
type Inputs struct {
	InputIDs      *tensor.T // int64 [B, L]; or InputsEmbeds
	InputsEmbeds  *tensor.T // [B, L, hidden], instead of InputIDs
	AttentionMask *tensor.T // int64 [B, past+L]: 1 = attend, 0 = padding; nil = all ones
	TokenTypeIDs  *tensor.T // int64 [B, L] segment ids (BERT; GPT-2 embeds them with wte); nil = zeros / none
	PositionIDs   *tensor.T // int64 [B, L]; nil = past…past+L-1 as HF's forward()
	PastKeyValues *Cache    // cache from an earlier call (extended in place when UseCache)
	PrefixKV      []KV      // per-layer prefix keys/values [B or 1, kv_heads, P, head_dim]
	Labels        *tensor.T // causal LM: int64 [B, L], -100 = ignore (shifted mean cross-entropy); classifiers: see Classifier
	UseCache      bool      // return the key/value cache
	// TaskIDs (int64 [B]) is each row's task for methods that condition on
	// it (PEFT's forward(..., task_ids=...): multitask prompt tuning); the
	// families ignore it.
	TaskIDs *tensor.T
}

// Outputs is the public form of a forward pass's outputs: the same value
// as the internal Output. Its tensors belong to the scope passed to
// Forward (freed at its Close; Scope.Keep takes one out); a cache the call
// created owns its tensors: Free it.
type Outputs = Output

// Batch is the internal form of Inputs (tensors of the op layer).
type Batch struct {
	InputIDs      *tensor.T
	InputsEmbeds  *tensor.T
	AttentionMask *tensor.T
	TokenTypeIDs  *tensor.T
	PositionIDs   *tensor.T
	PastKeyValues *Cache
	PrefixKV      []KV
	Labels        *tensor.T
	UseCache      bool
	// TaskIDs is Inputs.TaskIDs: each row's task (int64 [B]) for methods
	// that condition on it; the families ignore it.
	TaskIDs *tensor.T
	// LastLogitsOnly computes the logits of the last position only,
	// [B, 1, vocab] (generation's prefill needs no others); ignored when
	// Labels are given.
	LastLogitsOnly bool
	// LossOnly asks a causal LM for its loss without the full logits when
	// Labels are given (training, evaluation): the head runs in chunks of
	// positions and Output.Logits is nil. A head with trainable
	// parameters keeps the plain path (logits returned); see
	// CausalLMHead. Models without such a head ignore the flag.
	LossOnly bool
	// Checkpoint turns on activation checkpointing for this pass (nil:
	// off); back-propagate with its Backward. See Checkpoint.
	Checkpoint *Checkpoint
}

// Output is what a forward pass returns (Outputs is its public name); its
// tensors belong to the scope the forward ran in.
type Output struct {
	Logits          *tensor.T // [B, L, vocab]; classifiers: [B, num_labels] or [B, L, num_labels]; nil when Batch.LossOnly took the fused loss head
	Loss            *tensor.T // scalar float32, when labels were given
	PastKeyValues   *Cache    // when UseCache: owns its tensors (Free it)
	LastHiddenState *tensor.T // encoders without a head (feature extraction): [B, L, hidden]
	PoolerOutput    *tensor.T // encoders without a head, when they have a pooler: [B, hidden]
}

// KV is one layer's keys and values, [B, kv_heads, T, head_dim].
type KV struct {
	K, V *tensor.T
	// kBuf and vBuf, when set, are the storage a decoding cache grows in
	// place: K and V are views of their first T positions (see AttendKV).
	kBuf, vBuf *tensor.T
}

// Cache holds every layer's keys and values across decoding steps. It owns
// its tensors: Free it when done.
type Cache struct {
	Layers []KV
}

// Len is the number of cached positions (0 for an empty cache).
func (c *Cache) Len() int64 {
	if c == nil || len(c.Layers) == 0 || c.Layers[0].K == nil {
		return 0
	}
	return c.Layers[0].K.Size(2)
}

// CheckLayers refuses a non-empty cache made for a model with another
// number of layers (it would index past its end).
func (c *Cache) CheckLayers(n int) error {
	if c == nil || len(c.Layers) == 0 || len(c.Layers) == n {
		return nil
	}
	return fmt.Errorf("past_key_values: %d layers, the model has %d", len(c.Layers), n)
}

// Free releases the cached tensors.
func (c *Cache) Free() {
	if c == nil {
		return
	}
	for i := range c.Layers {
		c.Layers[i].free()
	}
}

// Model is any model of the library (decoder or encoder, with or without a
// task head) with HF's forward semantics: what PEFT wraps, trains and saves
// adapters for.
type Model interface {
	nn.Module
	// ForwardT runs the model inside scope s (the library's internal entry point).
	ForwardT(s *tensor.Scope, b *Batch) *Output
	// Forward is the public entry point: it runs the model in scope s
	// (whose grad mode applies: tensor.NoGradScope for inference) and
	// returns outputs owned by s, or the scope's first error.
	Forward(s *tensor.Scope, in Inputs) (*Outputs, error)
	// Save writes the model as a HF folder (config.json + model.safetensors).
	Save(dir string) error
}

// CausalLM is a decoder-only language model (LlamaForCausalLM,
// BloomForCausalLM, GPT2LMHeadModel): a Model whose logits are next-token
// scores [B, L, vocab] and whose labels give the shifted cross-entropy.
// It is the same interface as Model — the name says what the logits mean —
// so every Model is accepted where a CausalLM is asked for.
type CausalLM = Model

// Classifier is an encoder with a classification head
// (BertForSequenceClassification, BertForTokenClassification): a Model
// whose logits are [B, num_labels] per sequence, or [B, L, num_labels] per
// token. Labels are int64 class ids ([B], or [B, L] with -100 ignored) for
// cross-entropy, or float32 targets ([B] or [B, num_labels]) for HF's
// regression and multi-label problem types.
type Classifier interface {
	Model
	// NumLabels is the number of classes (config.json's num_labels).
	NumLabels() int64
	// PerToken reports whether the head classifies every token (token
	// classification) rather than the whole sequence.
	PerToken() bool
}

// ShiftedLoss is HF's causal-LM loss: logits[:, :-1] against labels[:, 1:],
// mean cross-entropy over targets != -100, in float32.
func ShiftedLoss(s *tensor.Scope, logits, labels *tensor.T) *tensor.T {
	if logits == nil || labels == nil {
		return nil
	}
	sh := logits.Shape()
	b, l, v := sh[0], sh[1], sh[2]
	if ls := labels.Shape(); len(ls) != 2 || ls[0] != b || ls[1] != l {
		return s.Failf("labels: shape %v, want [%d %d] like the logits", labels.Shape(), b, l)
	}
	lg := s.Reshape(s.Narrow(logits, 1, 0, l-1), -1, v)
	if lg != nil && lg.DType() != tensor.Float32 {
		lg = s.To(lg, tensor.Float32)
	}
	tg := s.Reshape(s.Narrow(labels, 1, 1, l-1), -1)
	return s.CrossEntropy(lg, tg, IgnoreIndex)
}

// BatchOf converts public inputs to the internal form (the same borrowed
// tensors; s does not take them).
func BatchOf(s *tensor.Scope, in Inputs) *Batch {
	return &Batch{
		InputIDs:      in.InputIDs,
		InputsEmbeds:  in.InputsEmbeds,
		AttentionMask: in.AttentionMask,
		TokenTypeIDs:  in.TokenTypeIDs,
		PositionIDs:   in.PositionIDs,
		PastKeyValues: in.PastKeyValues,
		PrefixKV:      in.PrefixKV,
		Labels:        in.Labels,
		UseCache:      in.UseCache,
		TaskIDs:       in.TaskIDs,
	}
}

// Run is every model's public Forward: it runs forwardT on in inside
// scope s, frees the pass's intermediates (autograd keeps what a backward
// needs) and returns the outputs, owned by s. The error is the scope's
// first error, prefixed with name; s keeps it, as after any failed op.
func Run(s *tensor.Scope, name string, forwardT func(*tensor.Scope, *Batch) *Output, in Inputs) (*Outputs, error) {
	if s == nil {
		return nil, fmt.Errorf("%s: forward: nil scope (make one with tensor.NewScope or tensor.NoGradScope)", name)
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("%s: forward: the scope already failed: %w", name, err)
	}
	mark := s.Mark()
	out := forwardT(s, BatchOf(s, in))
	if err := s.Err(); err != nil {
		s.FreeSince(mark)
		return nil, fmt.Errorf("%s: forward: %w", name, err)
	}
	if out == nil {
		out = &Output{}
	}
	s.FreeSince(mark, out.Logits, out.Loss, out.LastHiddenState, out.PoolerOutput)
	return out, nil
}

// HeadInput is what a causal LM's head reads: the final hidden states x
// [B, L, hidden], or only their last position when b.LastLogitsOnly.
func HeadInput(s *tensor.Scope, b *Batch, x *tensor.T) *tensor.T {
	if !b.LastLogitsOnly || b.Labels != nil || x == nil || x.Size(1) <= 1 {
		return x
	}
	return s.Narrow(x, 1, x.Size(1)-1, 1)
}
