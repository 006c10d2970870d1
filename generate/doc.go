// Package generate continues prompts with a causal language model, as HF
// transformers' model.generate does: greedy decoding, sampling (temperature,
// top-k, top-p), beam search (length_penalty, early_stopping) and beam
// sampling, with repetition penalty, minimum lengths, one or several eos
// tokens and several returned sequences per prompt. The knobs are HF's
// GenerationConfig, loadable from a model's generation_config.json.
//
// It runs any model of the library — a base model, a merged one, or a
// peft.Model with LoRA, IA3, bottleneck adapters, prompt tuning, P-tuning
// or prefix tuning attached (the virtual tokens or prefixes enter the KV
// cache on the first step and are not recomputed) — with the adapter
// choice of the call (WithAdapters: one adapter, several, or the base
// model, without changing the model, so concurrent generations with
// different adapters are safe) or a different LoRA adapter per prompt
// (RowAdapters). Sampling state is per prompt: each prompt has its own
// generator, seeded with Input.Seeds[i] or the config's Seed, so a
// prompt's tokens do not depend on the rest of the batch. Decoder is one
// sequence's token choice for callers that run the model themselves (the
// continuous-batching package engine).
//
// Batches are left-padded (LeftPad), positions follow generate()'s
// cumsum(mask)-1, the KV cache carries the past, each row stops at its eos
// token and is padded afterwards, and the result is HF's: the sequences
// with their prompts, and optionally the processed scores of every step.
// Stream and StreamChan deliver the tokens as they are produced; Text goes
// from strings to strings with a tokenizer. Every
// step runs without autograd and frees its intermediates, so memory stays
// flat however long the generation.
//
//	cfg, _ := generate.FromPretrained(modelDir) // generation_config.json
//	cfg.MaxNewTokens = 32
//	cfg.DoSample, cfg.Temperature, cfg.TopP = true, 0.7, 0.9
//	out, err := generate.Generate(ctx, model, generate.LeftPad(prompts, 0), cfg)
//	// out.Sequences[i]: prompt i followed by its continuation
package generate
