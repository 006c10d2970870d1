package peft_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// TestConcurrentCallsWithTheirOwnAdapters runs many goroutines on one
// model, each call with its own adapter choice (a Selection: one adapter,
// the base model, per-row mixes; forwards and generations), while another
// goroutine loads and deletes adapters and switches the active one. Every
// forward must equal PEFT's logits for its choice (the HF fixtures), and
// every generation the same generation run alone. Run it under -race.
func TestConcurrentCallsWithTheirOwnAdapters(t *testing.T) {
	m := twoAdapters(t)
	fx := hfFixtures(t)
	def, rich := golden(t, "lora-default"), golden(t, "lora-rich")
	want := map[string][]float32{
		"default":            goldenF32(t, def, "logits"),
		"rich":               goldenF32(t, rich, "logits"),
		peft.BaseAdapterName: goldenF32(t, def, "logits_base"),
	}
	ids, shape := goldenI64(t, def, "input_ids")
	mask, _ := goldenI64(t, def, "attention_mask")
	forward := func(sel *peft.Selection) ([]float32, error) {
		s := tensor.NoGradScope()
		defer s.Close()
		out, err := m.ForwardWith(s, models.Inputs{InputIDs: s.FromInt64(ids, shape...), AttentionMask: s.FromInt64(mask, shape...)}, sel)
		if err != nil {
			return nil, err
		}
		return s.Float32s(out.Logits), s.Err()
	}
	choices := [][]string{ // per row
		{"default", "default"}, {"rich", "rich"}, {peft.BaseAdapterName, peft.BaseAdapterName},
		{"rich", "default"}, {peft.BaseAdapterName, "rich"}, {"default", peft.BaseAdapterName},
	}
	selOf := func(rows []string) *peft.Selection {
		switch {
		case rows[0] != rows[1]:
			return &peft.Selection{Rows: rows}
		case rows[0] == peft.BaseAdapterName:
			return &peft.Selection{Disabled: true}
		}
		return &peft.Selection{Adapters: []string{rows[0]}}
	}
	check := func(rows []string, got []float32) error {
		for i, n := range rows {
			if d := maxAbsDiff(row(got, i, 2), row(want[n], i, 2)); d > 1e-4 {
				return fmt.Errorf("rows %v: row %d (%s) differs from PEFT's by %.3g", rows, i, n, d)
			}
		}
		return nil
	}

	// generations: each prompt alone first (greedy, and seeded sampling)
	prompts := [][]int64{{5, 9, 200, 33}, {17, 4}, {300, 301, 302}}
	adapters := []string{"default", "rich", peft.BaseAdapterName}
	seed := int64(5)
	cfgs := []generate.GenerationConfig{{MaxNewTokens: 6}, {MaxNewTokens: 6, DoSample: true, Seed: &seed, TopK: 20}}
	type genKey struct{ p, a, c int }
	alone := map[genKey][]int64{}
	for p := range prompts {
		for a := range adapters {
			for c := range cfgs {
				out, err := generate.Generate(context.Background(), generate.WithAdapters(m, selOf([]string{adapters[a], adapters[a]})),
					generate.Input{InputIDs: [][]int64{prompts[p]}}, cfgs[c])
				require.NoError(t, err)
				alone[genKey{p, a, c}] = out.NewTokens(0)
			}
		}
	}

	stop := make(chan struct{})
	var writer sync.WaitGroup
	writer.Add(1)
	go func() { // changes the model meanwhile
		defer writer.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("extra%d", i)
			if err := m.LoadAdapter(filepath.Join(fx, "adapters", "llama-tiny", "lora-default"), name); err != nil {
				t.Error(err)
				return
			}
			if err := m.SetAdapter([]string{"default", "rich", name}[i%3]); err != nil {
				t.Error(err)
				return
			}
			if err := m.DeleteAdapter(name); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := 0; it < 6; it++ {
				if g%2 == 0 { // a forward
					rows := choices[(g+it)%len(choices)]
					got, err := forward(selOf(rows))
					if err == nil {
						err = check(rows, got)
					}
					if err != nil {
						errs <- err
					}
					continue
				}
				// a batch of generations, one adapter per prompt
				c := (g/2 + it) % len(cfgs)
				names := make([]string, len(prompts))
				for p := range prompts {
					names[p] = adapters[(p+g+it)%len(adapters)]
				}
				in := generate.LeftPad(prompts, 0)
				if c == 1 {
					in.Seeds = []int64{seed, seed, seed}
				}
				out, err := generate.Generate(context.Background(), generate.RowAdapters(m, names), in, cfgs[c])
				if err != nil {
					errs <- err
					continue
				}
				for p := range prompts {
					a := (p + g + it) % len(adapters)
					if got, w := out.NewTokens(p), alone[genKey{p, a, c}]; fmt.Sprint(got) != fmt.Sprint(w) {
						errs <- fmt.Errorf("prompt %d with %s (config %d) in a batch: %v, alone: %v", p, names[p], c, got, w)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	writer.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
