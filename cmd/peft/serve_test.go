package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tokenizer"
	"github.com/stretchr/testify/require"
)

// `peft serve` on LLaMA-tiny with the PEFT-made LoRA adapter: it listens,
// lists the models, answers a greedy completion as generate does alone,
// and shuts down when its context ends. The checkpoint has no
// tokenizer.json, so the model folder gets GPT-2's (the prompt is given
// as token ids below 512, and the answer is decoded with it).
func TestServeCommand(t *testing.T) {
	fx := fixtures(t)
	dir := t.TempDir()
	for _, f := range []string{"config.json", "generation_config.json", "model.safetensors"} {
		require.NoError(t, os.Symlink(filepath.Join(fx, "llama-tiny", f), filepath.Join(dir, f)))
	}
	tokFile := filepath.Join(tokenizerCache(), "gpt2-hf", "tokenizer.json")
	if _, err := os.Stat(tokFile); err != nil {
		t.Fatalf("%v: the real tokenizers come with `make setup`", err)
	}
	require.NoError(t, os.Symlink(tokFile, filepath.Join(dir, "tokenizer.json")))
	adapter := filepath.Join(fx, "adapters", "llama-tiny", "lora-default")

	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	var stdout, stderr bytes.Buffer
	go func() {
		done <- runServe(ctx, []string{"--model", dir, "--adapter", "mine=" + adapter, "--addr", "127.0.0.1:0", "--max-batch", "4"},
			&stdout, &stderr, context.Background,
			func(addr string) { addrc <- addr })
	}()
	var url string
	select {
	case addr := <-addrc:
		url = "http://" + addr
	case err := <-done:
		t.Fatalf("peft serve: %v\n%s", err, stderr.String())
	}

	resp, err := http.Get(url + "/v1/models")
	require.NoError(t, err)
	var models struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&models))
	resp.Body.Close()
	var ids []string
	for _, m := range models.Data {
		ids = append(ids, m.ID)
	}
	require.Equal(t, []string{"base", filepath.Base(dir), "mine"}, ids)

	prompt := []int64{1, 17, 230, 99, 5}
	resp, err = http.Post(url+"/v1/completions", "application/json",
		strings.NewReader(`{"model": "mine", "prompt": [1, 17, 230, 99, 5], "max_tokens": 6, "temperature": 0}`))
	require.NoError(t, err)
	var out struct {
		Choices []struct {
			Text         string `json:"text"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)

	// The same request alone through generate.
	base, err := llama.Load(filepath.Join(fx, "llama-tiny"))
	require.NoError(t, err)
	defer base.Free()
	pm, err := peft.Load(base, adapter)
	require.NoError(t, err)
	cfg := generate.DefaultGenerationConfig()
	cfg.TopK, cfg.MaxNewTokens, cfg.EOSTokenID = 0, 6, generate.TokenIDs{2}
	g, err := generate.Generate(context.Background(), pm, generate.LeftPad([][]int64{prompt}, 0), cfg)
	require.NoError(t, err)
	tok, err := tokenizer.Load(tokFile)
	require.NoError(t, err)
	var gen []int
	for _, id := range g.NewTokens(0) {
		gen = append(gen, int(id))
	}
	require.Len(t, out.Choices, 1)
	require.Equal(t, tok.Decode(gen, true), out.Choices[0].Text)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("peft serve did not stop")
	}
	require.Contains(t, stdout.String(), "peft serve: "+filepath.Base(dir)+" (1 adapters)")
}

func TestServeCommandFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--model is required"},
		{[]string{"--model", "x", "--adapter", "noequals"}, "want NAME=DIR"},
		{[]string{"--model", "x", "--adapter", "a=1", "--adapter", "a=2"}, `name "a" given twice`},
		{[]string{"--model", "x", "extra"}, `unexpected argument "extra"`},
	} {
		err := runServe(context.Background(), c.args, &bytes.Buffer{}, &bytes.Buffer{}, context.Background, nil)
		require.ErrorContains(t, err, c.want)
	}
}
