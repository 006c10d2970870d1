package serve

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopeft/peft/engine"
	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tokenizer"
)

// BaseModel is the model name that selects the base model without an
// adapter (the base model's own name does too).
const BaseModel = "base"

// Options configure a Server. The zero value of each field is a default.
type Options struct {
	// ModelName is the base model's name in /v1/models and in requests
	// (e.g. the checkpoint folder's name); "base" always works too.
	ModelName string
	// Adapters are adapters to serve, name → PEFT adapter folder. They are
	// loaded now up to MaxAdapters; the others load on first use. Adapters
	// already in the model stay resident (and are never unloaded for the
	// cap) unless they are named here with their folder.
	Adapters map[string]string
	// MaxAdapters caps the adapters resident in memory (0: no cap): to
	// load one more, the least recently used adapter that no request is
	// using is unloaded; it loads again from its folder when named.
	MaxAdapters int
	// AdminToken protects POST /v1/adapters (Authorization: Bearer
	// TOKEN); "" disables that endpoint.
	AdminToken string
	// MaxBatch and MaxQueue are the engine's: rows in one decoding step
	// (default 16) and requests waiting for a place (default 256; past
	// that, requests get a 429 with Retry-After).
	MaxBatch, MaxQueue int
	// MaxContext is the model's context length (config.json's
	// max_position_embeddings): prompt + max_tokens must fit. 0: no check
	// here (the engine's own).
	MaxContext int
	// MaxBodyBytes caps a request body (default 4 MiB; larger: 413).
	MaxBodyBytes int64
	// EOSTokenIDs end a sequence (the model's generation_config.json
	// eos_token_id). Empty: the tokenizer's eos_token.
	EOSTokenIDs []int64
	// ChatTemplate is the fallback chat template's name when the
	// tokenizer has no chat_template (see NewChatTemplate).
	ChatTemplate string
	// DefaultMaxTokens is max_tokens when a completion request gives none
	// (OpenAI's default: 16). Chat requests default to the rest of the
	// context (or 256 without MaxContext).
	DefaultMaxTokens int
}

// Server is an OpenAI-compatible HTTP API over a peft.Model: an
// http.Handler to mount in one's own server (http.Handle("/", srv)).
//
//	POST /v1/completions         prompt → text (stream: server-sent events)
//	POST /v1/chat/completions    messages → reply, through the model's chat template
//	GET  /v1/models              the base model and the adapters
//	POST /v1/adapters            {"action": "load"|"unload", "name", "path"} (admin token)
//	GET  /health                 200 while serving, 503 once shutting down
//	GET  /metrics                Prometheus text format
//
// The request's "model" picks the base model ("base" or ModelName) or an
// adapter by name; requests with different adapters are decoded together
// in one batch by package engine.
//
// A Server is safe for concurrent use. The model must not be changed
// behind its back while it serves (load and unload adapters through
// POST /v1/adapters, LoadAdapter and UnloadAdapter).
type Server struct {
	opt      Options
	model    *peft.Model
	tok      *tokenizer.Tokenizer
	chat     *ChatTemplate
	eng      *engine.Engine
	adapters *adapterSet
	metrics  *metrics
	eos      []int64
	mux      *http.ServeMux
	closing  atomic.Bool
	created  int64
	// running counts the requests being generated; idle is closed when
	// it drops to 0 after closing is set.
	mu      sync.Mutex
	running int
	idle    chan struct{}
}

// New starts an engine over m and returns the server. tok is the model's
// tokenizer (its tokenizer_config.json gives the chat template).
func New(m *peft.Model, tok *tokenizer.Tokenizer, o Options) (*Server, error) {
	if m == nil || tok == nil {
		return nil, errors.New("serve: New needs a model and its tokenizer")
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 4 << 20
	}
	if o.DefaultMaxTokens <= 0 {
		o.DefaultMaxTokens = 16
	}
	if o.ModelName == "" {
		o.ModelName = BaseModel
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 16
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = 256
	}
	if o.MaxAdapters < 0 {
		return nil, fmt.Errorf("serve: MaxAdapters %d must be >= 0", o.MaxAdapters)
	}
	chat, err := NewChatTemplate(tok, o.ChatTemplate)
	if err != nil {
		return nil, err
	}
	eos := append([]int64(nil), o.EOSTokenIDs...)
	if len(eos) == 0 {
		if id, ok := tok.TokenToID(tok.Config().EOSToken); ok && tok.Config().EOSToken != "" {
			eos = []int64{int64(id)}
		}
	}
	s := &Server{opt: o, model: m, tok: tok, chat: chat, metrics: newMetrics(), eos: eos, created: time.Now().Unix()}
	s.adapters = newAdapterSet(m, o.MaxAdapters)
	for name, dir := range o.Adapters {
		if name == BaseModel || name == o.ModelName || name == peft.BaseAdapterName {
			return nil, fmt.Errorf("serve: adapter name %q is taken by the base model", name)
		}
		if r, ok := s.adapters.resident[name]; ok { // already in the model: evictable now that its folder is known
			r.fixed = false
			s.adapters.dirs[name] = dir
			continue
		}
		if e := s.adapters.load(name, dir); e != nil {
			if e.status != http.StatusServiceUnavailable { // over the cap: loads on first use
				return nil, fmt.Errorf("serve: %s", e.Message)
			}
			s.adapters.register(name, dir)
		}
	}
	s.eng, err = engine.New(m, engine.Options{MaxBatch: o.MaxBatch, MaxQueue: o.MaxQueue, MaxContext: o.MaxContext})
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("/v1/completions", s.handleCompletions)
	s.mux.HandleFunc("/v1/chat/completions", s.handleChat)
	s.mux.HandleFunc("/v1/models", s.handleModels)
	s.mux.HandleFunc("/v1/adapters", s.handleAdapters)
	s.mux.HandleFunc("/health", s.handleHealth)
	s.mux.HandleFunc("/metrics", s.handleMetrics)
	return s, nil
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	defer func() {
		if v := recover(); v != nil { // a bug must not take the server down
			if !rec.wrote {
				writeError(rec, &apiError{status: http.StatusInternalServerError, Type: "server_error", Message: fmt.Sprint("internal error: ", v)})
			}
		}
		s.metrics.request(endpointName(r.URL.Path), rec.status)
	}()
	s.mux.ServeHTTP(rec, r)
}

func endpointName(p string) string {
	switch p {
	case "/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/adapters", "/health", "/metrics":
		return p
	}
	return "other"
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Shutdown stops taking requests (503, /health too) and waits for the
// running ones to finish, or for ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	if s.idle == nil {
		s.idle = make(chan struct{})
		if s.running == 0 {
			close(s.idle)
		}
	}
	idle := s.idle
	s.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.eng.Shutdown(ctx)
}

// begin counts a request in, unless the server is shutting down.
func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.running++
	return true
}

func (s *Server) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running--
	if s.running == 0 && s.idle != nil {
		close(s.idle)
	}
}

// LoadAdapter loads the adapter saved in dir under name and serves it.
func (s *Server) LoadAdapter(name, dir string) error {
	if e := s.checkAdapterName(name); e != nil {
		return e
	}
	if e := s.adapters.load(name, dir); e != nil {
		return e
	}
	return nil
}

// UnloadAdapter stops serving name and frees it (an error while a request
// uses it).
func (s *Server) UnloadAdapter(name string) error {
	if e := s.adapters.unload(name); e != nil {
		return e
	}
	return nil
}

// TTFTPercentiles are percentiles of the time to first token observed so
// far (p in (0, 100]), as /metrics' histogram records it.
func (s *Server) TTFTPercentiles(p ...float64) []time.Duration { return s.metrics.percentiles(p...) }

func (s *Server) checkAdapterName(name string) *apiError {
	if name == "" || name == BaseModel || name == s.opt.ModelName || name == peft.BaseAdapterName || strings.ContainsAny(name, ". /") {
		return invalid("name", "invalid_name", "adapter name %q: want a non-empty name without dots, slashes or spaces, other than %q and %q", name, BaseModel, s.opt.ModelName)
	}
	return nil
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if s.closing.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting down"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	st := s.eng.Stats()
	res, known := s.adapters.counts()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	s.metrics.write(w, gauges{queued: st.Queued, running: st.Running, residentAdapters: res, knownAdapters: known, batchSize: meanBatch(st),
		completed: st.Completed, failed: st.Failed, rejected: st.Rejected, steps: st.Steps})
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, methodNotAllowed(r.Method, "GET"))
		return
	}
	type model struct {
		ID      string  `json:"id"`
		Object  string  `json:"object"`
		Created int64   `json:"created"`
		OwnedBy string  `json:"owned_by"`
		Parent  *string `json:"parent"`
	}
	list := []model{{ID: BaseModel, Object: "model", Created: s.created, OwnedBy: "gopeft"}}
	if s.opt.ModelName != BaseModel {
		list = append(list, model{ID: s.opt.ModelName, Object: "model", Created: s.created, OwnedBy: "gopeft"})
	}
	for _, n := range s.adapters.names() {
		list = append(list, model{ID: n, Object: "model", Created: s.created, OwnedBy: "gopeft", Parent: strp(s.opt.ModelName)})
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": list})
}

func methodNotAllowed(got, want string) *apiError {
	return &apiError{status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: strp("method_not_allowed"),
		Message: fmt.Sprintf("method %s is not allowed here (use %s)", got, want)}
}

// handleAdapters is POST /v1/adapters {"action": "load", "name": N,
// "path": DIR} or {"action": "unload", "name": N}.
func (s *Server) handleAdapters(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, methodNotAllowed(r.Method, "POST"))
		return
	}
	if s.opt.AdminToken == "" {
		writeError(w, &apiError{status: http.StatusForbidden, Type: "invalid_request_error", Code: strp("admin_disabled"),
			Message: "adapter management is disabled (start the server with an admin token)"})
		return
	}
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(s.opt.AdminToken)) != 1 {
		w.Header().Set("WWW-Authenticate", "Bearer")
		writeError(w, &apiError{status: http.StatusUnauthorized, Type: "authentication_error", Code: strp("invalid_api_key"),
			Message: "POST /v1/adapters needs the admin token (Authorization: Bearer TOKEN)"})
		return
	}
	var req struct {
		Action string `json:"action"`
		Name   string `json:"name"`
		Path   string `json:"path"`
	}
	if e := s.decode(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	switch req.Action {
	case "load":
		if e := s.checkAdapterName(req.Name); e != nil {
			writeError(w, e)
			return
		}
		if req.Path == "" {
			writeError(w, invalid("path", "", "path (the adapter's folder on the server) is required to load"))
			return
		}
		if e := s.adapters.load(req.Name, req.Path); e != nil {
			writeError(w, e)
			return
		}
	case "unload":
		if e := s.adapters.unload(req.Name); e != nil {
			writeError(w, e)
			return
		}
	default:
		writeError(w, invalid("action", "", "action %q: want \"load\" or \"unload\"", req.Action))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "adapter", "action": req.Action, "name": req.Name, "adapters": s.adapters.names()})
}

// decode reads a JSON body of at most MaxBodyBytes into v.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) *apiError {
	body := http.MaxBytesReader(w, r.Body, s.opt.MaxBodyBytes)
	b, err := io.ReadAll(body)
	if err != nil {
		return jsonError(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return jsonError(err)
	}
	return nil
}

// job is one request's generation: its prompt(s), adapter and settings.
type job struct {
	model   string // as the request named it (echoed back)
	adapter string // "" for the base model
	prompts [][]int64
	cfg     generate.GenerationConfig
	n       int
	stops   []string
	stream  bool
	usage   bool // stream_options.include_usage
}

// prepare checks the sampling parameters shared by both endpoints and
// resolves the model; prompts are filled by the caller before.
func (s *Server) prepare(p *samplingParams, prompts [][]int64, chat bool) (*job, *apiError) {
	j := &job{model: p.Model, prompts: prompts, stream: p.Stream, n: 1}
	switch p.Model {
	case "", BaseModel, s.opt.ModelName:
	default:
		if !s.adapters.known(p.Model) {
			return nil, notFound(p.Model)
		}
		j.adapter = p.Model
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{"logprobs", p.Logprobs}, {"top_logprobs", p.TopLogprobs}, {"best_of", p.BestOf}, {"tools", p.Tools}, {"suffix", p.Suffix}} {
		v := string(f.raw)
		unset := v == "" || v == "null" || v == "false" || v == "0" || v == "[]" || v == `""` ||
			(f.name == "best_of" && v == "1") // best_of 1 is the default (logprobs 1 asks for one)
		if !unset {
			return nil, invalid(f.name, "unsupported_parameter", "%s is not supported by this server", f.name)
		}
	}
	if p.Echo {
		return nil, invalid("echo", "unsupported_parameter", "echo is not supported by this server")
	}
	if p.StreamOptions != nil {
		if !p.Stream {
			return nil, invalid("stream_options", "", "stream_options is only allowed with stream: true")
		}
		j.usage = p.StreamOptions.IncludeUsage
	}
	if p.N != nil {
		if *p.N < 1 || *p.N > 128 {
			return nil, invalid("n", "integer_out_of_range", "n must be between 1 and 128, got %d", *p.N)
		}
		j.n = *p.N
	}
	cfg := generate.DefaultGenerationConfig()
	cfg.TopK = 0 // OpenAI's API has no top-k unless asked (top_k extension)
	cfg.EOSTokenID = append(generate.TokenIDs(nil), s.eos...)
	temp := 1.0
	if p.Temperature != nil {
		if t := *p.Temperature; !(t >= 0 && t <= 2) {
			return nil, invalid("temperature", "decimal_out_of_range", "temperature must be between 0 and 2, got %v", t)
		}
		temp = *p.Temperature
	}
	if temp > 0 {
		cfg.DoSample, cfg.Temperature = true, temp
	}
	if p.TopP != nil {
		if t := *p.TopP; !(t > 0 && t <= 1) {
			return nil, invalid("top_p", "decimal_out_of_range", "top_p must be greater than 0 and at most 1, got %v", t)
		}
		cfg.TopP = *p.TopP
	}
	if p.TopK != nil {
		if *p.TopK < 0 {
			return nil, invalid("top_k", "integer_out_of_range", "top_k must be >= 0 (0: all tokens), got %d", *p.TopK)
		}
		cfg.TopK = *p.TopK
	}
	if p.RepetitionPenalty != nil {
		if r := *p.RepetitionPenalty; !(r > 0 && r <= 10) || math.IsNaN(r) {
			return nil, invalid("repetition_penalty", "decimal_out_of_range", "repetition_penalty must be in (0, 10], got %v", r)
		}
		cfg.RepetitionPenalty = *p.RepetitionPenalty
	}
	if p.Seed != nil {
		seed := *p.Seed
		cfg.Seed = &seed
	}
	if !cfg.DoSample && j.n > 1 {
		// Greedy choices would all be the same; OpenAI allows it, so do we.
	}
	stops, e := stopStrings(p.Stop)
	if e != nil {
		return nil, e
	}
	j.stops = stops

	longest := 0
	for i, pr := range prompts {
		if len(pr) == 0 {
			return nil, invalid("prompt", "", "prompt %d is empty", i)
		}
		for _, id := range pr {
			if _, ok := s.tok.IDToToken(int(id)); !ok || id < 0 {
				return nil, invalid("prompt", "", "prompt %d: token id %d is not in the tokenizer's vocabulary", i, id)
			}
		}
		longest = max(longest, len(pr))
	}
	maxTok := p.MaxTokens
	if p.MaxCompletionTokens != nil {
		maxTok = p.MaxCompletionTokens
	}
	ctxLen := s.opt.MaxContext
	if ctxLen > 0 && longest >= ctxLen {
		return nil, invalid("messages", "context_length_exceeded",
			"this model's maximum context length is %d tokens; the prompt has %d tokens, leaving no room for an answer", ctxLen, longest)
	}
	if maxTok != nil {
		if *maxTok < 1 {
			return nil, invalid("max_tokens", "integer_out_of_range", "max_tokens must be at least 1, got %d", *maxTok)
		}
		if ctxLen > 0 && longest+*maxTok > ctxLen {
			return nil, invalid("max_tokens", "context_length_exceeded",
				"this model's maximum context length is %d tokens; the prompt has %d tokens and max_tokens asks for %d more", ctxLen, longest, *maxTok)
		}
		cfg.MaxNewTokens = *maxTok
	} else {
		switch {
		case !chat:
			cfg.MaxNewTokens = s.opt.DefaultMaxTokens
		case ctxLen > 0:
			cfg.MaxNewTokens = ctxLen - longest
		default:
			cfg.MaxNewTokens = 256
		}
		if ctxLen > 0 {
			cfg.MaxNewTokens = min(cfg.MaxNewTokens, ctxLen-longest)
		}
	}
	j.cfg = cfg
	return j, nil
}

func stopStrings(raw json.RawMessage) ([]string, *apiError) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		if one == "" {
			return nil, nil
		}
		return []string{one}, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, invalid("stop", "", "stop must be a string or a list of strings")
	}
	if len(list) > 4 {
		return nil, invalid("stop", "", "stop takes at most 4 sequences, got %d", len(list))
	}
	var out []string
	for _, s := range list {
		if s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// completionPrompts reads /v1/completions' prompt: a string, a list of
// strings, a list of token ids, or a list of lists of token ids.
func (s *Server) completionPrompts(raw json.RawMessage) ([][]int64, *apiError) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, invalid("prompt", "", "prompt is required")
	}
	enc := func(text string) ([]int64, *apiError) {
		ids, err := s.tok.EncodeIDs(text, true)
		if err != nil {
			return nil, invalid("prompt", "", "prompt: %v", err)
		}
		out := make([]int64, len(ids))
		for i, id := range ids {
			out[i] = int64(id)
		}
		return out, nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		p, e := enc(one)
		return [][]int64{p}, e
	}
	var texts []string
	if json.Unmarshal(raw, &texts) == nil && len(texts) > 0 {
		out := make([][]int64, len(texts))
		for i, t := range texts {
			p, e := enc(t)
			if e != nil {
				return nil, e
			}
			out[i] = p
		}
		return out, nil
	}
	var ids []int64
	if json.Unmarshal(raw, &ids) == nil && len(ids) > 0 {
		return [][]int64{ids}, nil
	}
	var lists [][]int64
	if json.Unmarshal(raw, &lists) == nil && len(lists) > 0 {
		return lists, nil
	}
	return nil, invalid("prompt", "", "prompt must be a string, a list of strings, a list of token ids or a list of such lists")
}

func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, methodNotAllowed(r.Method, "POST"))
		return
	}
	var req completionRequest
	if e := s.decode(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	prompts, e := s.completionPrompts(req.Prompt)
	if e != nil {
		writeError(w, e)
		return
	}
	j, e := s.prepare(&req.samplingParams, prompts, false)
	if e != nil {
		writeError(w, e)
		return
	}
	s.run(w, r, j, false)
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, methodNotAllowed(r.Method, "POST"))
		return
	}
	var req chatRequest
	if e := s.decode(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	msgs, e := messagesFrom(req.Messages)
	if e != nil {
		writeError(w, e)
		return
	}
	ids, err := s.chat.Encode(msgs)
	if err != nil {
		writeError(w, invalid("messages", "", "messages: %v", err))
		return
	}
	j, e := s.prepare(&req.samplingParams, [][]int64{ids}, true)
	if e != nil {
		writeError(w, e)
		return
	}
	s.run(w, r, j, true)
}

// choice is one generated answer: prompt p's c-th sample.
type choice struct {
	index  int
	prompt []int64
	events <-chan engine.Event
	cancel context.CancelFunc
	start  time.Time

	text      strings.Builder
	finish    string
	generated int
}

// run submits every choice of j to the engine and answers, streaming or
// not.
func (s *Server) run(w http.ResponseWriter, r *http.Request, j *job, chat bool) {
	if !s.begin() {
		writeError(w, &apiError{status: http.StatusServiceUnavailable, Type: "server_error", Code: strp("shutting_down"),
			Message: "the server is shutting down", retryAfter: 1})
		return
	}
	defer s.end()
	adapter := peft.BaseAdapterName
	if j.adapter != "" {
		release, e := s.adapters.acquire(j.adapter)
		if e != nil {
			writeError(w, e)
			return
		}
		defer release()
		adapter = j.adapter
	}
	ctx, cancelAll := context.WithCancel(r.Context())
	defer cancelAll()
	var choices []*choice
	// Before the adapter is released (the defer above runs after this
	// one), every choice's generation has left the engine: a choice cut
	// by a stop string or a client gone away is cancelled, and its
	// channel closes once the engine has retired the row.
	defer func() {
		for _, c := range choices {
			c.cancel()
			drain(c.events)
		}
	}()
	promptTokens := 0
	for pi, p := range j.prompts {
		promptTokens += len(p)
		for k := 0; k < j.n; k++ {
			cfg := j.cfg
			if cfg.Seed != nil && k > 0 { // choice k samples with seed + k
				seed := *cfg.Seed + int64(k)
				cfg.Seed = &seed
			}
			cctx, cancel := context.WithCancel(ctx)
			start := time.Now()
			ev, err := s.eng.Submit(cctx, engine.Request{Prompt: p, Adapter: adapter, Config: cfg})
			if err != nil {
				cancel()
				writeError(w, submitError(err))
				return
			}
			choices = append(choices, &choice{index: pi*j.n + k, prompt: p, events: ev, cancel: cancel, start: start})
		}
	}
	id := newID(chat)
	if j.stream {
		s.stream(w, ctx, j, chat, id, choices, promptTokens)
		return
	}
	var wg sync.WaitGroup
	errs := make([]*apiError, len(choices))
	for i, c := range choices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.collect(c, j.stops, func(string) error { return nil })
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != nil {
			writeError(w, e)
			return
		}
	}
	completion := 0
	for _, c := range choices {
		completion += c.generated
	}
	s.metrics.tokens(promptTokens, completion)
	u := &usage{PromptTokens: promptTokens, CompletionTokens: completion, TotalTokens: promptTokens + completion}
	created := time.Now().Unix()
	if chat {
		resp := chatResponse{ID: id, Object: "chat.completion", Created: created, Model: j.model, Usage: u}
		for _, c := range choices {
			f := c.finish
			resp.Choices = append(resp.Choices, chatChoice{Index: c.index, Message: chatResponseMessage{Role: "assistant", Content: c.text.String()}, FinishReason: &f})
		}
		writeJSON(w, http.StatusOK, resp)
		return
	}
	resp := completionResponse{ID: id, Object: "text_completion", Created: created, Model: j.model, Usage: u}
	for _, c := range choices {
		f := c.finish
		resp.Choices = append(resp.Choices, completionChoice{Index: c.index, Text: c.text.String(), FinishReason: &f})
	}
	writeJSON(w, http.StatusOK, resp)
}

func submitError(err error) *apiError {
	switch {
	case errors.Is(err, engine.ErrQueueFull):
		return &apiError{status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: strp("queue_full"),
			Message: "the server's queue is full: retry later", retryAfter: 1}
	case errors.Is(err, engine.ErrClosed):
		return &apiError{status: http.StatusServiceUnavailable, Type: "server_error", Code: strp("shutting_down"),
			Message: "the server is shutting down", retryAfter: 1}
	case errors.Is(err, engine.ErrContextLength):
		return invalid("max_tokens", "context_length_exceeded", "%v", err)
	}
	return invalid("", "", "%v", err)
}

func drain(ch <-chan engine.Event) {
	for range ch {
	}
}

// collect reads c's events until it finishes (run drains what is left): the detokenised text goes
// through the stop strings to emit (the new text of each step) and into
// c.text. A stop string cancels the rest of the generation.
func (s *Server) collect(c *choice, stops []string, emit func(string) error) *apiError {
	defer c.cancel()
	dec := s.tok.NewDecodeStream(true)
	var ids []int
	sm := &stopMatcher{stops: stops}
	var released strings.Builder // decoded text passed to sm
	first := true
	out := func(piece string) (stopped bool, err error) {
		txt, stop := sm.push(piece)
		if txt != "" {
			c.text.WriteString(txt)
			if err := emit(txt); err != nil {
				return false, err
			}
		}
		return stop, nil
	}
	finish := ""
	for ev := range c.events {
		if ev.Err != nil {
			if errors.Is(ev.Err, context.Canceled) || errors.Is(ev.Err, context.DeadlineExceeded) {
				return &apiError{status: 499, Type: "invalid_request_error", Message: "request cancelled"}
			}
			return &apiError{status: http.StatusInternalServerError, Type: "server_error", Message: ev.Err.Error()}
		}
		if tok, ok := eventToken(ev); ok {
			if first {
				s.metrics.ttft(time.Since(c.start))
				first = false
			}
			c.generated++
			ids = append(ids, int(tok))
			if piece, ok := dec.Step(int(tok)); ok {
				released.WriteString(piece)
				stopped, err := out(piece)
				if err != nil {
					return &apiError{status: 499, Type: "invalid_request_error", Message: err.Error()}
				}
				if stopped {
					c.finish = "stop"
					c.cancel()
					return nil
				}
			}
		}
		if ev.Finish != "" {
			finish = ev.Finish
			break
		}
	}
	if finish == "" {
		finish = "length"
	}
	// What the stream decoder still holds (an incomplete character at the
	// end) is what a full decode has past the released text.
	if full, r := s.tok.Decode(ids, true), released.String(); len(full) > len(r) && strings.HasPrefix(full, r) {
		stopped, err := out(full[len(r):])
		if err != nil {
			return &apiError{status: 499, Type: "invalid_request_error", Message: err.Error()}
		}
		if stopped {
			c.finish = "stop"
			return nil
		}
	}
	if rest := sm.flush(); rest != "" {
		c.text.WriteString(rest)
		if err := emit(rest); err != nil {
			return &apiError{status: 499, Type: "invalid_request_error", Message: err.Error()}
		}
	}
	c.finish = finish
	return nil
}

// eventToken is the token an event carries: every event without an
// error has one (the last one too: the eos token, or the last allowed).
func eventToken(ev engine.Event) (int64, bool) {
	return ev.Token, ev.Err == nil
}

// stream answers with server-sent events: one chunk per piece of text of
// any choice, a last chunk per choice with its finish_reason, the usage
// chunk when asked, and "data: [DONE]".
func (s *Server) stream(w http.ResponseWriter, ctx context.Context, j *job, chat bool, id string, choices []*choice, promptTokens int) {
	flusher, _ := w.(http.Flusher)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	created := time.Now().Unix()
	var mu sync.Mutex
	var writeErr error
	send := func(v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if writeErr != nil {
			return writeErr
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			writeErr = err
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	}
	chunk := func(c *choice, text *string, finish *string, role bool) any {
		if chat {
			d := chatDelta{Content: text}
			if role {
				d.Role = "assistant"
			}
			return chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: j.model,
				Choices: []chatChunkChoice{{Index: c.index, Delta: d, FinishReason: finish}}}
		}
		t := ""
		if text != nil {
			t = *text
		}
		return completionResponse{ID: id, Object: "text_completion", Created: created, Model: j.model,
			Choices: []completionChoice{{Index: c.index, Text: t, FinishReason: finish}}}
	}
	if chat { // the first chunk of each choice names the role
		empty := ""
		for _, c := range choices {
			send(chunk(c, &empty, nil, true))
		}
	}
	var wg sync.WaitGroup
	errs := make([]*apiError, len(choices))
	for i, c := range choices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.collect(c, j.stops, func(t string) error { return send(chunk(c, &t, nil, false)) })
			if errs[i] == nil {
				f := c.finish
				if chat {
					errs[i] = apiErr(send(chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: j.model,
						Choices: []chatChunkChoice{{Index: c.index, Delta: chatDelta{}, FinishReason: &f}}}))
				} else {
					empty := ""
					errs[i] = apiErr(send(chunk(c, &empty, &f, false)))
				}
			}
		}()
	}
	wg.Wait()
	completion := 0
	for _, c := range choices {
		completion += c.generated
	}
	s.metrics.tokens(promptTokens, completion)
	for _, e := range errs {
		if e != nil {
			if ctx.Err() == nil && e.status != 499 { // the client is still there: tell it
				send(map[string]any{"error": e})
			}
			return
		}
	}
	if j.usage {
		u := &usage{PromptTokens: promptTokens, CompletionTokens: completion, TotalTokens: promptTokens + completion}
		if chat {
			send(chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: j.model, Choices: []chatChunkChoice{}, Usage: u})
		} else {
			send(completionResponse{ID: id, Object: "text_completion", Created: created, Model: j.model, Choices: []completionChoice{}, Usage: u})
		}
	}
	mu.Lock()
	if writeErr == nil {
		io.WriteString(w, "data: [DONE]\n\n")
		if flusher != nil {
			flusher.Flush()
		}
	}
	mu.Unlock()
}

func apiErr(err error) *apiError {
	if err == nil {
		return nil
	}
	return &apiError{status: 499, Type: "invalid_request_error", Message: err.Error()}
}

func newID(chat bool) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	if chat {
		return "chatcmpl-" + hex.EncodeToString(b[:])
	}
	return "cmpl-" + hex.EncodeToString(b[:])
}

func meanBatch(st engine.Stats) float64 {
	if st.Steps == 0 {
		return 0
	}
	return float64(st.StepRows) / float64(st.Steps)
}
