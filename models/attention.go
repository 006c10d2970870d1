package models

import (
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// AttentionWrapper is a module that a family's decoder layer accepts in
// place of its attention module (the module at "<layer>.self_attn"): the
// layer runs the wrapped attention as usual and hands its output, with
// what the attention computed on the way (AttentionState), to
// AdaptAttention, whose result becomes the attention's output. It is the
// seam through which a method changes attention without the family knowing
// the method — PEFT's adaption prompt (LLaMA-Adapter) wraps LlamaAttention
// this way. Families that accept a wrapper say so in their documentation
// (models/llama does); the wrapper's parameters live at the attention's
// path (self_attn.<name>), the wrapped module's under the wrapper's own
// child name.
//
// A wrapper's forward runs concurrently when the model's forwards do: it
// must not change its own state in AdaptAttention.
type AttentionWrapper interface {
	nn.Layer
	// WrappedAttention is the family's attention module inside the
	// wrapper.
	WrappedAttention() nn.Module
	// AdaptAttention returns the attention's output given out, the wrapped
	// attention's output [B, L, hidden] (after its output projection), and
	// st; results belong to s.
	AdaptAttention(s *tensor.Scope, st *AttentionState, out *tensor.T) *tensor.T
}

// AttentionState is what an attention pass exposes to an AttentionWrapper:
// its input, its query states as scored against the keys, the head
// geometry, and its own projections (which may themselves be wrapped by
// other methods' layers). Its tensors belong to the pass's scope; it is a
// plain value of one pass, read by one goroutine.
type AttentionState struct {
	// Hidden is the attention's input [B, L, hidden].
	Hidden *tensor.T
	// Query is the query states [B, heads, L, head_dim], after the
	// per-head norm and rotary embedding where the family has them: the
	// queries the attention scores (at the positions of this call, after
	// any cached ones).
	Query *tensor.T
	// NumHeads, NumKVHeads and HeadDim are the attention's geometry.
	NumHeads, NumKVHeads, HeadDim int64
	// KProj, VProj and OProj are the attention's key, value and output
	// projections (KProj and VProj are nil where the family fuses them).
	KProj, VProj, OProj nn.Layer
}
