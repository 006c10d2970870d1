package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tokenizer"
)

// clientDir is the node project with the official openai package.
func clientDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "client"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is not installed: the serve tests drive the server with the openai npm package; run `make setup`")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai", "package.json")); err != nil {
		t.Fatalf("the openai npm package is not installed in %s: run `make setup` (it runs npm ci there)", dir)
	}
	return dir
}

type clientRequest struct {
	ID     string         `json:"id"`
	Kind   string         `json:"kind"` // "chat" or "completion"
	Stream bool           `json:"stream"`
	Params map[string]any `json:"params"`
}

type clientChoice struct {
	Index        int    `json:"index"`
	Text         string `json:"text"`
	FinishReason string `json:"finish_reason"`
}

type clientResult struct {
	ID      string         `json:"id"`
	OK      bool           `json:"ok"`
	Object  string         `json:"object"`
	Choices []clientChoice `json:"choices"`
	Usage   *usage         `json:"usage"`
	Chunks  int            `json:"chunks"`
	Roles   int            `json:"roles"`
	Status  *int           `json:"status"`
	Type    *string        `json:"type"`
	Code    *string        `json:"code"`
	Param   *string        `json:"param"`
	Message string         `json:"message"`
}

// runClient runs client.mjs against url with the requests, concurrency at
// a time, and returns its results by request id.
func runClient(t *testing.T, url string, concurrency int, reqs []clientRequest) map[string]clientResult {
	t.Helper()
	dir := clientDir(t)
	spec, _ := json.Marshal(map[string]any{"concurrency": concurrency, "requests": reqs})
	path := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(path, spec, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", filepath.Join(dir, "client.mjs"), url+"/v1", path)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node client.mjs: %v\n%s", err, stderr.String())
	}
	var res struct {
		Results []clientResult `json:"results"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("client output: %v\n%s", err, out)
	}
	if len(res.Results) != len(reqs) {
		t.Fatalf("%d results for %d requests", len(res.Results), len(reqs))
	}
	m := map[string]clientResult{}
	for _, r := range res.Results {
		m[r.ID] = r
	}
	return m
}

// startServer serves the fixture's model on a loopback listener.
func startServer(t *testing.T, o Options) (*Server, *httptest.Server, *peft.Model, *tokenizer.Tokenizer) {
	t.Helper()
	f := serveFixture(t)
	pm, tok := loadServingModel(t, f)
	if o.Adapters == nil {
		o.Adapters = f.adapters
	}
	o.ModelName = "llama-tiny"
	o.MaxContext = 128
	o.EOSTokenIDs = []int64{2}
	srv, err := New(pm, tok, o)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv, hs, pm, tok
}

// expectation is what one request run alone through generate answers.
type expectation struct {
	texts      []string
	finishes   []string
	completion int  // generated tokens of every choice
	stopped    bool // a stop string cut a choice (usage then counts what was decoded until then)
}

// sampling are the OpenAI parameters a test request uses.
type sampling struct {
	maxTokens   int
	temperature float64
	topP        float64 // 0: unset
	seed        int64
	n           int
	stops       []string
}

func (p sampling) params(model string) map[string]any {
	m := map[string]any{"model": model, "max_tokens": p.maxTokens, "temperature": p.temperature}
	if p.topP > 0 {
		m["top_p"] = p.topP
	}
	if p.temperature > 0 {
		m["seed"] = p.seed
	}
	if p.n > 1 {
		m["n"] = p.n
	}
	if len(p.stops) > 0 {
		m["stop"] = p.stops
	}
	return m
}

// config is the generation config the OpenAI parameters mean (written out
// here from OpenAI's semantics, not taken from the server): temperature 0
// is greedy, no top-k, eos 2.
func (p sampling) config(choice int) generate.GenerationConfig {
	cfg := generate.DefaultGenerationConfig()
	cfg.TopK = 0
	cfg.EOSTokenID = generate.TokenIDs{2}
	cfg.MaxNewTokens = p.maxTokens
	if p.temperature > 0 {
		cfg.DoSample, cfg.Temperature = true, p.temperature
		seed := p.seed + int64(choice)
		cfg.Seed = &seed
	}
	if p.topP > 0 {
		cfg.TopP = p.topP
	}
	return cfg
}

// alone runs prompt through generate by itself with model's adapter
// ("base": none) and decodes the answer as the API defines it.
func alone(t *testing.T, pm *peft.Model, tok *tokenizer.Tokenizer, model string, prompt []int64, p sampling) expectation {
	t.Helper()
	sel := &peft.Selection{Disabled: true}
	if model != BaseModel {
		sel = &peft.Selection{Adapters: []string{model}}
	}
	n := max(p.n, 1)
	var e expectation
	for k := 0; k < n; k++ {
		out, err := generate.Generate(context.Background(), generate.WithAdapters(pm, sel), generate.LeftPad([][]int64{prompt}, 0), p.config(k))
		if err != nil {
			t.Fatalf("%s: generate: %v", model, err)
		}
		ids := out.NewTokens(0)
		e.completion += len(ids)
		ints := make([]int, len(ids))
		for i, id := range ids {
			ints[i] = int(id)
		}
		text, cut := cutAtStop(tok.Decode(ints, true), p.stops)
		finish := "length"
		if cut || (len(ids) > 0 && ids[len(ids)-1] == 2) {
			finish = "stop"
		}
		e.stopped = e.stopped || cut
		e.texts = append(e.texts, text)
		e.finishes = append(e.finishes, finish)
	}
	return e
}

func checkResult(t *testing.T, r clientResult, want expectation, promptLen int, stream bool, kind string) {
	t.Helper()
	if !r.OK {
		t.Fatalf("%s: error %v %v: %s", r.ID, deref(r.Status), deref(r.Code), r.Message)
	}
	if len(r.Choices) != len(want.texts) {
		t.Fatalf("%s: %d choices, want %d", r.ID, len(r.Choices), len(want.texts))
	}
	for i, c := range r.Choices {
		if c.Index != i {
			t.Fatalf("%s: choice %d has index %d", r.ID, i, c.Index)
		}
		if c.Text != want.texts[i] || c.FinishReason != want.finishes[i] {
			t.Fatalf("%s choice %d: got %q (%s), want %q (%s), as the request alone through generate", r.ID, i, c.Text, c.FinishReason, want.texts[i], want.finishes[i])
		}
	}
	if r.Usage == nil {
		t.Fatalf("%s: no usage", r.ID)
	}
	// OpenAI counts the prompt once, whatever n is.
	if r.Usage.PromptTokens != promptLen || r.Usage.TotalTokens != r.Usage.PromptTokens+r.Usage.CompletionTokens {
		t.Fatalf("%s: usage %+v, the prompt has %d tokens", r.ID, *r.Usage, promptLen)
	}
	if !want.stopped && r.Usage.CompletionTokens != want.completion {
		t.Fatalf("%s: completion_tokens %d, want %d", r.ID, r.Usage.CompletionTokens, want.completion)
	}
	wantObject := map[string]string{"chat": "chat.completion", "completion": "text_completion"}[kind]
	if stream {
		if kind == "chat" {
			wantObject = "chat.completion.chunk"
			if r.Roles != len(want.texts) {
				t.Fatalf("%s: %d chunks named the assistant role, want one per choice", r.ID, r.Roles)
			}
		}
		if r.Chunks < 2 {
			t.Fatalf("%s: %d chunks", r.ID, r.Chunks)
		}
	}
	if r.Object != wantObject {
		t.Fatalf("%s: object %q, want %q", r.ID, r.Object, wantObject)
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

var chatPrompts = []string{"Hello there!", "What is the answer?", "Tell me a story about the sea.", "héllo wörld ✓"}
var textPrompts = []string{"Once upon a time", "The answer is", "hello and then", "in the sea"}

// The official openai client, streaming and not, chat and completions,
// greedy and seeded sampling, stop strings, n > 1, with the base model and
// 16 adapters at once: every answer equals the request run alone.
func TestOpenAIClient(t *testing.T) {
	_, hs, pm, tok := startServer(t, Options{MaxAdapters: numAdapters})
	ct, err := NewChatTemplate(tok, "")
	if err != nil {
		t.Fatal(err)
	}
	models := []string{BaseModel}
	for i := 0; i < numAdapters; i++ {
		models = append(models, adapterName(i))
	}
	type check struct {
		want      expectation
		promptLen int
		stream    bool
		kind      string
	}
	checks := map[string]check{}
	var reqs []clientRequest
	add := func(id, kind, model string, stream bool, prompt string, p sampling) {
		var ids []int64
		params := p.params(model)
		if kind == "chat" {
			msgs := []Message{{Role: "user", Content: prompt}}
			if ids, err = ct.Encode(msgs); err != nil {
				t.Fatal(err)
			}
			params["messages"] = msgs
		} else {
			raw, err := tok.EncodeIDs(prompt, true)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range raw {
				ids = append(ids, int64(id))
			}
			params["prompt"] = prompt
		}
		checks[id] = check{alone(t, pm, tok, model, ids, p), len(ids), stream, kind}
		reqs = append(reqs, clientRequest{ID: id, Kind: kind, Stream: stream, Params: params})
	}
	for i, m := range models {
		cp, tp := chatPrompts[i%len(chatPrompts)], textPrompts[i%len(textPrompts)]
		add(m+"/chat/greedy", "chat", m, false, cp, sampling{maxTokens: 12})
		add(m+"/chat/stream/sample", "chat", m, true, cp, sampling{maxTokens: 10, temperature: 0.9, topP: 0.95, seed: int64(7 + i), n: 2})
		add(m+"/completion/sample", "completion", m, false, tp, sampling{maxTokens: 10, temperature: 1.2, seed: int64(100 + i)})
		// A stop string taken from the middle of the greedy answer, so
		// that it spans tokens and cuts the answer.
		g := alone(t, pm, tok, m, mustEncode(t, tok, tp), sampling{maxTokens: 14})
		var stops []string
		if r := []rune(g.texts[0]); len(r) >= 8 {
			stops = []string{string(r[4:7]), "\x00never"}
		}
		add(m+"/completion/stream/stop", "completion", m, true, tp, sampling{maxTokens: 14, stops: stops})
	}
	res := runClient(t, hs.URL, 12, reqs)
	stopped := 0
	for id, c := range checks {
		checkResult(t, res[id], c.want, c.promptLen, c.stream, c.kind)
		if c.want.stopped {
			stopped++
		}
	}
	if stopped == 0 {
		t.Fatal("no request was cut by a stop string; the test lost its stop-string cases")
	}
}

func mustEncode(t *testing.T, tok *tokenizer.Tokenizer, s string) []int64 {
	t.Helper()
	raw, err := tok.EncodeIDs(s, true)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int64, len(raw))
	for i, id := range raw {
		out[i] = int64(id)
	}
	return out
}

// rss is the process's resident set size in bytes (VmRSS).
func rss(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatalf("RSS: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// 32 concurrent clients for a fixed number of requests over the base model
// and 16 adapters: no errors, no request lost, every answer right, and the
// server's memory flat between the warm-up and the end.
func TestLoad32Clients(t *testing.T) {
	srv, hs, pm, tok := startServer(t, Options{MaxAdapters: numAdapters, MaxBatch: 32})
	models := []string{BaseModel}
	for i := 0; i < numAdapters; i++ {
		models = append(models, adapterName(i))
	}
	p := sampling{maxTokens: 8}
	want := map[string]expectation{}
	for _, m := range models {
		for _, tp := range textPrompts[:2] {
			want[m+"|"+tp] = alone(t, pm, tok, m, mustEncode(t, tok, tp), p)
		}
	}
	round := func(phase string, n int) {
		var reqs []clientRequest
		keys := map[string]string{}
		for i := 0; i < n; i++ {
			m, tp := models[i%len(models)], textPrompts[(i/len(models))%2]
			id := fmt.Sprintf("%s-%d", phase, i)
			keys[id] = m + "|" + tp
			params := p.params(m)
			params["prompt"] = tp
			reqs = append(reqs, clientRequest{ID: id, Kind: "completion", Stream: i%2 == 0, Params: params})
		}
		res := runClient(t, hs.URL, 32, reqs)
		for id, key := range keys {
			r, ok := res[id]
			if !ok {
				t.Fatalf("%s: request lost", id)
			}
			checkResult(t, r, want[key], len(mustEncode(t, tok, strings.Split(key, "|")[1])), r.Chunks > 0, "completion")
		}
	}
	settle := func() int64 {
		runtime.GC()
		debug.FreeOSMemory()
		return rss(t)
	}
	round("warmup", 96)
	warm := settle()
	round("load", 320)
	end := settle()
	t.Logf("RSS after warm-up %d MiB, after 320 more requests %d MiB; TTFT p50/p99 %v", warm>>20, end>>20, srv.TTFTPercentiles(50, 99))
	if margin := max(warm/5, 48<<20); end > warm+margin {
		t.Fatalf("RSS grew from %d MiB to %d MiB over 320 requests (margin %d MiB)", warm>>20, end>>20, margin>>20)
	}
	st := srv.eng.Stats()
	if st.Queued != 0 || st.Running != 0 {
		t.Fatalf("after the load: %d queued, %d running", st.Queued, st.Running)
	}
}
