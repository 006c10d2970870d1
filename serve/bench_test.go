package serve

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkServeLoad32 is the load of TestLoad32Clients as a benchmark:
// 32 concurrent streaming clients, 320 completions of 16 tokens spread
// over the base model and 16 adapters. It reports the time to first
// token seen by the clients (request sent → first text chunk) at p50 and
// p99, and the aggregate generated tokens per second.
//
//	go test ./serve -run '^$' -bench ServeLoad32 -benchtime 1x
func BenchmarkServeLoad32(b *testing.B) {
	modelDir, adapters, err := TestingFixture()
	if err != nil {
		b.Fatal(err)
	}
	f := fixture{modelDir: modelDir, adapters: adapters}
	pm, tok := loadServingModel(b, f)
	srv, err := New(pm, tok, Options{ModelName: "llama-tiny", Adapters: adapters, MaxAdapters: numAdapters, MaxBatch: 32, MaxContext: 128, EOSTokenIDs: []int64{2}})
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer srv.Shutdown(context.Background())
	models := []string{BaseModel}
	for i := 0; i < numAdapters; i++ {
		models = append(models, adapterName(i))
	}
	const clients, requests, maxTokens = 32, 320, 16
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		var mu sync.Mutex
		var ttft []time.Duration
		next := 0
		tokens0 := srv.metrics.generated()
		start := time.Now()
		var wg sync.WaitGroup
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					mu.Lock()
					i := next
					next++
					mu.Unlock()
					if i >= requests {
						return
					}
					body := fmt.Sprintf(`{"model": %q, "prompt": %q, "max_tokens": %d, "temperature": 0, "stream": true}`,
						models[i%len(models)], textPrompts[i%len(textPrompts)], maxTokens)
					t0 := time.Now()
					resp, err := http.Post(hs.URL+"/v1/completions", "application/json", strings.NewReader(body))
					if err != nil {
						b.Error(err)
						return
					}
					r := bufio.NewReader(resp.Body)
					first := true
					for {
						line, err := r.ReadString('\n')
						if err != nil {
							break
						}
						if first && strings.HasPrefix(line, "data: {") {
							mu.Lock()
							ttft = append(ttft, time.Since(t0))
							mu.Unlock()
							first = false
						}
					}
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
					}
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		sort.Slice(ttft, func(i, j int) bool { return ttft[i] < ttft[j] })
		pct := func(p float64) time.Duration { return ttft[max(0, int(float64(len(ttft))*p+0.999999)-1)] }
		b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "ttft-p50-ms")
		b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "ttft-p99-ms")
		b.ReportMetric(float64(srv.metrics.generated()-tokens0)/elapsed.Seconds(), "tokens/s")
	}
}
