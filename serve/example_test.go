package serve_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"

	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/serve"
	"github.com/gopeft/peft/tokenizer"
)

// A server over a base model with 16 LoRA adapters, mounted on a test
// listener (in a program: http.ListenAndServe(addr, srv)), asked for a
// greedy completion with one of the adapters.
func Example() {
	modelDir, adapters, err := serve.TestingFixture() // a tiny LLaMA and 16 adapters (lora00 … lora15)
	if err != nil {
		fmt.Println(err)
		return
	}
	base, err := llama.Load(modelDir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer base.Free()
	pm, err := peft.Load(base, adapters["lora00"], peft.WithAdapterName("lora00"))
	if err != nil {
		fmt.Println(err)
		return
	}
	tok, err := tokenizer.Load(filepath.Join(modelDir, "tokenizer.json"))
	if err != nil {
		fmt.Println(err)
		return
	}
	srv, err := serve.New(pm, tok, serve.Options{ModelName: "llama-tiny", Adapters: adapters, MaxAdapters: 8})
	if err != nil {
		fmt.Println(err)
		return
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()

	resp, err := http.Post(hs.URL+"/v1/completions", "application/json",
		strings.NewReader(`{"model": "lora07", "prompt": "Once upon a time", "max_tokens": 5, "temperature": 0}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	var out struct {
		Object  string `json:"object"`
		Choices []struct {
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.StatusCode, out.Object, out.Choices[0].FinishReason, out.Usage.CompletionTokens)
	// Output: 200 text_completion length 5
}

// The chat prompt of a model whose tokenizer_config.json has a
// chat_template (here Qwen2's ChatML template, which adds a default system
// message).
func ExampleNewChatTemplate() {
	modelDir, _, err := serve.TestingFixture()
	if err != nil {
		fmt.Println(err)
		return
	}
	tok, err := tokenizer.Load(filepath.Join(modelDir, "tokenizer.json"))
	if err != nil {
		fmt.Println(err)
		return
	}
	ct, err := serve.NewChatTemplate(tok, "chatml")
	if err != nil {
		fmt.Println(err)
		return
	}
	text, err := ct.Render([]serve.Message{{Role: "user", Content: "Hi"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(ct.Source(), "\n", text)
	// Output:
	// chat_template
	// <|im_start|>system
	// You are a helpful assistant.<|im_end|>
	// <|im_start|>user
	// Hi<|im_end|>
	// <|im_start|>assistant
}
