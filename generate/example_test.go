package generate_test

import (
	"context"
	"fmt"

	"github.com/gopeft/peft/generate"
	_ "github.com/gopeft/peft/lora" // registers LORA with peft.Load
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
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

// Two goroutines generating at once on one model, each with its own
// adapter: the choice travels with the call (no SetAdapter), so neither
// disturbs the other. A batch with one adapter per prompt is RowAdapters.
func ExampleWithAdapters() {
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
	if err := model.LoadAdapter("../testdata/hf/adapters/llama-tiny/lora-rich", "rich"); err != nil {
		fmt.Println(err)
		return
	}
	cfg := generate.GenerationConfig{MaxNewTokens: 6}
	in := generate.Input{InputIDs: [][]int64{{328, 384, 353}}}
	sels := []*peft.Selection{{Adapters: []string{"default"}}, {Adapters: []string{"rich"}}, {Disabled: true}}
	got := make([][]int64, len(sels))
	done := make(chan int)
	for i, sel := range sels {
		go func() {
			out, err := generate.Generate(context.Background(), generate.WithAdapters(model, sel), in, cfg)
			if err == nil {
				got[i] = out.NewTokens(0)
			}
			done <- i
		}()
	}
	for range sels {
		<-done
	}
	fmt.Println("default:", got[0])
	fmt.Println("rich:   ", got[1])
	fmt.Println("base:   ", got[2])
	// Output:
	// default: [428 147 346 172 172 172]
	// rich:    [463 463 282 157 282 282]
	// base:    [86 464 411 214 384 318]
}

// Per-prompt seeds: each prompt samples what it samples alone with its
// seed, whatever else is in the batch.
func ExampleInput_seeds() {
	model, err := llama.Load(tiny)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer model.Free()
	cfg := generate.GenerationConfig{MaxNewTokens: 5, DoSample: true, TopK: 20}
	in := generate.LeftPad([][]int64{{328, 384, 353}, {180, 256}}, 0)
	in.Seeds = []int64{7, 8}
	out, err := generate.Generate(context.Background(), model, in, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	seed := int64(8)
	cfg.Seed = &seed
	alone, err := generate.Generate(context.Background(), model, generate.Input{InputIDs: [][]int64{{180, 256}}}, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(out.NewTokens(1), alone.NewTokens(0))
	// Output:
	// [119 356 430 503 141] [119 356 430 503 141]
}

// A Decoder chooses one sequence's tokens from logits the caller computes
// (here with the model's key/value cache), as Generate would.
func ExampleNewDecoder() {
	model, err := llama.Load(tiny)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer model.Free()
	prompt := []int64{328, 384, 353}
	d, err := generate.NewDecoder(generate.GenerationConfig{MaxNewTokens: 4}, prompt, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	s := tensor.NoGradScope()
	defer s.Close()
	cache := &models.Cache{}
	defer cache.Free()
	ids := prompt
	for len(d.Generated()) < d.MaxNewTokens() {
		out := model.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, 1, int64(len(ids))), PastKeyValues: cache, UseCache: true, LastLogitsOnly: true})
		tok, err := d.Next(s, s.Select(out.Logits, 1, out.Logits.Size(1)-1))
		if err != nil {
			fmt.Println(err)
			return
		}
		ids = []int64{tok}
		s.FreeAll()
	}
	fmt.Println(d.Generated())
	// Output:
	// [86 464 411 214]
}
