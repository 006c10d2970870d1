// Command mkmodel writes a random-weight HF checkpoint folder with the
// shapes of a real model, for the scale benchmark (bench -model DIR and
// bench/reference_scale.py):
//
//	go run ./bench/mkmodel -config qwen2.5-0.5b -out /tmp/qwen2.5-0.5b-random
//	go run ./bench/mkmodel -config llama-2-7b -out /tmp/llama-2-7b-random
//
// The folder is what the Hub serves for such a model: config.json with the
// real config's fields, the weights in bf16 (or -dtype f32) as
// model.safetensors, or, when they exceed -shard-size (2 GB, like
// transformers' save_pretrained), as model-0000i-of-0000N.safetensors
// shards with a model.safetensors.index.json (metadata.total_size and the
// weight_map). Shards are cut in state-dict order the way transformers
// cuts them; inside a file the tensors are sorted by name with a
// {"format": "pt"} metadata header, like the safetensors Python library.
// A tied-embedding model (Qwen2.5-0.5B) stores no lm_head.weight.
//
// Values: linear and embedding weights N(0, 0.02) (HF's
// initializer_range), Qwen2's q/k/v biases N(0, 0.02), RMSNorm weights 1.
// bf16 is the float32 value rounded to nearest even. Every tensor is
// generated in chunks of 2^20 values, each from its own PCG stream keyed
// by the seed, the tensor's name and the chunk's index, so the files are
// the same for a seed whatever the number of threads; the chunks are
// written as they are made, so the model is never held in memory.
//
// -layers N writes the same model with N decoder layers (a smaller folder
// for quick checks); -config also takes a config.json path, whose LLaMA /
// Qwen2 / Qwen3 / Mistral / Phi-3 fields are used as they are (the real
// Llama-3.2-1B, Qwen3-0.6B and Phi-4-mini configs are in testdata/configs;
// Qwen3 gets its q_norm/k_norm weights, Phi-3 its fused qkv_proj and
// gate_up_proj).
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"
)

func main() {
	var (
		config    = flag.String("config", "", "qwen2.5-0.5b, llama-2-7b, tiny-qwen2, tiny-llama, or a config.json path")
		out       = flag.String("out", "", "output folder (created; existing model files are replaced)")
		dtype     = flag.String("dtype", "bf16", "bf16 or f32")
		seed      = flag.Uint64("seed", 0, "random seed")
		shardSize = flag.Int64("shard-size", 2_000_000_000, "largest shard in bytes (transformers' \"2GB\" = 2e9)")
		layers    = flag.Int("layers", 0, "number of decoder layers (0: the config's)")
		workers   = flag.Int("threads", runtime.NumCPU(), "generator goroutines")
	)
	flag.Parse()
	if *config == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: mkmodel -config NAME|config.json -out DIR [-dtype bf16|f32] [-seed N] [-layers N] [-shard-size BYTES]")
		os.Exit(2)
	}
	cfg, err := LookupConfig(*config)
	if err != nil {
		fatal(err)
	}
	if *layers > 0 {
		cfg["num_hidden_layers"] = *layers
		if _, ok := cfg["max_window_layers"]; ok {
			cfg["max_window_layers"] = *layers
		}
	}
	t0 := time.Now()
	res, err := Write(*out, cfg, Options{DType: *dtype, Seed: *seed, ShardSize: *shardSize, Workers: *workers})
	if err != nil {
		fatal(err)
	}
	fmt.Printf("mkmodel: %s: %d tensors, %d parameters, %.2f GB in %d file(s), %.1f s\n",
		*out, res.Tensors, res.Params, float64(res.Bytes)/1e9, len(res.Files), time.Since(t0).Seconds())
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "mkmodel:", err)
	os.Exit(1)
}
