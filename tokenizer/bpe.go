package tokenizer

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"unicode/utf8"
)

// A model turns one pre-tokenized piece into ids.
type model interface {
	tokenize(p piece, dst []int32, sc *scratch) ([]int32, error)
	tokenToID(tok string) (int32, bool)
	idToToken(id int32) (string, bool)
	size() int
}

// vocabulary is the token <-> id table shared by the models.
type vocabulary struct {
	ids    map[string]int32
	tokens []string // by id
	has    []bool
}

func newVocabulary(m map[string]int32) *vocabulary {
	v := &vocabulary{ids: m}
	max := int32(-1)
	for _, id := range m {
		if id > max {
			max = id
		}
	}
	v.tokens = make([]string, max+1)
	v.has = make([]bool, max+1)
	for tok, id := range m {
		v.tokens[id] = tok
		v.has[id] = true
	}
	return v
}

func (v *vocabulary) tokenToID(tok string) (int32, bool) {
	id, ok := v.ids[tok]
	return id, ok
}

func (v *vocabulary) idToToken(id int32) (string, bool) {
	if id < 0 || int(id) >= len(v.tokens) || !v.has[id] {
		return "", false
	}
	return v.tokens[id], true
}

func (v *vocabulary) size() int { return len(v.ids) }

// bpeModel is HF's BPE model.
type bpeModel struct {
	*vocabulary
	merges       map[uint64]uint64 // pair (a<<32|b) -> rank<<32 | merged id
	unk          int32             // -1: no unk_token, or not in the vocabulary
	unkTok       string
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	prefix       string     // continuing_subword_prefix
	suffix       string     // end_of_word_suffix
	byteIDs      [256]int32 // ids of "<0xXX>", -1 when absent
	// runeIDs maps a BMP rune to the id of its one-char token (-1: not in
	// the vocabulary), to avoid string lookups for the initial symbols.
	runeIDs []int32

	// Byte-level fast path: the ids of the 256 byte-level chars, and the
	// vocabulary keyed by raw bytes (for ignore_merges).
	blOK    bool
	blByte  [256]int32
	blVocab map[string]int32
	blOnce  sync.Once

	cache   wordCache // keyed by piece text
	blCache wordCache // keyed by the raw bytes of byte-level pieces
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

func newBPE(v *vocabulary) *bpeModel {
	m := &bpeModel{vocabulary: v, unk: -1}
	for b := 0; b < 256; b++ {
		m.byteIDs[b] = -1
		if id, ok := v.ids[fmt.Sprintf("<0x%02X>", b)]; ok {
			m.byteIDs[b] = id
		}
	}
	m.runeIDs = make([]int32, 0x10000)
	for i := range m.runeIDs {
		m.runeIDs[i] = -1
	}
	for tok, id := range v.ids {
		if r, size := utf8.DecodeRuneInString(tok); size == len(tok) && r < 0x10000 && r != utf8.RuneError {
			m.runeIDs[r] = id
		}
	}
	m.cache.init()
	m.blCache.init()
	return m
}

// prepareByteLevel sets up the byte-level fast path; it is only used when
// every byte's char is in the vocabulary and no prefix/suffix applies.
func (m *bpeModel) prepareByteLevel() {
	m.blOnce.Do(func() {
		if m.prefix != "" || m.suffix != "" {
			return
		}
		for b := 0; b < 256; b++ {
			id, ok := m.ids[byteToStr[b]]
			if !ok {
				return
			}
			m.blByte[b] = id
		}
		if m.ignoreMerges {
			m.blVocab = make(map[string]int32, len(m.ids))
			for tok, id := range m.ids {
				if raw, ok := byteLevelDecode(tok); ok {
					m.blVocab[raw] = id
				}
			}
		}
		m.blOK = true
	})
}

// byteLevelDecode maps a byte-level string back to its bytes.
func byteLevelDecode(tok string) (string, bool) {
	b := make([]byte, 0, len(tok))
	for _, r := range tok {
		c, ok := runeToByte[r]
		if !ok {
			return "", false
		}
		b = append(b, c)
	}
	return string(b), true
}

func (m *bpeModel) tokenize(p piece, dst []int32, sc *scratch) ([]int32, error) {
	if p.s == "" {
		return dst, nil
	}
	if p.bl && m.blOK {
		if m.ignoreMerges {
			if id, ok := m.blVocab[p.s]; ok {
				return append(dst, id), nil
			}
		}
		if ids, ok := m.blCache.get(p.s); ok {
			return append(dst, ids...), nil
		}
		sym := sc.sym[:0]
		for i := 0; i < len(p.s); i++ {
			sym = append(sym, m.blByte[p.s[i]])
		}
		sym = m.merge(sym, sc)
		sc.sym = sym
		m.blCache.put(p.s, sym)
		return append(dst, sym...), nil
	}
	w := p.text()
	if m.ignoreMerges {
		if id, ok := m.ids[w]; ok {
			return append(dst, id), nil
		}
	}
	if ids, ok := m.cache.get(w); ok {
		return append(dst, ids...), nil
	}
	sym, err := m.initialSymbols(w, sc.sym[:0])
	if err != nil {
		return dst, err
	}
	sym = m.merge(sym, sc)
	sc.sym = sym
	m.cache.put(w, sym)
	return append(dst, sym...), nil
}

// initialSymbols splits w into chars and looks each up, as HF's
// merge_word does: prefix/suffix, byte_fallback, then unk (fused or not).
func (m *bpeModel) initialSymbols(w string, sym []int32) ([]int32, error) {
	pendingUnk := false
	plain := m.prefix == "" && m.suffix == ""
	for i := 0; i < len(w); {
		r, size := utf8.DecodeRuneInString(w[i:])
		end := i + size
		if plain && r < 0x10000 && m.runeIDs[r] >= 0 && (r != utf8.RuneError || size == 3) {
			if pendingUnk {
				sym = append(sym, m.unk)
				pendingUnk = false
			}
			sym = append(sym, m.runeIDs[r])
			i = end
			continue
		}
		s := w[i:end]
		if m.prefix != "" && i != 0 {
			s = m.prefix + s
		}
		if m.suffix != "" && end == len(w) {
			s += m.suffix
		}
		i = end
		if id, ok := m.ids[s]; ok {
			if pendingUnk {
				sym = append(sym, m.unk)
				pendingUnk = false
			}
			sym = append(sym, id)
			continue
		}
		if m.byteFallback {
			ok := true
			for k := 0; k < len(s); k++ {
				if m.byteIDs[s[k]] < 0 {
					ok = false
					break
				}
			}
			if ok {
				// HF adds the bytes without flushing a pending unk first.
				for k := 0; k < len(s); k++ {
					sym = append(sym, m.byteIDs[s[k]])
				}
				continue
			}
		}
		if m.unk < 0 {
			if m.unkTok != "" {
				return sym, fmt.Errorf("tokenizer: %q is not in the vocabulary and unk_token %q is not either", s, m.unkTok)
			}
			return sym, fmt.Errorf("tokenizer: %q is not in the vocabulary and the model has no unk_token", s)
		}
		if pendingUnk && !m.fuseUnk {
			sym = append(sym, m.unk)
		}
		pendingUnk = true
	}
	if pendingUnk {
		sym = append(sym, m.unk)
	}
	return sym, nil
}

const noRank = math.MaxInt32

func (m *bpeModel) lookup(a, b int32) (rank, id int32) {
	v, ok := m.merges[pairKey(a, b)]
	if !ok {
		return noRank, -1
	}
	return int32(v >> 32), int32(uint32(v))
}

// merge applies the merges to sym: always the pair of lowest rank,
// leftmost on ties (HF's Word::merge_all without dropout).
func (m *bpeModel) merge(sym []int32, sc *scratch) []int32 {
	if len(sym) < 2 || len(m.merges) == 0 {
		return sym
	}
	if len(sym) > 48 {
		return m.mergeHeap(sym, sc)
	}
	ranks := sc.ranks[:0]
	newIDs := sc.newIDs[:0]
	for k := 0; k+1 < len(sym); k++ {
		r, id := m.lookup(sym[k], sym[k+1])
		ranks = append(ranks, r)
		newIDs = append(newIDs, id)
	}
	for len(sym) > 1 {
		best, bk := int32(noRank), -1
		for k, r := range ranks {
			if r < best {
				best, bk = r, k
			}
		}
		if bk < 0 {
			break
		}
		sym[bk] = newIDs[bk]
		copy(sym[bk+1:], sym[bk+2:])
		sym = sym[:len(sym)-1]
		copy(ranks[bk:], ranks[bk+1:])
		ranks = ranks[:len(ranks)-1]
		copy(newIDs[bk:], newIDs[bk+1:])
		newIDs = newIDs[:len(newIDs)-1]
		if bk > 0 {
			ranks[bk-1], newIDs[bk-1] = m.lookup(sym[bk-1], sym[bk])
		}
		if bk < len(ranks) {
			ranks[bk], newIDs[bk] = m.lookup(sym[bk], sym[bk+1])
		}
	}
	sc.ranks, sc.newIDs = ranks, newIDs
	return sym
}

type mergeItem struct {
	rank, pos, id int32
}

func (a mergeItem) less(b mergeItem) bool {
	return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos)
}

// mergeHeap is merge for long words: a priority queue of candidate merges
// with stale entries skipped, as HF does it.
func (m *bpeModel) mergeHeap(sym []int32, sc *scratch) []int32 {
	n := len(sym)
	prev, next := sc.prev[:0], sc.next[:0]
	for i := 0; i < n; i++ {
		prev = append(prev, int32(i-1))
		next = append(next, int32(i+1))
	}
	next[n-1] = -1
	alive := sc.alive[:0]
	for i := 0; i < n; i++ {
		alive = append(alive, true)
	}
	h := sc.heap[:0]
	push := func(it mergeItem) {
		h = append(h, it)
		for i := len(h) - 1; i > 0; {
			p := (i - 1) / 2
			if !h[i].less(h[p]) {
				break
			}
			h[i], h[p] = h[p], h[i]
			i = p
		}
	}
	pop := func() mergeItem {
		top := h[0]
		last := len(h) - 1
		h[0] = h[last]
		h = h[:last]
		for i := 0; ; {
			l, r, s := 2*i+1, 2*i+2, i
			if l < len(h) && h[l].less(h[s]) {
				s = l
			}
			if r < len(h) && h[r].less(h[s]) {
				s = r
			}
			if s == i {
				break
			}
			h[i], h[s] = h[s], h[i]
			i = s
		}
		return top
	}
	for k := 0; k+1 < n; k++ {
		if r, id := m.lookup(sym[k], sym[k+1]); id >= 0 {
			push(mergeItem{r, int32(k), id})
		}
	}
	for len(h) > 0 {
		top := pop()
		pos := top.pos
		if !alive[pos] || next[pos] < 0 {
			continue
		}
		right := next[pos]
		if _, id := m.lookup(sym[pos], sym[right]); id != top.id {
			continue
		}
		sym[pos] = top.id
		alive[right] = false
		next[pos] = next[right]
		if next[right] >= 0 {
			prev[next[right]] = pos
		}
		if p := prev[pos]; p >= 0 {
			if r, id := m.lookup(sym[p], sym[pos]); id >= 0 {
				push(mergeItem{r, p, id})
			}
		}
		if nx := next[pos]; nx >= 0 {
			if r, id := m.lookup(sym[pos], sym[nx]); id >= 0 {
				push(mergeItem{r, pos, id})
			}
		}
	}
	out := sym[:0]
	for i := 0; i < n; i++ {
		if alive[i] {
			out = append(out, sym[i])
		}
	}
	sc.prev, sc.next, sc.alive, sc.heap = prev, next, alive, h
	return out
}

// wordCache remembers the ids of words already merged. It stops growing
// at its capacity, as HF's cache does.
type wordCache struct {
	mu sync.RWMutex
	m  map[string][]int32
}

const (
	cacheCapacity = 20000
	cacheMaxWord  = 64
)

func (c *wordCache) init() { c.m = make(map[string][]int32) }

func (c *wordCache) get(w string) ([]int32, bool) {
	if len(w) > cacheMaxWord {
		return nil, false
	}
	c.mu.RLock()
	ids, ok := c.m[w]
	c.mu.RUnlock()
	return ids, ok
}

func (c *wordCache) put(w string, ids []int32) {
	if len(w) > cacheMaxWord {
		return
	}
	c.mu.RLock()
	full := len(c.m) >= cacheCapacity
	c.mu.RUnlock()
	if full {
		return
	}
	v := append([]int32(nil), ids...)
	c.mu.Lock()
	if len(c.m) < cacheCapacity {
		c.m[strings.Clone(w)] = v
	}
	c.mu.Unlock()
}
