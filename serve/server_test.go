package serve

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// post sends body to path and decodes the JSON answer.
func post(t *testing.T, url, path, body string, header ...string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("POST %s: %d, body not JSON: %q", path, resp.StatusCode, b)
	}
	return resp.StatusCode, resp.Header, v
}

// errorOf checks OpenAI's error shape and returns its fields.
func errorOf(t *testing.T, v map[string]any) (typ, code, param, msg string) {
	t.Helper()
	e, ok := v["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error object in %v", v)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := e[k]; !ok {
			t.Fatalf("error object lacks %q: %v", k, e)
		}
	}
	s := func(k string) string { x, _ := e[k].(string); return x }
	return s("type"), s("code"), s("param"), s("message")
}

// Bad input gets a 4xx with OpenAI's error body, and the server keeps
// answering good requests.
func TestBadInput(t *testing.T) {
	_, hs, _, _ := startServer(t, Options{MaxBodyBytes: 64 << 10})
	long := strings.Repeat("hello and then the sea ", 40)
	cases := []struct {
		name, path, body string
		status           int
		code, param      string
	}{
		{"malformed JSON", "/v1/completions", `{"model": "base", "prompt": "hi"`, 400, "invalid_json", ""},
		{"wrong type", "/v1/completions", `{"model": "base", "prompt": "hi", "max_tokens": "ten"}`, 400, "invalid_type", "max_tokens"},
		{"no prompt", "/v1/completions", `{"model": "base"}`, 400, "", "prompt"},
		{"unknown model", "/v1/completions", `{"model": "nonesuch", "prompt": "hi"}`, 404, "model_not_found", "model"},
		{"unknown chat model", "/v1/chat/completions", `{"model": "nonesuch", "messages": [{"role": "user", "content": "hi"}]}`, 404, "model_not_found", "model"},
		{"prompt over context", "/v1/completions", `{"model": "base", "prompt": "` + long + `"}`, 400, "context_length_exceeded", "messages"},
		{"max_tokens over context", "/v1/completions", `{"model": "base", "prompt": "hi", "max_tokens": 500}`, 400, "context_length_exceeded", "max_tokens"},
		{"max_tokens 0", "/v1/completions", `{"model": "base", "prompt": "hi", "max_tokens": 0}`, 400, "integer_out_of_range", "max_tokens"},
		{"n 0", "/v1/completions", `{"model": "base", "prompt": "hi", "n": 0}`, 400, "integer_out_of_range", "n"},
		{"n 129", "/v1/chat/completions", `{"model": "base", "messages": [{"role": "user", "content": "hi"}], "n": 129}`, 400, "integer_out_of_range", "n"},
		{"temperature 2.5", "/v1/completions", `{"model": "base", "prompt": "hi", "temperature": 2.5}`, 400, "decimal_out_of_range", "temperature"},
		{"temperature -1", "/v1/completions", `{"model": "base", "prompt": "hi", "temperature": -1}`, 400, "decimal_out_of_range", "temperature"},
		{"top_p 0", "/v1/completions", `{"model": "base", "prompt": "hi", "top_p": 0}`, 400, "decimal_out_of_range", "top_p"},
		{"top_p 1.5", "/v1/completions", `{"model": "base", "prompt": "hi", "top_p": 1.5}`, 400, "decimal_out_of_range", "top_p"},
		{"five stops", "/v1/completions", `{"model": "base", "prompt": "hi", "stop": ["a","b","c","d","e"]}`, 400, "", "stop"},
		{"token out of vocab", "/v1/completions", `{"model": "base", "prompt": [1, 99999]}`, 400, "", "prompt"},
		{"no messages", "/v1/chat/completions", `{"model": "base", "messages": []}`, 400, "", "messages"},
		{"bad role", "/v1/chat/completions", `{"model": "base", "messages": [{"role": "wizard", "content": "hi"}]}`, 400, "", "messages[0].role"},
		{"image part", "/v1/chat/completions", `{"model": "base", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}`, 400, "", "messages[0].content"},
		{"logprobs", "/v1/chat/completions", `{"model": "base", "messages": [{"role": "user", "content": "hi"}], "logprobs": true}`, 400, "unsupported_parameter", "logprobs"},
		{"completion logprobs", "/v1/completions", `{"model": "base", "prompt": "hi", "logprobs": 2}`, 400, "unsupported_parameter", "logprobs"},
		{"best_of", "/v1/completions", `{"model": "base", "prompt": "hi", "best_of": 3}`, 400, "unsupported_parameter", "best_of"},
		{"tools", "/v1/chat/completions", `{"model": "base", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}`, 400, "unsupported_parameter", "tools"},
		{"oversized body", "/v1/completions", `{"model": "base", "prompt": "` + strings.Repeat("x", 70<<10) + `"}`, 413, "request_too_large", ""},
	}
	for _, c := range cases {
		status, _, v := post(t, hs.URL, c.path, c.body)
		typ, code, param, msg := errorOf(t, v)
		if status != c.status || code != c.code || param != c.param || typ == "" || msg == "" {
			t.Errorf("%s: %d %s code %q param %q (%s), want %d code %q param %q", c.name, status, typ, code, param, msg, c.status, c.code, c.param)
		}
	}
	resp, err := http.Get(hs.URL + "/v1/completions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/completions: %d, want 405", resp.StatusCode)
	}
	// Still serving.
	status, _, v := post(t, hs.URL, "/v1/completions", `{"model": "lora03", "prompt": "hi", "max_tokens": 3, "temperature": 0}`)
	if status != 200 {
		t.Fatalf("a good request after the bad ones: %d %v", status, v)
	}
}

// A full queue answers 429 with Retry-After; the requests taken finish.
func TestQueueFull(t *testing.T) {
	_, hs, _, _ := startServer(t, Options{MaxBatch: 1, MaxQueue: 1})
	const n = 8
	var wg sync.WaitGroup
	statuses := make([]int, n)
	retry := make([]string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, hs.URL+"/v1/completions",
				strings.NewReader(`{"model": "base", "prompt": "Once upon a time", "max_tokens": 100, "temperature": 0}`))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses[i], retry[i] = resp.StatusCode, resp.Header.Get("Retry-After")
		}()
	}
	wg.Wait()
	ok, full := 0, 0
	for i, s := range statuses {
		switch s {
		case 200:
			ok++
		case 429:
			full++
			if retry[i] == "" {
				t.Errorf("429 without Retry-After")
			}
		default:
			t.Errorf("status %d", s)
		}
	}
	if ok == 0 || full == 0 {
		t.Fatalf("%d answered, %d refused with 429 (want some of each: batch 1, queue 1, %d at once)", ok, full, n)
	}
}

// Adapters load and unload at run time with the admin token; the cap
// unloads the least recently used idle adapter, which loads again when
// named.
func TestAdaptersAdmin(t *testing.T) {
	f := serveFixture(t)
	srv, hs, pm, tok := startServer(t, Options{MaxAdapters: 3, AdminToken: "s3cret", Adapters: map[string]string{}})
	load := `{"action": "load", "name": "extra", "path": "` + f.adapters["lora05"] + `"}`
	if status, _, v := post(t, hs.URL, "/v1/adapters", load); status != 401 {
		t.Fatalf("no token: %d %v", status, v)
	}
	if status, _, v := post(t, hs.URL, "/v1/adapters", load, "Authorization", "Bearer wrong"); status != 401 {
		t.Fatalf("wrong token: %d %v", status, v)
	}
	if status, _, v := post(t, hs.URL, "/v1/adapters", load, "Authorization", "Bearer s3cret"); status != 200 {
		t.Fatalf("load: %d %v", status, v)
	}
	if status, _, v := post(t, hs.URL, "/v1/adapters", load, "Authorization", "Bearer s3cret"); status != 409 {
		t.Fatalf("second load: %d %v", status, v)
	}
	bad := `{"action": "load", "name": "broken", "path": "/nonexistent"}`
	if status, _, v := post(t, hs.URL, "/v1/adapters", bad, "Authorization", "Bearer s3cret"); status != 400 {
		t.Fatalf("load from a missing folder: %d %v", status, v)
	}
	// "extra" is lora05's weights: it answers as lora05 does alone.
	p := sampling{maxTokens: 6}
	want := alone(t, pm, tok, "extra", mustEncode(t, tok, "in the sea"), p)
	_, _, v := post(t, hs.URL, "/v1/completions", `{"model": "extra", "prompt": "in the sea", "max_tokens": 6, "temperature": 0}`)
	if got := v["choices"].([]any)[0].(map[string]any)["text"]; got != want.texts[0] {
		t.Fatalf("extra answered %q, want %q", got, want.texts[0])
	}
	models := listModels(t, hs.URL)
	if !models["extra"] || !models["llama-tiny"] || !models["base"] {
		t.Fatalf("/v1/models: %v", models)
	}
	// Load more than the cap through the API: the least recently used
	// idle ones are unloaded, and still served.
	for _, n := range []string{"lora06", "lora07", "lora08"} {
		body := `{"action": "load", "name": "` + n + `", "path": "` + f.adapters[n] + `"}`
		if status, _, v := post(t, hs.URL, "/v1/adapters", body, "Authorization", "Bearer s3cret"); status != 200 {
			t.Fatalf("load %s: %d %v", n, status, v)
		}
	}
	if res, known := srv.adapters.counts(); res > 3 || known != 5 {
		t.Fatalf("%d resident (cap 3), %d known (want lora00, extra, lora06-08)", res, known)
	}
	for _, n := range []string{"extra", "lora06", "lora00"} { // some of these were unloaded: they load again
		status, _, v := post(t, hs.URL, "/v1/completions", `{"model": "`+n+`", "prompt": "in the sea", "max_tokens": 6, "temperature": 0}`)
		if status != 200 {
			t.Fatalf("%s after eviction: %d %v", n, status, v)
		}
		w := alone(t, pm, tok, n, mustEncode(t, tok, "in the sea"), p)
		if got := v["choices"].([]any)[0].(map[string]any)["text"]; got != w.texts[0] {
			t.Fatalf("%s answered %q after reloading, want %q", n, got, w.texts[0])
		}
		if res, _ := srv.adapters.counts(); res > 3 {
			t.Fatalf("%d resident adapters, cap 3", res)
		}
	}
	unload := `{"action": "unload", "name": "extra"}`
	if status, _, v := post(t, hs.URL, "/v1/adapters", unload, "Authorization", "Bearer s3cret"); status != 200 {
		t.Fatalf("unload: %d %v", status, v)
	}
	if status, _, _ := post(t, hs.URL, "/v1/completions", `{"model": "extra", "prompt": "hi"}`); status != 404 {
		t.Fatalf("unloaded adapter: %d, want 404", status)
	}
	if listModels(t, hs.URL)["extra"] {
		t.Fatal("unloaded adapter still listed")
	}
}

func listModels(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.Object != "list" {
		t.Fatalf("/v1/models: %v %+v", err, v)
	}
	m := map[string]bool{}
	for _, d := range v.Data {
		m[d.ID] = d.Object == "model"
	}
	return m
}

// The adapter cap never unloads an adapter a request is using.
func TestAdapterSetPinning(t *testing.T) {
	f := serveFixture(t)
	pm, _ := loadServingModel(t, f)
	a := newAdapterSet(pm, 2)
	var loaded, unloaded []string
	a.loadFn = func(dir, name string) error { loaded = append(loaded, name); return nil }
	a.unloadFn = func(name string) error { unloaded = append(unloaded, name); return nil }
	delete(a.resident, adapterName(0)) // start empty
	for _, n := range []string{"a", "b", "c"} {
		a.register(n, "/dir/"+n)
	}
	relA, e := a.acquire("a")
	if e != nil {
		t.Fatal(e)
	}
	relB, e := a.acquire("b")
	if e != nil {
		t.Fatal(e)
	}
	if _, e := a.acquire("c"); e == nil || e.status != http.StatusServiceUnavailable {
		t.Fatalf("c with a and b in use at cap 2: %v, want 503", e)
	}
	relB()
	relC, e := a.acquire("c") // b is idle: it goes
	if e != nil {
		t.Fatal(e)
	}
	if strings.Join(unloaded, ",") != "b" {
		t.Fatalf("unloaded %v, want [b]", unloaded)
	}
	relA()
	relC()
	if _, e := a.acquire("b"); e != nil { // a is the least recently used now
		t.Fatal(e)
	}
	if strings.Join(unloaded, ",") != "b,a" || strings.Join(loaded, ",") != "a,b,c,b" {
		t.Fatalf("loaded %v unloaded %v", loaded, unloaded)
	}
	if e := a.unload("nonesuch"); e == nil || e.status != 404 {
		t.Fatalf("unload unknown: %v", e)
	}
	if e := a.unload("b"); e == nil || e.status != 409 {
		t.Fatalf("unload b in use: %v, want 409", e)
	}
}

// A client that goes away mid-stream cancels its generation.
func TestClientGoesAway(t *testing.T) {
	srv, hs, _, _ := startServer(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, hs.URL+"/v1/completions",
		strings.NewReader(`{"model": "lora01", "prompt": "Once", "max_tokens": 120, "temperature": 0, "stream": true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp.Body)
	if _, err := r.ReadString('\n'); err != nil { // the first event
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	waitFor(t, "the cancelled generation to leave the engine", func() bool {
		st := srv.eng.Stats()
		return st.Running == 0 && st.Queued == 0
	})
}

// Shutdown refuses new requests and lets the running ones finish.
func TestGracefulShutdown(t *testing.T) {
	srv, hs, _, _ := startServer(t, Options{})
	resp, err := http.Post(hs.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model": "lora02", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 40, "temperature": 0, "stream": true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	waitFor(t, "/health to say 503", func() bool {
		h, err := http.Get(hs.URL + "/health")
		if err != nil {
			return false
		}
		h.Body.Close()
		return h.StatusCode == http.StatusServiceUnavailable
	})
	if status, _, v := post(t, hs.URL, "/v1/completions", `{"model": "base", "prompt": "hi"}`); status != 503 {
		t.Fatalf("a request during shutdown: %d %v", status, v)
	}
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(rest), `"finish_reason":"`) || !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Fatalf("the running request did not finish: %q", rest)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// /metrics is Prometheus' text format with the serving counters.
func TestMetricsAndHealth(t *testing.T) {
	srv, hs, _, _ := startServer(t, Options{})
	h, err := http.Get(hs.URL + "/health")
	if err != nil || h.StatusCode != 200 {
		t.Fatalf("/health: %v %v", err, h)
	}
	h.Body.Close()
	for i := 0; i < 3; i++ {
		if status, _, v := post(t, hs.URL, "/v1/completions", fmt.Sprintf(`{"model": "lora0%d", "prompt": "hi", "max_tokens": 4}`, i)); status != 200 {
			t.Fatalf("%d %v", status, v)
		}
	}
	post(t, hs.URL, "/v1/completions", `{"model": "nonesuch", "prompt": "hi"}`)
	waitFor(t, "the engine to retire the finished rows", func() bool { st := srv.eng.Stats(); return st.Running == 0 && st.Queued == 0 })
	resp, err := http.Get(hs.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	text := string(b)
	for _, want := range []string{
		`peft_requests_total{endpoint="/v1/completions",code="200"} 3`,
		`peft_requests_total{endpoint="/v1/completions",code="404"} 1`,
		"# TYPE peft_time_to_first_token_seconds histogram",
		`peft_time_to_first_token_seconds_bucket{le="+Inf"} 3`,
		"peft_time_to_first_token_seconds_count 3",
		"peft_queue_length 0", "peft_running_sequences 0", "# TYPE peft_batch_size gauge",
		"peft_generated_tokens_total ", `peft_sequences_total{result="completed"} 3`, "peft_decode_steps_total ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, text)
		}
	}
	// every sample line is "name{labels} value" or "name value"
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if f := strings.Fields(line); len(f) != 2 || !strings.HasPrefix(f[0], "peft_") {
			t.Errorf("not a sample line: %q", line)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
