package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopeft/peft/engine"
	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/ia3"
	"github.com/gopeft/peft/internal/memstat"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	_ "github.com/gopeft/peft/prompt" // registers PROMPT_TUNING with peft.Load
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// randomLoRA is a LoRA config whose A and B are both random (nn.Linear's
// init), so that every adapter changes the outputs.
func randomLoRA(r int) *lora.Config {
	return &lora.Config{R: r, LoraAlpha: float64(2 * r), InitLoraWeights: lora.Init{Value: "false"},
		TargetModules: lora.List("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}
}

// tinyWithAdapters is llama-tiny with n random LoRA adapters a0…a(n-1)
// (and the unused "default").
func tinyWithAdapters(t testing.TB, n int) *peft.Model {
	base := testutil.Load(t, llama.Load, "llama-tiny")
	tensor.ManualSeed(11)
	m, err := peft.New(base, randomLoRA(4))
	require.NoError(t, err)
	for i := 0; i < n; i++ {
		require.NoError(t, m.AddAdapter(fmt.Sprintf("a%d", i), randomLoRA(2+i%3*2)))
	}
	return m
}

type job struct {
	req  engine.Request
	want []int64
	fin  string
}

// alone is what generate gives for r run alone: its tokens and finish.
func alone(t testing.TB, m *peft.Model, r engine.Request) ([]int64, string) {
	sel := &peft.Selection{Disabled: true}
	if r.Adapter != "" && r.Adapter != peft.BaseAdapterName {
		sel = &peft.Selection{Adapters: []string{r.Adapter}}
	}
	out, err := generate.Generate(context.Background(), generate.WithAdapters(m, sel), generate.Input{InputIDs: [][]int64{r.Prompt}}, r.Config)
	require.NoError(t, err)
	toks := out.NewTokens(0)
	max := r.Config.MaxNewTokens
	for i := range toks {
		for _, st := range r.Stop {
			if i+1 >= len(st) && equal(toks[i+1-len(st):i+1], st) {
				return toks[:i+1], engine.FinishStop
			}
		}
	}
	if len(toks) > 0 && r.Config.EOSTokenID.Contains(toks[len(toks)-1]) {
		return toks, engine.FinishStop
	}
	require.Len(t, toks, max)
	return toks, engine.FinishLength
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// collect reads a request's events: its tokens, finish and error.
func collect(ch <-chan engine.Event) ([]int64, string, error) {
	var toks []int64
	for ev := range ch {
		if ev.Err != nil {
			return toks, "", ev.Err
		}
		toks = append(toks, ev.Token)
		if ev.Finish != "" {
			return toks, ev.Finish, nil
		}
	}
	return toks, "", errors.New("channel closed without a finish")
}

// jobs makes n requests over 16 adapters and the base model: greedy and
// seeded sampling, various lengths, some with stop sequences and eos
// tokens taken from their own reference answers.
func jobs(t testing.TB, m *peft.Model, n, adapters int) []job {
	rng := rand.New(rand.NewPCG(1, 2))
	var out []job
	for i := 0; i < n; i++ {
		prompt := make([]int64, 2+rng.IntN(12))
		for j := range prompt {
			prompt[j] = 3 + rng.Int64N(500)
		}
		cfg := generate.GenerationConfig{MaxNewTokens: 3 + rng.IntN(14)}
		if i%2 == 1 {
			seed := int64(100 + i)
			cfg.DoSample, cfg.Seed, cfg.TopK = true, &seed, 40
			cfg.Temperature = 0.7 + 0.1*float64(i%5)
			if i%3 == 0 {
				cfg.TopP = 0.9
			}
		}
		if i%7 == 3 {
			cfg.RepetitionPenalty = 1.3
		}
		adapter := fmt.Sprintf("a%d", i%adapters)
		if i%9 == 8 {
			adapter = peft.BaseAdapterName
		}
		r := engine.Request{Prompt: prompt, Adapter: adapter, Config: cfg}
		full, _ := alone(t, m, r)
		switch i % 5 { // end some early: a stop sequence or an eos token from the answer itself
		case 1:
			if len(full) >= 4 {
				r.Stop = [][]int64{{9999}, full[2:4]}
			}
		case 2:
			if len(full) >= 3 {
				r.Config.EOSTokenID = generate.TokenIDs{full[len(full)/2]}
			}
		}
		want, fin := alone(t, m, r)
		out = append(out, job{req: r, want: want, fin: fin})
	}
	return out
}

func TestEngineEqualsGenerateAlone(t *testing.T) {
	const adapters = 16
	m := tinyWithAdapters(t, adapters)
	defer nn.FreeParams(m)
	js := jobs(t, m, 48, adapters)
	var stops, eos int
	for _, j := range js {
		if j.req.Stop != nil {
			stops++
		}
		if j.fin == engine.FinishStop && j.req.Stop == nil {
			eos++
		}
	}
	require.Positive(t, stops)
	require.Positive(t, eos)

	e, err := engine.New(m, engine.Options{MaxBatch: 7, MaxQueue: 64})
	require.NoError(t, err)
	// a writer changing the model meanwhile: adapters come and go
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("tmp%d", i)
			if err := m.AddAdapter(name, randomLoRA(2)); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Millisecond)
			if err := m.DeleteAdapter(name); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	got := make([][]int64, len(js))
	fins := make([]string, len(js))
	errs := make([]error, len(js))
	var clients sync.WaitGroup
	for i, j := range js {
		clients.Add(1)
		go func() {
			defer clients.Done()
			time.Sleep(time.Duration(i%8) * 3 * time.Millisecond) // arrive while others decode
			ch, err := e.Submit(context.Background(), j.req)
			if err != nil {
				errs[i] = err
				return
			}
			got[i], fins[i], errs[i] = collect(ch)
		}()
	}
	clients.Wait()
	close(stop)
	wg.Wait()
	for i, j := range js {
		require.NoError(t, errs[i], "request %d", i)
		require.Equal(t, j.want, got[i], "request %d (%s, sample %v)", i, j.req.Adapter, j.req.Config.DoSample)
		require.Equal(t, j.fin, fins[i], "request %d", i)
	}
	require.NoError(t, e.Shutdown(context.Background()))
	st := e.Stats()
	require.Equal(t, uint64(len(js)), st.Requests)
	require.Equal(t, uint64(len(js)), st.Completed)
	require.Equal(t, uint64(len(js)), st.FirstTokenCount)
	require.Zero(t, st.Queued+st.Running)
	var total int
	for _, g := range got {
		total += len(g)
	}
	require.Equal(t, uint64(total), st.GeneratedTokens)
	require.Greater(t, float64(st.StepRows)/float64(st.Steps), 1.5, "rows were batched")
}

func TestEngineRefusesBadRequests(t *testing.T) {
	m := tinyWithAdapters(t, 1)
	defer nn.FreeParams(m)
	e, err := engine.New(m, engine.Options{MaxContext: 32})
	require.NoError(t, err)
	defer func() { require.NoError(t, e.Shutdown(context.Background())) }()
	ctx := context.Background()
	ok := generate.GenerationConfig{MaxNewTokens: 4}
	for _, c := range []struct {
		r    engine.Request
		want error
		msg  string
	}{
		{engine.Request{Prompt: []int64{5}, Adapter: "nope", Config: ok}, engine.ErrUnknownAdapter, `"nope"`},
		{engine.Request{Config: ok}, engine.ErrBadRequest, "no tokens"},
		{engine.Request{Prompt: make([]int64, 30), Config: ok}, engine.ErrContextLength, "30 prompt tokens + 4 new tokens > 32"},
		{engine.Request{Prompt: []int64{5}, Config: generate.GenerationConfig{MaxNewTokens: 4, NumBeams: 2}}, engine.ErrBadRequest, "num_beams"},
		{engine.Request{Prompt: []int64{5}, Config: generate.GenerationConfig{MaxNewTokens: 4, TopP: 2}}, engine.ErrBadRequest, "top_p"},
		{engine.Request{Prompt: []int64{5}, Config: ok, Stop: [][]int64{{}}}, engine.ErrBadRequest, "stop sequence 0"},
	} {
		_, err := e.Submit(ctx, c.r)
		require.ErrorIs(t, err, c.want)
		require.ErrorContains(t, err, c.msg)
	}
	// the engine still serves
	toks, fin, err := collect(must(e.Submit(ctx, engine.Request{Prompt: []int64{5, 6}, Adapter: "a0", Config: ok})))
	require.NoError(t, err)
	require.Len(t, toks, 4)
	require.Equal(t, engine.FinishLength, fin)
}

func must(ch <-chan engine.Event, err error) <-chan engine.Event {
	if err != nil {
		panic(err)
	}
	return ch
}

func TestEngineQueueFullCancelShutdown(t *testing.T) {
	m := tinyWithAdapters(t, 2)
	defer nn.FreeParams(m)
	e, err := engine.New(m, engine.Options{MaxBatch: 1, MaxQueue: 2})
	require.NoError(t, err)
	long := engine.Request{Prompt: []int64{7, 8, 9}, Adapter: "a1", Config: generate.GenerationConfig{MaxNewTokens: 120}}

	// the first request takes the only row; two wait; the next is refused
	ctx, cancel := context.WithCancel(context.Background())
	first, err := e.Submit(ctx, long)
	require.NoError(t, err)
	<-first // running
	var waiting []<-chan engine.Event
	for i := 0; i < 2; i++ {
		r := long
		r.Config.MaxNewTokens = 3
		ch, err := e.Submit(context.Background(), r)
		require.NoError(t, err)
		waiting = append(waiting, ch)
	}
	_, err = e.Submit(context.Background(), long)
	require.ErrorIs(t, err, engine.ErrQueueFull)
	require.True(t, e.InUse("a1"))
	require.False(t, e.InUse("a0"))

	// cancelling the running request retires it; the queued ones run
	cancel()
	_, _, err = collect(first)
	require.ErrorIs(t, err, context.Canceled)
	for _, ch := range waiting {
		toks, fin, err := collect(ch)
		require.NoError(t, err)
		require.Len(t, toks, 3)
		require.Equal(t, engine.FinishLength, fin)
	}

	// shutdown finishes what runs, then refuses
	last, err := e.Submit(context.Background(), long)
	require.NoError(t, err)
	require.NoError(t, e.Shutdown(context.Background()))
	toks, fin, err := collect(last)
	require.NoError(t, err)
	require.Len(t, toks, 120)
	require.Equal(t, engine.FinishLength, fin)
	_, err = e.Submit(context.Background(), long)
	require.ErrorIs(t, err, engine.ErrClosed)
	st := e.Stats()
	require.Equal(t, uint64(1), st.Rejected)
	require.Equal(t, uint64(1), st.Failed)
	require.Equal(t, uint64(3), st.Completed)
	require.False(t, e.InUse("a1"))
}

func TestEngineShutdownDeadline(t *testing.T) {
	m := tinyWithAdapters(t, 1)
	defer nn.FreeParams(m)
	e, err := engine.New(m, engine.Options{MaxBatch: 1})
	require.NoError(t, err)
	ch, err := e.Submit(context.Background(), engine.Request{Prompt: []int64{7}, Config: generate.GenerationConfig{MaxNewTokens: 120}})
	require.NoError(t, err)
	<-ch
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, e.Shutdown(ctx), context.Canceled)
	_, _, err = collect(ch)
	require.ErrorIs(t, err, engine.ErrClosed)
}

func TestEngineAdapterDeletedWhileRunning(t *testing.T) {
	m := tinyWithAdapters(t, 2)
	defer nn.FreeParams(m)
	e, err := engine.New(m, engine.Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, e.Shutdown(context.Background())) }()
	gone, err := e.Submit(context.Background(), engine.Request{Prompt: []int64{7}, Adapter: "a1", Config: generate.GenerationConfig{MaxNewTokens: 120}})
	require.NoError(t, err)
	stays, err := e.Submit(context.Background(), engine.Request{Prompt: []int64{7, 8}, Adapter: "a0", Config: generate.GenerationConfig{MaxNewTokens: 60}})
	require.NoError(t, err)
	<-gone
	require.NoError(t, m.DeleteAdapter("a1"))
	_, _, err = collect(gone)
	require.ErrorContains(t, err, `adapter "a1" was deleted`)
	want, _ := alone(t, m, engine.Request{Prompt: []int64{7, 8}, Adapter: "a0", Config: generate.GenerationConfig{MaxNewTokens: 60}})
	toks, _, err := collect(stays)
	require.NoError(t, err)
	require.Equal(t, want, toks)
}

// RSS stays flat over many requests: every step's tensors are freed and
// retired rows' cache rows go with them.
func TestEngineRSSFlat(t *testing.T) {
	m := tinyWithAdapters(t, 4)
	defer nn.FreeParams(m)
	e, err := engine.New(m, engine.Options{MaxBatch: 6})
	require.NoError(t, err)
	defer func() { require.NoError(t, e.Shutdown(context.Background())) }()
	rng := rand.New(rand.NewPCG(5, 6))
	wave := func() { // 8 requests of mixed adapters and lengths
		var chans []<-chan engine.Event
		for i := 0; i < 8; i++ {
			p := make([]int64, 1+rng.IntN(20))
			for j := range p {
				p[j] = rng.Int64N(512)
			}
			ch, err := e.Submit(context.Background(), engine.Request{Prompt: p, Adapter: fmt.Sprintf("a%d", i%4),
				Config: generate.GenerationConfig{MaxNewTokens: 1 + rng.IntN(24)}})
			require.NoError(t, err)
			chans = append(chans, ch)
		}
		for _, ch := range chans {
			_, _, err := collect(ch)
			require.NoError(t, err)
		}
	}
	before, after, growth := memstat.Growth(10, 60, wave)
	t.Logf("RSS %d KiB -> %d KiB after 60 waves of 8 requests (%.2f%%)", before>>10, after>>10, 100*growth)
	require.Less(t, growth, 0.05)
}

// IA3 cannot run one adapter per row: the engine batches one adapter at a
// time, and the answers still equal generate's.
func TestEngineOneAdapterPerBatchWithoutRows(t *testing.T) {
	base := testutil.Load(t, llama.Load, "llama-tiny")
	m, err := ia3.Wrap(base, &ia3.Config{})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.NoError(t, m.AddAdapter("second", &ia3.Config{}))
	require.False(t, m.RowsSupported())
	s := tensor.NoGradScope()
	tensor.ManualSeed(3)
	for _, np := range nn.NamedParams(m) {
		if strings.Contains(np.Name, ".ia3_l.") {
			s.CopyInto(np.Param.T(), s.AddScalar(s.MulScalar(s.Randn(tensor.Float32, np.Param.Shape()...), 0.5), 1))
		}
	}
	require.NoError(t, s.Err())
	s.Close()
	e, err := engine.New(m, engine.Options{MaxBatch: 4})
	require.NoError(t, err)
	var reqs []engine.Request
	var chans []<-chan engine.Event
	for i := 0; i < 10; i++ {
		r := engine.Request{Prompt: []int64{int64(10 + i), 20, int64(30 + 2*i)}, Adapter: []string{"default", "second", ""}[i%3],
			Config: generate.GenerationConfig{MaxNewTokens: 4 + i%5}}
		ch, err := e.Submit(context.Background(), r)
		require.NoError(t, err)
		reqs, chans = append(reqs, r), append(chans, ch)
	}
	for i, ch := range chans {
		toks, _, err := collect(ch)
		require.NoError(t, err)
		want, _ := alone(t, m, reqs[i])
		require.Equal(t, want, toks, "request %d (%q)", i, reqs[i].Adapter)
	}
	require.NoError(t, e.Shutdown(context.Background()))
}

func TestEngineRefusesPromptLearning(t *testing.T) {
	base := testutil.Load(t, llama.Load, "llama-tiny")
	m, err := peft.Load(base, testutil.Fixtures(t, "adapters", "llama-tiny", "prompt-tuning-random"))
	if err != nil {
		t.Fatal(err)
	}
	defer nn.FreeParams(m)
	_, err = engine.New(m, engine.Options{})
	require.ErrorContains(t, err, "prompt-learning")
}

func TestEngineCancelWhileQueued(t *testing.T) {
	m := tinyWithAdapters(t, 1)
	defer nn.FreeParams(m)
	e, err := engine.New(m, engine.Options{MaxBatch: 1, MaxQueue: 4})
	require.NoError(t, err)
	long := engine.Request{Prompt: []int64{7, 8, 9}, Adapter: "a0", Config: generate.GenerationConfig{MaxNewTokens: 120}}
	ctx, cancel := context.WithCancel(context.Background())
	first, err := e.Submit(ctx, long)
	require.NoError(t, err)
	<-first
	wctx, wcancel := context.WithCancel(context.Background())
	waiting, err := e.Submit(wctx, long)
	require.NoError(t, err)
	wcancel()
	toks, _, err := collect(waiting) // while the first still runs
	require.ErrorIs(t, err, context.Canceled)
	require.Empty(t, toks)
	require.Zero(t, e.Stats().Queued)
	cancel()
	_, _, err = collect(first)
	require.ErrorIs(t, err, context.Canceled)
	require.NoError(t, e.Shutdown(context.Background()))
	require.Equal(t, uint64(2), e.Stats().Failed)
}
