// Package engine serves generation requests on one peft.Model with
// continuous batching: a scheduler goroutine admits queued requests into
// the running decode batch at every step (each prompt is prefilled alone,
// then its key/value cache rows join the batch), runs one forward for all
// running rows — rows of different LoRA adapters in the same matmuls
// (peft.Selection.Rows) —, and retires finished or cancelled rows. With a
// method that cannot run a different adapter per row (IA3, bottleneck
// adapters: peft.Model.RowsSupported is false) a batch holds one adapter
// at a time, and a request for another waits for it to drain.
// Prompt-learning models are refused. Every
// row has its own cache rows, stop conditions, token budget, sampling
// settings and generator (generate.Decoder), so a request's tokens are
// those of the same request run alone through generate.Generate (greedy,
// and sampling with a seed), whatever else is in the batch.
//
// An Engine is safe for concurrent use: Submit, Stats, InUse and Shutdown
// may be called from any goroutine. The model may be changed while the
// engine runs (peft.Model is safe for concurrent use): each step holds the
// model's read lock, so a LoadAdapter or DeleteAdapter waits for the step
// in progress; a request whose adapter is deleted while it runs fails with
// an error naming it.
package engine

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/peft"
)

// Errors Submit returns (wrapped, with details; test with errors.Is).
var (
	// ErrQueueFull: the queue holds Options.MaxQueue requests (an HTTP
	// server answers 429 with Retry-After).
	ErrQueueFull = errors.New("engine: queue full")
	// ErrClosed: Shutdown was called.
	ErrClosed = errors.New("engine: shut down")
	// ErrUnknownAdapter: the request names an adapter the model does not
	// have.
	ErrUnknownAdapter = errors.New("engine: unknown adapter")
	// ErrContextLength: prompt + max new tokens exceed the context.
	ErrContextLength = errors.New("engine: prompt and max_new_tokens exceed the context length")
	// ErrBadRequest: anything else wrong in a request (empty prompt, a
	// generation setting out of range, beams).
	ErrBadRequest = errors.New("engine: bad request")
)

// Finish reasons of the last event (OpenAI's finish_reason).
const (
	FinishStop   = "stop"   // an eos token or a stop sequence
	FinishLength = "length" // max_new_tokens reached
)

// Request is one generation request.
type Request struct {
	// Prompt is the prompt's token ids (no padding).
	Prompt []int64
	// Adapter is "" or peft.BaseAdapterName for the base model, else the
	// name of one of the model's adapters.
	Adapter string
	// Config holds MaxNewTokens (or MaxLength), DoSample, Temperature,
	// TopK, TopP, RepetitionPenalty, MinNewTokens, EOSTokenID and Seed, with
	// generate's meaning. Beam search and NumReturnSequences > 1 are
	// refused.
	Config generate.GenerationConfig
	// Stop lists token sequences that end the generation (besides the eos
	// tokens) when the generated tokens end with one of them.
	Stop [][]int64
}

// Event is one step of a request: a token, and on the last event the
// reason it finished, or an error.
type Event struct {
	// Token is the new token (when Err is nil). The last event carries
	// the token that ended the request: an eos token, the last token of a
	// stop sequence, or the max_new_tokens-th token.
	Token int64
	// Finish is "" while the request runs; FinishStop or FinishLength on
	// the last event.
	Finish string
	// Err ends the request without a token: its context was cancelled
	// (ctx.Err()), the engine shut down before it finished (ErrClosed), its
	// adapter was deleted, or the model failed.
	Err error
}

// Options size the engine. Zero fields take the defaults.
type Options struct {
	// MaxBatch is the most rows decoded together (default 8).
	MaxBatch int
	// MaxQueue is the most requests waiting for a row (default 64);
	// Submit returns ErrQueueFull beyond it.
	MaxQueue int
	// MaxContext caps prompt + max new tokens; 0: the model's
	// max_position_embeddings when it has one, else no cap.
	MaxContext int
}

// Stats is a snapshot of the engine's state and counters.
type Stats struct {
	Queued  int // requests waiting for a row
	Running int // rows in the decode batch
	// Counters since New.
	Requests        uint64 // accepted by Submit
	Rejected        uint64 // refused with ErrQueueFull
	Completed       uint64 // finished with FinishStop or FinishLength
	Failed          uint64 // ended with an error (cancellation included)
	PromptTokens    uint64 // of accepted requests
	GeneratedTokens uint64
	Steps           uint64 // decode steps (one batched forward each)
	StepRows        uint64 // rows summed over decode steps (mean batch = StepRows/Steps)
	// Wall time spent prefilling prompts (each alone, its first token
	// included) and in decode steps.
	PrefillTime time.Duration
	DecodeTime  time.Duration
	// Time to first token (Submit to the first event): the number and sum
	// of observations, and the last ones (at most 1024, oldest first).
	FirstTokenCount  uint64
	FirstTokenSum    time.Duration
	FirstTokenRecent []time.Duration
}

const recentTTFT = 1024

// Engine is a continuous-batching generation server over one model. It is
// safe for concurrent use.
type Engine struct {
	m      *peft.Model
	opt    Options
	maxCtx int
	rows   bool // the model runs a different adapter per row

	mu     sync.Mutex
	queue  []*seq
	closed bool
	abort  bool // Shutdown's context ended: fail what is left
	stats  Stats
	ttft   []time.Duration // ring of recentTTFT
	ttftAt int
	inUse  map[string]int // queued + running requests per adapter

	wake chan struct{} // a request arrived or Shutdown was called
	done chan struct{} // the scheduler has returned
}

// seq is one request in the engine.
type seq struct {
	ctx     context.Context
	req     Request
	adapter string // peft.BaseAdapterName for the base model
	dec     *generate.Decoder
	out     chan Event
	start   time.Time
	first   bool  // the first token was sent
	last    int64 // the last token (the next step's input)
	pos     int64 // position id of the next input token
	pad     int64 // left padding of the row in the batch cache
	n       int   // tokens generated
	maxNew  int
	retired bool
}

// New starts an engine on m. Stop it with Shutdown.
func New(m *peft.Model, o Options) (*Engine, error) {
	if m == nil {
		return nil, errors.New("engine: no model")
	}
	if m.PromptEncoder != nil {
		return nil, errors.New("engine: prompt-learning adapters (prompt tuning, P-tuning, prefix tuning) are not supported: their virtual tokens shift every row's positions")
	}
	if o.MaxBatch < 0 || o.MaxQueue < 0 || o.MaxContext < 0 {
		return nil, fmt.Errorf("engine: options must not be negative: %+v", o)
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = 8
	}
	if o.MaxQueue == 0 {
		o.MaxQueue = 64
	}
	e := &Engine{m: m, opt: o, maxCtx: o.MaxContext, rows: m.RowsSupported(), inUse: map[string]int{},
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	if e.maxCtx == 0 {
		e.maxCtx = modelContext(m.Base())
	}
	go e.loop()
	return e, nil
}

// modelContext is the base model's max_position_embeddings (its Config
// field, when it has one), or 0.
func modelContext(base models.Model) int {
	v := reflect.ValueOf(base)
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return 0
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return 0
	}
	c := v.FieldByName("Config")
	for c.IsValid() && c.Kind() == reflect.Pointer {
		if c.IsNil() {
			return 0
		}
		c = c.Elem()
	}
	if !c.IsValid() || c.Kind() != reflect.Struct {
		return 0
	}
	f := c.FieldByName("MaxPositionEmbeddings")
	if f.IsValid() && f.CanInt() {
		return int(f.Int())
	}
	return 0
}

// Submit queues r and returns the channel its events arrive on, closed
// after the last one (a Finish or an Err). The channel is buffered for
// every event of the request, so a slow reader never slows the batch.
// Cancelling ctx retires the request (its last event carries ctx.Err()).
func (e *Engine) Submit(ctx context.Context, r Request) (<-chan Event, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	q, err := e.newSeq(ctx, r)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return nil, ErrClosed
	case len(e.queue) >= e.opt.MaxQueue:
		e.stats.Rejected++
		return nil, fmt.Errorf("%w (%d requests waiting)", ErrQueueFull, len(e.queue))
	}
	e.queue = append(e.queue, q)
	e.inUse[q.adapter]++
	e.stats.Requests++
	e.stats.PromptTokens += uint64(len(r.Prompt))
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return q.out, nil
}

func (e *Engine) newSeq(ctx context.Context, r Request) (*seq, error) {
	if len(r.Prompt) == 0 {
		return nil, fmt.Errorf("%w: the prompt has no tokens", ErrBadRequest)
	}
	adapter := r.Adapter
	if adapter == "" {
		adapter = peft.BaseAdapterName
	}
	if adapter != peft.BaseAdapterName && !e.m.HasAdapter(adapter) {
		return nil, fmt.Errorf("%w %q (have %v, or %q for the base model)", ErrUnknownAdapter, r.Adapter, e.m.Adapters(), peft.BaseAdapterName)
	}
	for i, st := range r.Stop {
		if len(st) == 0 {
			return nil, fmt.Errorf("%w: stop sequence %d is empty", ErrBadRequest, i)
		}
	}
	dec, err := generate.NewDecoder(r.Config, r.Prompt, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	maxNew := dec.MaxNewTokens()
	if e.maxCtx > 0 && len(r.Prompt)+maxNew > e.maxCtx {
		return nil, fmt.Errorf("%w: %d prompt tokens + %d new tokens > %d", ErrContextLength, len(r.Prompt), maxNew, e.maxCtx)
	}
	req := r
	req.Prompt = append([]int64(nil), r.Prompt...)
	return &seq{ctx: ctx, req: req, adapter: adapter, dec: dec, out: make(chan Event, maxNew+1),
		start: time.Now(), maxNew: maxNew}, nil
}

// InUse reports whether requests queued or running use adapter (a server
// that unloads adapters asks before it deletes one).
func (e *Engine) InUse(adapter string) bool {
	if adapter == "" {
		adapter = peft.BaseAdapterName
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.inUse[adapter] > 0
}

// Stats returns a snapshot of the engine's state and counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.stats
	st.Queued = len(e.queue)
	if len(e.ttft) < recentTTFT {
		st.FirstTokenRecent = append([]time.Duration(nil), e.ttft...)
	} else {
		st.FirstTokenRecent = append(append([]time.Duration(nil), e.ttft[e.ttftAt:]...), e.ttft[:e.ttftAt]...)
	}
	return st
}

// Shutdown stops admitting requests (Submit returns ErrClosed), lets the
// running and queued ones finish, and returns when the scheduler has
// stopped. When ctx ends first, the requests left fail with ErrClosed and
// Shutdown returns ctx's error once the scheduler has stopped.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.signal()
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
	}
	e.mu.Lock()
	e.abort = true
	e.mu.Unlock()
	e.signal()
	<-e.done
	return ctx.Err()
}

func (e *Engine) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// send delivers ev to q; a final event closes the channel and retires q
// from the counters.
func (e *Engine) send(q *seq, ev Event) {
	if q.retired {
		return
	}
	final := ev.Err != nil || ev.Finish != ""
	e.mu.Lock()
	if ev.Err == nil {
		e.stats.GeneratedTokens++
		if !q.first {
			q.first = true
			d := time.Since(q.start)
			e.stats.FirstTokenCount++
			e.stats.FirstTokenSum += d
			if len(e.ttft) < recentTTFT {
				e.ttft = append(e.ttft, d)
			} else {
				e.ttft[e.ttftAt] = d
				e.ttftAt = (e.ttftAt + 1) % recentTTFT
			}
		}
	}
	if final {
		q.retired = true
		if ev.Err != nil {
			e.stats.Failed++
		} else {
			e.stats.Completed++
		}
		if e.inUse[q.adapter]--; e.inUse[q.adapter] <= 0 {
			delete(e.inUse, q.adapter)
		}
	}
	e.mu.Unlock()
	q.out <- ev // buffered for every event: never blocks
	if final {
		close(q.out)
	}
}

// emit records token tok of q and sends it, with the finish reason when
// it ends the request; it reports whether q finished.
func (e *Engine) emit(q *seq, tok int64) bool {
	q.n++
	q.last = tok
	finish := ""
	switch {
	case q.dec.IsEOS(tok):
		finish = FinishStop
	case stopped(q.dec.Generated(), q.req.Stop):
		finish = FinishStop
	case q.n >= q.maxNew:
		finish = FinishLength
	}
	e.send(q, Event{Token: tok, Finish: finish})
	return finish != ""
}

func stopped(gen []int64, stops [][]int64) bool {
	for _, st := range stops {
		if len(gen) >= len(st) && slices.Equal(gen[len(gen)-len(st):], st) {
			return true
		}
	}
	return false
}

// selection is the peft.Selection that runs adapter alone.
func selection(adapter string) *peft.Selection {
	if adapter == peft.BaseAdapterName {
		return &peft.Selection{Disabled: true}
	}
	return &peft.Selection{Adapters: []string{adapter}}
}
