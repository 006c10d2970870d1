package serve

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// ttftBuckets are the upper bounds (seconds) of the time-to-first-token
// histogram.
var ttftBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// metrics are the server's counters, written in Prometheus' text format.
// Safe for concurrent use.
type metrics struct {
	mu               sync.Mutex
	requests         map[[2]string]int64 // {endpoint, status code} → count
	promptTokens     int64
	completionTokens int64
	ttftCounts       []int64 // per bucket, not cumulative; last is +Inf
	ttftSum          float64
	ttftN            int64
	ttftAll          []float64 // every observation, for Percentiles (bounded)
}

const maxTTFTKept = 1 << 16

func newMetrics() *metrics {
	return &metrics{requests: map[[2]string]int64{}, ttftCounts: make([]int64, len(ttftBuckets)+1)}
}

func (m *metrics) request(endpoint string, status int) {
	m.mu.Lock()
	m.requests[[2]string{endpoint, fmt.Sprint(status)}]++
	m.mu.Unlock()
}

func (m *metrics) tokens(prompt, completion int) {
	m.mu.Lock()
	m.promptTokens += int64(prompt)
	m.completionTokens += int64(completion)
	m.mu.Unlock()
}

// generated is the number of tokens generated so far.
func (m *metrics) generated() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.completionTokens
}

func (m *metrics) ttft(d time.Duration) {
	s := d.Seconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	i := sort.SearchFloat64s(ttftBuckets, s)
	m.ttftCounts[i]++
	m.ttftSum += s
	m.ttftN++
	if len(m.ttftAll) < maxTTFTKept {
		m.ttftAll = append(m.ttftAll, s)
	}
}

// gauges are the values read at scrape time.
type gauges struct {
	queued, running, residentAdapters, knownAdapters int
	batchSize                                        float64
	// the engine's sequence counters
	completed, failed, rejected, steps uint64
}

func (m *metrics) write(w io.Writer, g gauges) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	b.WriteString("# HELP peft_requests_total HTTP requests by endpoint and status code.\n# TYPE peft_requests_total counter\n")
	keys := make([][2]string, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	for _, k := range keys {
		fmt.Fprintf(&b, "peft_requests_total{endpoint=%q,code=%q} %d\n", k[0], k[1], m.requests[k])
	}
	fmt.Fprintf(&b, "# HELP peft_prompt_tokens_total Prompt tokens of completed requests.\n# TYPE peft_prompt_tokens_total counter\npeft_prompt_tokens_total %d\n", m.promptTokens)
	fmt.Fprintf(&b, "# HELP peft_generated_tokens_total Tokens generated.\n# TYPE peft_generated_tokens_total counter\npeft_generated_tokens_total %d\n", m.completionTokens)
	fmt.Fprintf(&b, "# HELP peft_queue_length Sequences waiting for a place in the decode batch.\n# TYPE peft_queue_length gauge\npeft_queue_length %d\n", g.queued)
	fmt.Fprintf(&b, "# HELP peft_running_sequences Sequences in the decode batch.\n# TYPE peft_running_sequences gauge\npeft_running_sequences %d\n", g.running)
	fmt.Fprintf(&b, "# HELP peft_batch_size Mean rows per decoding step since the start.\n# TYPE peft_batch_size gauge\npeft_batch_size %g\n", g.batchSize)
	fmt.Fprintf(&b, "# HELP peft_sequences_total Generated sequences (one per choice) by how they ended.\n# TYPE peft_sequences_total counter\n")
	fmt.Fprintf(&b, "peft_sequences_total{result=\"completed\"} %d\npeft_sequences_total{result=\"failed\"} %d\npeft_sequences_total{result=\"rejected\"} %d\n", g.completed, g.failed, g.rejected)
	fmt.Fprintf(&b, "# HELP peft_decode_steps_total Batched decoding steps.\n# TYPE peft_decode_steps_total counter\npeft_decode_steps_total %d\n", g.steps)
	fmt.Fprintf(&b, "# HELP peft_adapters_resident Adapters loaded in memory.\n# TYPE peft_adapters_resident gauge\npeft_adapters_resident %d\n", g.residentAdapters)
	fmt.Fprintf(&b, "# HELP peft_adapters_known Adapters the server can serve (resident or loadable).\n# TYPE peft_adapters_known gauge\npeft_adapters_known %d\n", g.knownAdapters)
	b.WriteString("# HELP peft_time_to_first_token_seconds Time from a request's admission to its first token.\n# TYPE peft_time_to_first_token_seconds histogram\n")
	var cum int64
	for i, le := range ttftBuckets {
		cum += m.ttftCounts[i]
		fmt.Fprintf(&b, "peft_time_to_first_token_seconds_bucket{le=\"%g\"} %d\n", le, cum)
	}
	cum += m.ttftCounts[len(ttftBuckets)]
	fmt.Fprintf(&b, "peft_time_to_first_token_seconds_bucket{le=\"+Inf\"} %d\n", cum)
	fmt.Fprintf(&b, "peft_time_to_first_token_seconds_sum %g\npeft_time_to_first_token_seconds_count %d\n", m.ttftSum, m.ttftN)
	io.WriteString(w, b.String())
}

// TTFTPercentiles returns the p-th percentiles (0 < p ≤ 100) of the time
// to first token observed so far (the first 65536 requests), nearest rank.
func (m *metrics) percentiles(ps ...float64) []time.Duration {
	m.mu.Lock()
	v := append([]float64(nil), m.ttftAll...)
	m.mu.Unlock()
	sort.Float64s(v)
	out := make([]time.Duration, len(ps))
	if len(v) == 0 {
		return out
	}
	for i, p := range ps {
		k := int(float64(len(v))*p/100+0.999999) - 1
		k = max(0, min(k, len(v)-1))
		out[i] = time.Duration(v[k] * float64(time.Second))
	}
	return out
}
