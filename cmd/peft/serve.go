package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/serve"
	"github.com/gopeft/peft/tokenizer"
)

// serveCmd is `peft serve`: an OpenAI-compatible HTTP server (package
// serve) over a HF checkpoint folder and PEFT adapters, until SIGINT or
// SIGTERM, which finish the running requests first.
func serveCmd(args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runServe(ctx, args, stdout, stderr, func() context.Context {
		stop() // a second signal stops the graceful shutdown
		fmt.Fprintln(stdout, "peft serve: shutting down, finishing running requests (Ctrl-C again to stop now)")
		sctx, _ := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		return sctx
	}, nil)
}

// runServe serves until ctx is done, then shuts down gracefully within the
// context that shutdown returns. ready, when set, is told the address
// listened on.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer, shutdown func() context.Context, ready func(addr string)) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelDir := fs.String("model", "", "HF model folder (config.json, safetensors, tokenizer.json, tokenizer_config.json)")
	var adapters multi
	fs.Var(&adapters, "adapter", "NAME=DIR: serve the PEFT adapter in DIR as model NAME (repeatable)")
	addr := fs.String("addr", "127.0.0.1:8000", "HOST:PORT to listen on")
	tokPath := fs.String("tokenizer", "", "tokenizer.json (default: the model folder's)")
	maxBatch := fs.Int("max-batch", 16, "sequences decoded together in one step")
	maxQueue := fs.Int("max-queue", 256, "requests waiting for the batch; past that, 429 with Retry-After")
	maxAdapters := fs.Int("max-adapters", 0, "adapters resident at once (0: no cap); the least recently used idle one is unloaded")
	adminToken := fs.String("admin-token", os.Getenv("PEFT_ADMIN_TOKEN"), "token for POST /v1/adapters (Authorization: Bearer; default $PEFT_ADMIN_TOKEN; empty: disabled)")
	chatTemplate := fs.String("chat-template", "chatml", "chat template when tokenizer_config.json has none: chatml, llama3, llama2, qwen, alpaca or raw")
	maxBody := fs.Int64("max-body", 4<<20, "largest request body in bytes (larger: 413)")
	lf := addLoadFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *modelDir == "" {
		return errors.New("serve: --model is required")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	var list []adapterArg
	seen := map[string]bool{}
	for _, a := range adapters {
		name, dir, ok := strings.Cut(a, "=")
		if !ok || name == "" || dir == "" {
			return fmt.Errorf("serve: --adapter %q: want NAME=DIR", a)
		}
		if seen[name] {
			return fmt.Errorf("serve: --adapter: name %q given twice", name)
		}
		seen[name] = true
		list = append(list, adapterArg{name, dir})
	}
	lopts, err := lf.options()
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if *tokPath == "" {
		*tokPath = filepath.Join(*modelDir, "tokenizer.json")
	}
	tok, err := tokenizer.Load(*tokPath)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	gen, err := generate.FromPretrained(*modelDir)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	ctxLen, err := contextLength(*modelDir)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	base, err := loadModel(*modelDir, lopts...)
	if err != nil {
		return err
	}
	pm, err := servingModel(base, list)
	if err != nil {
		return err
	}
	o := serve.Options{
		ModelName: filepath.Base(filepath.Clean(*modelDir)), Adapters: map[string]string{},
		MaxAdapters: *maxAdapters, AdminToken: *adminToken, MaxBatch: *maxBatch, MaxQueue: *maxQueue,
		MaxContext: ctxLen, MaxBodyBytes: *maxBody, EOSTokenIDs: gen.EOSTokenID, ChatTemplate: *chatTemplate,
	}
	for _, a := range list {
		o.Adapters[a.name] = a.dir
	}
	srv, err := serve.New(pm, tok, o)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 30 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	fmt.Fprintf(stdout, "peft serve: %s (%d adapters) on http://%s/v1\n", o.ModelName, len(list), ln.Addr())
	if ready != nil {
		ready(ln.Addr().String())
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx := shutdown()
	serr := srv.Shutdown(sctx) // running requests finish; new ones get 503
	herr := hs.Shutdown(sctx)
	return errors.Join(serr, herr)
}

// adapterArg is one --adapter NAME=DIR.
type adapterArg struct{ name, dir string }

func servingModel(base models.CausalLM, list []adapterArg) (*peft.Model, error) {
	if len(list) > 0 {
		return peft.Load(base, list[0].dir, peft.WithAdapterName(list[0].name))
	}
	pm, err := peft.New(base, &lora.Config{})
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	if err := pm.DeleteAdapter(peft.DefaultAdapter); err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	return pm, nil
}

// contextLength is config.json's context length (max_position_embeddings,
// or GPT-2's n_positions); 0 when it has none (BLOOM).
func contextLength(dir string) (int, error) {
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var c struct {
		MaxPos     *int `json:"max_position_embeddings"`
		NPositions *int `json:"n_positions"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case c.MaxPos != nil:
		return *c.MaxPos, nil
	case c.NPositions != nil:
		return *c.NPositions, nil
	}
	return 0, nil
}
