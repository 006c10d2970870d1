// Package adaptionprompt is LLaMA-Adapter's adaption prompt for the
// library (HF PEFT's AdaptionPromptConfig / AdaptedAttention, peft_type
// ADAPTION_PROMPT; Zhang et al. 2023, https://arxiv.org/abs/2303.16199).
//
// The attention modules of the top adapter_layers decoder layers are
// wrapped: each wrapper learns adapter_len prompt vectors P [1, adapter_len,
// hidden] and a gate g [1] (zero at init, so a new adapter leaves the model
// unchanged). In every forward the layer's own k_proj and v_proj turn P
// into adapter keys and values (no rotary embedding), the layer's queries
// (rotated, as the attention scores them) attend to them alone with a
// float32 softmax, the probabilities are scaled by g, and the result, sent
// through the layer's o_proj, is added to the attention's output:
//
//	out = attn(x) + o_proj( g · softmax(q Kₚᵀ / √d) Vₚ ),  Kₚ = k_proj(P), Vₚ = v_proj(P)
//
// The adapter keys and values are constants of the layer, so generation
// with the KV cache needs nothing more: each new token's query attends to
// them as the prompt's did.
//
//	model, err := peft.New(base, &adaptionprompt.Config{AdapterLen: 10, AdapterLayers: 30})
//
// Saved adapters hold, per wrapped layer,
// base_model.model.model.layers.N.self_attn.adaption_prompt and
// .adaption_gate, as PEFT writes them. The method works on LLaMA and
// Mistral models (PEFT's list; models/llama's attention accepts the
// wrapper through models.AttentionWrapper). It is not mergeable:
// peft.Model.Merge and MergeAndUnload return an error wrapping
// peft.ErrNotMergeable. One adapter runs at a time (PEFT swaps the
// wrappers on set_adapter); a call with several active adapters, or with
// an adapter per batch row, fails with an error saying so.
//
// Parameters are created in float32 on any base (the library's rule for
// adapters) and cast to the activations' dtype where they are used; PEFT
// creates them in the base's dtype.
package adaptionprompt

import "github.com/gopeft/peft/peft"

func init() { peft.Register(PeftType, Decode) }
