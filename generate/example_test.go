package generate_test

import (
	"context"
	"fmt"

	"github.com/gopeft/peft/generate"
	_ "github.com/gopeft/peft/lora" // registers LORA with peft.Load
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
)

const tiny = "../testdata/hf/llama-tiny"

// Greedy decoding of two prompts of different lengths with a model's own
// generation_config.json, 8 new tokens each.
func ExampleGenerate() {
	model, err := llama.Load(tiny)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer model.Free()
	cfg, err := generate.FromPretrained(tiny) // eos_token_id 2
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg.MaxNewTokens = 8
	prompts := [][]int64{
		{328, 384, 353, 219, 207, 297, 389, 171, 312, 166, 505, 106},
		{180, 256, 432, 78, 401, 490, 209, 394, 411},
	}
	out, err := generate.Generate(context.Background(), model, generate.LeftPad(prompts, 0), cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	for i := range out.Sequences {
		fmt.Println(out.NewTokens(i))
	}
	// Output:
	// [327 71 76 97 354 354 354 354]
	// [313 372 62 389 343 169 372 62]
}

// Sampling with a LoRA adapter attached, tokens streamed as they come.
func ExampleStream() {
	base, err := llama.Load(tiny)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer base.Free()
	model, err := peft.Load(base, "../testdata/hf/adapters/llama-tiny/lora-default")
	if err != nil {
		fmt.Println(err)
		return
	}
	seed := int64(1)
	cfg := generate.DefaultGenerationConfig()
	cfg.MaxNewTokens, cfg.DoSample, cfg.TopK, cfg.TopP, cfg.Seed = 5, true, 10, 0.9, &seed
	in := generate.Input{InputIDs: [][]int64{{328, 384, 353}}}
	n := 0
	_, err = generate.Stream(context.Background(), model, in, cfg, func(st generate.Step) error {
		n++ // st.Tokens[0] is the new token: send it on
		return nil
	})
	fmt.Println(n, "tokens streamed", err)
	// Output:
	// 5 tokens streamed <nil>
}
