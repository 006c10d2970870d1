package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// batch is the running decode batch: its rows and their key/value cache,
// [rows, heads, width, head_dim] per layer, each row left-padded (masked)
// to the common width.
type batch struct {
	rows  []*seq
	cache *models.Cache
	width int64
}

func (b *batch) reset() {
	b.cache.Free()
	*b = batch{}
}

// loop is the scheduler: admit, prefill, decode one step, retire; until
// Shutdown and nothing is left.
func (e *Engine) loop() {
	defer close(e.done)
	var b batch
	defer b.reset()
	for {
		e.mu.Lock()
		abort, closed := e.abort, e.closed
		var admit, gone []*seq
		kept := e.queue[:0]
		for _, q := range e.queue { // requests cancelled while they waited leave the queue
			if q.ctx.Err() != nil {
				gone = append(gone, q)
			} else {
				kept = append(kept, q)
			}
		}
		clear(e.queue[len(kept):])
		e.queue = kept
		if abort {
			admit, e.queue = e.queue, nil
		} else {
			for len(b.rows)+len(admit) < e.opt.MaxBatch && len(e.queue) > 0 {
				if !e.rows && !e.sameAdapter(&b, admit, e.queue[0]) {
					break // one adapter per batch: the head waits for the batch to drain
				}
				admit = append(admit, e.queue[0])
				e.queue[0] = nil
				e.queue = e.queue[1:]
			}
		}
		e.stats.Running = len(b.rows) + len(admit)
		e.mu.Unlock()
		for _, q := range gone {
			e.send(q, Event{Err: q.ctx.Err()})
		}
		if abort {
			for _, q := range append(admit, b.rows...) {
				e.send(q, Event{Err: ErrClosed})
			}
			b.rows = nil
			return
		}
		if len(b.rows) == 0 && len(admit) == 0 {
			if closed {
				return
			}
			<-e.wake
			continue
		}
		for _, q := range admit {
			e.prefill(&b, q)
		}
		if len(b.rows) > 0 {
			e.step(&b)
		}
		e.mu.Lock()
		e.stats.Running = len(b.rows)
		e.mu.Unlock()
	}
}

// sameAdapter reports whether q's adapter is that of the batch's rows and
// the admitted requests (true when there are none).
func (e *Engine) sameAdapter(b *batch, admit []*seq, q *seq) bool {
	for _, r := range append(admit, b.rows...) {
		if r.adapter != q.adapter {
			return false
		}
	}
	return true
}

// prefill runs q's prompt alone (as generate does), sends its first token
// and, unless that ends it, moves its cache rows into the batch.
func (e *Engine) prefill(b *batch, q *seq) {
	if err := q.ctx.Err(); err != nil {
		e.send(q, Event{Err: err})
		return
	}
	start := time.Now()
	defer func() {
		e.mu.Lock()
		e.stats.PrefillTime += time.Since(start)
		e.mu.Unlock()
	}()
	s := tensor.NoGradScope()
	defer s.Close()
	s.SetDevice(e.m.Device())
	defer e.m.Hold(s)()
	defer peft.WithSelection(s, selection(q.adapter))()
	P := int64(len(q.req.Prompt))
	cache := &models.Cache{}
	out := e.m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(q.req.Prompt, 1, P), PastKeyValues: cache,
		UseCache: true, LastLogitsOnly: true})
	if s.Err() == nil && out.PastKeyValues != nil && out.PastKeyValues != cache && cache.Len() == 0 {
		cache = out.PastKeyValues // a model that made its own cache
	}
	logits := lastLogits(s, out, 1)
	var tok int64
	err := s.Err()
	if err == nil {
		err = checkCache(cache, 1, P)
	}
	if err == nil {
		tok, err = q.dec.Next(s, s.Select(logits, 0, 0))
	}
	if err != nil {
		cache.Free()
		e.send(q, Event{Err: fmt.Errorf("engine: prefill: %w", err)})
		return
	}
	q.pos = P
	if e.emit(q, tok) {
		cache.Free()
		return
	}
	if err := b.join(s, q, cache); err != nil {
		e.fail(b, fmt.Errorf("engine: joining the batch: %w", err))
	}
}

// step decodes one token for every running row in one forward.
func (e *Engine) step(b *batch) {
	for _, q := range b.rows { // rows whose client went away or whose adapter was deleted
		if err := q.ctx.Err(); err != nil {
			e.send(q, Event{Err: err})
		} else if q.adapter != peft.BaseAdapterName && !e.m.HasAdapter(q.adapter) {
			e.send(q, Event{Err: fmt.Errorf("engine: adapter %q was deleted while the request ran", q.adapter)})
		}
	}
	if err := e.retire(b); err != nil || len(b.rows) == 0 {
		return
	}
	start := time.Now()
	defer func() {
		e.mu.Lock()
		e.stats.DecodeTime += time.Since(start)
		e.mu.Unlock()
	}()
	s := tensor.NoGradScope()
	defer s.Close()
	s.SetDevice(e.m.Device())
	defer e.m.Hold(s)()
	R, W := int64(len(b.rows)), b.width
	ids := make([]int64, 0, R)
	pos := make([]int64, 0, R)
	mask := make([]int64, 0, R*(W+1))
	names := make([]string, 0, R)
	same := true
	for _, q := range b.rows {
		ids = append(ids, q.last)
		pos = append(pos, q.pos)
		for j := int64(0); j <= W; j++ {
			if j < q.pad {
				mask = append(mask, 0)
			} else {
				mask = append(mask, 1)
			}
		}
		names = append(names, q.adapter)
		same = same && q.adapter == names[0]
	}
	sel := &peft.Selection{Rows: names}
	if same {
		sel = selection(names[0])
	}
	defer peft.WithSelection(s, sel)()
	out := e.m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, R, 1), AttentionMask: s.FromInt64(mask, R, W+1),
		PositionIDs: s.FromInt64(pos, R, 1), PastKeyValues: b.cache, UseCache: true, LastLogitsOnly: true})
	logits := lastLogits(s, out, R)
	err := s.Err()
	if err == nil {
		err = checkCache(b.cache, R, W+1)
	}
	if err != nil {
		e.fail(b, fmt.Errorf("engine: decode step: %w", err))
		return
	}
	b.width++
	e.mu.Lock()
	e.stats.Steps++
	e.stats.StepRows += uint64(R)
	e.mu.Unlock()
	for i, q := range b.rows {
		q.pos++
		tok, err := q.dec.Next(s, s.Select(logits, 0, int64(i)))
		if err != nil {
			e.send(q, Event{Err: fmt.Errorf("engine: %w", err)})
			continue
		}
		e.emit(q, tok)
	}
	if err := s.Err(); err != nil {
		e.fail(b, fmt.Errorf("engine: decode step: %w", err))
		return
	}
	s.FreeAll()
	_ = e.retire(b)
}

// fail ends every running row with err and empties the batch.
func (e *Engine) fail(b *batch, err error) {
	for _, q := range b.rows {
		e.send(q, Event{Err: err})
	}
	b.reset()
}

// retire removes the finished rows from the batch (their cache rows) and
// the padding columns no remaining row needs.
func (e *Engine) retire(b *batch) error {
	var keep []int64
	minPad := b.width
	for i, q := range b.rows {
		if !q.retired {
			keep = append(keep, int64(i))
			minPad = min(minPad, q.pad)
		}
	}
	switch {
	case len(keep) == len(b.rows):
		return nil
	case len(keep) == 0:
		b.reset()
		return nil
	}
	s := tensor.NoGradScope()
	defer s.Close()
	s.SetDevice(e.m.Device())
	idx := s.FromInt64(keep, int64(len(keep)))
	for l := range b.cache.Layers {
		kv := &b.cache.Layers[l]
		k := s.Contiguous(s.Narrow(s.IndexSelect(kv.K, 0, idx), 2, minPad, b.width-minPad))
		v := s.Contiguous(s.Narrow(s.IndexSelect(kv.V, 0, idx), 2, minPad, b.width-minPad))
		if err := s.Err(); err != nil {
			e.fail(b, fmt.Errorf("engine: retiring rows: %w", err))
			return err
		}
		kv.Set(s.Keep(k), s.Keep(v))
	}
	rows := make([]*seq, 0, len(keep))
	for _, i := range keep {
		q := b.rows[i]
		q.pad -= minPad
		rows = append(rows, q)
	}
	b.rows = rows
	b.width -= minPad
	return nil
}

// join adds q's cache (one row of P positions) to the batch, left-padding
// the shorter side.
func (b *batch) join(s *tensor.Scope, q *seq, c *models.Cache) error {
	P := c.Len()
	if len(b.rows) == 0 {
		b.cache.Free()
		b.cache, b.width, q.pad = c, P, 0
		b.rows = []*seq{q}
		return nil
	}
	defer c.Free()
	if len(c.Layers) != len(b.cache.Layers) {
		return fmt.Errorf("a cache of %d layers for a batch of %d", len(c.Layers), len(b.cache.Layers))
	}
	W := b.width
	NW := max(W, P)
	for l := range b.cache.Layers {
		kv, nkv := &b.cache.Layers[l], &c.Layers[l]
		k := s.Cat(0, padLeft(s, kv.K, NW-W), padLeft(s, nkv.K, NW-P))
		v := s.Cat(0, padLeft(s, kv.V, NW-W), padLeft(s, nkv.V, NW-P))
		if err := s.Err(); err != nil {
			return err
		}
		kv.Set(s.Keep(k), s.Keep(v))
	}
	for _, r := range b.rows {
		r.pad += NW - W
	}
	q.pad = NW - P
	b.width = NW
	b.rows = append(b.rows, q)
	return nil
}

// padLeft puts n zero positions before t's (dimension 2).
func padLeft(s *tensor.Scope, t *tensor.T, n int64) *tensor.T {
	if n == 0 || t == nil {
		return t
	}
	sh := t.Shape()
	sh[2] = n
	z := s.Zeros(t.DType(), sh...)
	if z != nil && z.Device() != t.Device() {
		z = s.ToDevice(z, t.Device())
	}
	return s.Cat(2, z, t)
}

// lastLogits is the last position's logits of out, [rows, vocab].
func lastLogits(s *tensor.Scope, out *models.Output, rows int64) *tensor.T {
	if s.Err() != nil {
		return nil
	}
	if out == nil || out.Logits == nil {
		return s.Failf("the model returned no logits")
	}
	lg := out.Logits
	if lg.Dim() != 3 || lg.Size(0) != rows {
		return s.Failf("logits of shape %v for %d rows, want [rows, seq, vocab]", lg.Shape(), rows)
	}
	return s.Select(lg, 1, lg.Size(1)-1)
}

var errCacheLayout = errors.New("the model's key/value cache is not [batch, heads, positions, head_dim] (the engine needs that layout)")

// checkCache checks that c holds rows × positions in the layout the batch
// is built on.
func checkCache(c *models.Cache, rows, positions int64) error {
	if c == nil || len(c.Layers) == 0 {
		return errors.New("the model returned no key/value cache")
	}
	for _, kv := range c.Layers {
		if kv.K == nil || kv.V == nil || kv.K.Dim() != 4 || kv.V.Dim() != 4 ||
			kv.K.Size(0) != rows || kv.K.Size(2) != positions || kv.V.Size(0) != rows || kv.V.Size(2) != positions {
			return errCacheLayout
		}
	}
	return nil
}
