// Package serve is an OpenAI-compatible HTTP server over a peft.Model: one
// base model and many adapters, requests with different adapters decoded
// together in one batch by package engine (continuous batching).
//
// A Server is an http.Handler, to mount in one's own server or run with
// `peft serve`:
//
//	POST /v1/completions         prompt → text; stream: true sends server-sent events
//	POST /v1/chat/completions    messages → reply, through the model's own chat template
//	GET  /v1/models              "base", the base model's name, and every adapter
//	POST /v1/adapters            load/unload an adapter at run time (admin token)
//	GET  /health                 200 while serving, 503 once shutting down
//	GET  /metrics                Prometheus text format: requests, tokens, queue,
//	                             batch size, time to first token
//
// A request's "model" is "base" (or the base model's name) for the base
// model, or an adapter's name. Sampling follows OpenAI's API: temperature
// (0 is greedy; default 1), top_p, n, max_tokens, seed (choice k of n
// samples with seed + k), stop (up to 4 strings, matched on the decoded
// text, so a stop string may span tokens; text that could still become one
// is held back while streaming). Extensions as in vLLM: top_k,
// repetition_penalty. logprobs are not implemented.
//
// Chat prompts are rendered with tokenizer_config.json's chat_template, a
// Jinja template, by github.com/ardanlabs/jinja (a pure-Go engine written
// for LLM chat templates: it renders the Llama 3, Qwen2/3 and Gemma 3
// templates, raise_exception, loop.first/last, messages[0]['role'],
// bos_token/eos_token), or, for a tokenizer without one, by a named
// template of package data.
//
// Bad input gets a 4xx with OpenAI's error body {"error": {"message",
// "type", "param", "code"}}; a full queue a 429 with Retry-After. A client
// that goes away cancels its request; Shutdown finishes the running ones.
package serve
