package dist

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gopeft/peft/internal/disttest"
	"github.com/gopeft/peft/tensor"
)

// benchFloats is the LoRA gradient of the benchmark config (BENCHMARKS.md:
// hidden 512, 8 layers, r 8 on q_proj and v_proj): 8 layers × 2 modules ×
// (8×512 + 512×8) float32 = 512 KiB, as 16 tensors.
const benchTensors, benchTensorFloats = 16, 8 * 512 * 2

// BenchmarkAllReduceGradsLoRA times the Trainer's gradient all-reduce of
// the benchmark config's LoRA gradients between 2 processes on loopback
// (Gloo, one bucket): the children time 200 calls after 20 warm-up ones
// and rank 0 reports the mean.
func BenchmarkAllReduceGradsLoRA(b *testing.B) {
	if disttest.Child() {
		if b.N == 1 {
			allReduceBenchChild(b)
		}
		return
	}
	dir := b.TempDir()
	procs := disttest.StartArgs(b, []string{"-test.run=^$", "-test.bench=^BenchmarkAllReduceGradsLoRA$", "-test.benchtime=1x"},
		dir, 2, "GOPEFT_DIST_TIMEOUT=60s")
	disttest.WaitAll(b, procs, 2*time.Minute)
	raw, err := os.ReadFile(filepath.Join(dir, "ns"))
	if err != nil {
		b.Fatal(err)
	}
	ns, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(ns/1e6, "ms/allreduce")
	b.ReportMetric(float64(benchTensors*benchTensorFloats*4), "bytes/allreduce")
}

func allReduceBenchChild(b *testing.B) {
	g, err := Default(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	s := tensor.NewScope()
	defer s.Close()
	tensor.SetGradEnabled(true)
	params := make([]*tensor.T, benchTensors)
	for i := range params {
		params[i] = s.Ones(tensor.Float32, benchTensorFloats)
		s.SetRequiresGrad(params[i], true)
		s.Backward(s.Sum(s.MulScalar(params[i], 2), false))
	}
	if err := s.Err(); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if err := g.AllReduceGrads(Avg, 0, params...); err != nil {
			b.Fatal(err)
		}
	}
	const n = 200
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := g.AllReduceGrads(Avg, 0, params...); err != nil {
			b.Fatal(err)
		}
	}
	mean := float64(time.Since(start).Nanoseconds()) / n
	if g.Rank() == 0 {
		if err := os.WriteFile(filepath.Join(disttest.Dir(), "ns"), []byte(fmt.Sprint(mean)), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}
