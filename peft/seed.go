package peft

import "github.com/gopeft/peft/tensor"

// SetSeed seeds libtorch's random generator, as torch.manual_seed (or
// transformers.set_seed) does before get_peft_model in Python. Adapter
// initialisation draws from it — LoRA's A (and B with
// init_lora_weights=false), prompt-tuning embeddings, P-tuning encoders,
// prefix tables, bottleneck adapters — so without a seed every process
// starts from different adapter weights: libtorch seeds its generator
// from the operating system, in Go as in Python. The Trainer seeds
// dropout itself (train.Config.Seed); models built with New take a seed.
func SetSeed(seed int64) { tensor.ManualSeed(seed) }
