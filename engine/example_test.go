package engine_test

import (
	"context"
	"fmt"

	"github.com/gopeft/peft/engine"
	"github.com/gopeft/peft/generate"
	_ "github.com/gopeft/peft/lora" // registers LORA with peft.Load
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
)

// Serving two adapters and the base model from one engine: the requests
// run in one batch, each with its own adapter and settings, and stream
// their tokens.
func ExampleEngine_Submit() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	m, err := peft.Load(base, "../testdata/hf/adapters/llama-tiny/lora-default")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nn.FreeParams(m)
	if err := m.LoadAdapter("../testdata/hf/adapters/llama-tiny/lora-rich", "rich"); err != nil {
		fmt.Println(err)
		return
	}
	e, err := engine.New(m, engine.Options{MaxBatch: 8, MaxQueue: 32})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Shutdown(context.Background())

	seed := int64(3)
	reqs := []engine.Request{
		{Prompt: []int64{328, 384, 353}, Adapter: "default", Config: generate.GenerationConfig{MaxNewTokens: 6}},
		{Prompt: []int64{328, 384, 353}, Adapter: "rich", Config: generate.GenerationConfig{MaxNewTokens: 6}},
		{Prompt: []int64{180, 256}, Config: generate.GenerationConfig{MaxNewTokens: 4, DoSample: true, TopK: 20, Seed: &seed}},
		{Prompt: []int64{328, 384, 353}, Adapter: "rich", Config: generate.GenerationConfig{MaxNewTokens: 6}, Stop: [][]int64{{157}}},
	}
	var streams []<-chan engine.Event
	for _, r := range reqs {
		ch, err := e.Submit(context.Background(), r)
		if err != nil {
			fmt.Println(err)
			return
		}
		streams = append(streams, ch)
	}
	for i, ch := range streams {
		var toks []int64
		for ev := range ch {
			if ev.Err != nil {
				fmt.Println(ev.Err)
				break
			}
			toks = append(toks, ev.Token)
			if ev.Finish != "" {
				fmt.Println(i, toks, ev.Finish)
			}
		}
	}
	// Output:
	// 0 [428 147 346 172 172 172] length
	// 1 [463 463 282 157 282 282] length
	// 2 [305 488 172 70] length
	// 3 [463 463 282 157] stop
}
