package tokenizer

import (
	"unicode/utf8"
)

// AddedToken is an entry of tokenizer.json's added_tokens.
type AddedToken struct {
	ID         int
	Content    string
	Special    bool
	LStrip     bool
	RStrip     bool
	SingleWord bool
	Normalized bool
}

// addedVocab is HF's AddedVocabulary: tokens matched in the text before
// the model sees it.
type addedVocab struct {
	byContent  map[string]int32 // added_tokens_map
	byID       map[int32]AddedToken
	seen       map[AddedToken]bool // the tokens of byID, with ID zeroed
	maxID      int32               // the largest id in byContent, -1 when empty
	specialSet map[string]bool
	special    []AddedToken // in the order added
	classic    []AddedToken // non-special, in the order added
	raw        *trie        // tokens matched on the raw text
	norm       *trie        // tokens matched on the normalized text
}

func newAddedVocab() *addedVocab {
	return &addedVocab{
		byContent:  map[string]int32{},
		byID:       map[int32]AddedToken{},
		seen:       map[AddedToken]bool{},
		maxID:      -1,
		specialSet: map[string]bool{},
		raw:        newTrie(),
		norm:       newTrie(),
	}
}

// add registers one token the way HF's add_tokens/add_special_tokens do
// when a tokenizer.json is loaded; ids come from the model vocabulary or
// are assigned after it (HF warns, and so uses its own id, when the
// file's id differs).
func (a *addedVocab) add(tok AddedToken, m model) {
	if tok.Special && tok.Content != "" && !a.specialSet[tok.Content] {
		a.special = append(a.special, tok)
		a.specialSet[tok.Content] = true
	}
	if tok.Content == "" {
		return
	}
	key := tok
	key.ID = 0
	if a.seen[key] {
		return
	}
	id, ok := a.tokenToID(tok.Content, m)
	if !ok {
		vs := int32(m.size())
		max := a.maxID
		switch {
		case max < 0:
			id = vs
		case max >= vs || vs == 0:
			id = max + 1
		default:
			id = vs
		}
	}
	a.byContent[tok.Content] = id
	if id > a.maxID {
		a.maxID = id
	}
	tok.ID = int(id)
	if old, ok := a.byID[id]; ok {
		old.ID = 0
		delete(a.seen, old)
	}
	a.byID[id] = tok
	a.seen[key] = true
	if !a.specialSet[tok.Content] {
		a.classic = append(a.classic, tok)
	}
}

func (a *addedVocab) tokenToID(content string, m model) (int32, bool) {
	if id, ok := a.byContent[content]; ok {
		return id, true
	}
	return m.tokenToID(content)
}

// build makes the two matching tries (HF's refresh_added_tokens): the
// special tokens first, then the others; normalized tokens are matched by
// their normalized content on normalized text.
func (a *addedVocab) build(m model, n normalizer) {
	a.raw, a.norm = newTrie(), newTrie()
	for _, list := range [][]AddedToken{a.special, a.classic} {
		for _, tok := range list {
			id, _ := a.tokenToID(tok.Content, m)
			if tok.Normalized {
				c := tok.Content
				if n != nil {
					c = n.normalize(c)
				}
				a.norm.insert(c, id)
			} else {
				a.raw.insert(tok.Content, id)
			}
		}
	}
}

// split cuts s at the added tokens of tr and calls emit for every part,
// in order: id >= 0 for an added token, -1 for text in between.
func (a *addedVocab) split(s string, tr *trie, emit func(start, end int, id int32) error) error {
	if tr.empty() {
		if s == "" {
			return nil
		}
		return emit(0, len(s), -1)
	}
	startOffset := 0
	for i := 0; i < len(s); {
		ms, me, id := tr.find(s, i)
		if ms < 0 {
			break
		}
		i = me
		tok := a.byID[id]
		start, stop := ms, me
		if tok.SingleWord {
			startSpace := start == 0 || !endsWithWord(s[:start])
			stopSpace := stop == len(s) || !startsWithWord(s[stop:])
			if !startSpace || !stopSpace {
				continue
			}
		}
		if tok.LStrip {
			ns := start
			for ns > 0 {
				r, w := utf8.DecodeLastRuneInString(s[:ns])
				if !isWhiteSpace(r) {
					break
				}
				ns -= w
			}
			start = max(ns, startOffset)
		}
		if tok.RStrip {
			for stop < len(s) {
				r, w := utf8.DecodeRuneInString(s[stop:])
				if !isWhiteSpace(r) {
					break
				}
				stop += w
			}
		}
		if startOffset < start {
			if err := emit(startOffset, start, -1); err != nil {
				return err
			}
		}
		if err := emit(start, stop, id); err != nil {
			return err
		}
		startOffset = stop
	}
	if startOffset < len(s) {
		return emit(startOffset, len(s), -1)
	}
	return nil
}

func endsWithWord(s string) bool {
	r, _ := utf8.DecodeLastRuneInString(s)
	return s != "" && isWord(r)
}

func startsWithWord(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return s != "" && isWord(r)
}

// trie is a byte trie over the added tokens, searched leftmost-longest
// (aho-corasick's MatchKind::LeftmostLongest, which HF uses).
type trie struct {
	root  [256]int32 // child of the root by byte, 0 = none
	nodes []trieNode
	n     int
}

type trieNode struct {
	edges []trieEdge
	id    int32 // token id ending here, -1 if none
}

type trieEdge struct {
	b  byte
	to int32
}

func newTrie() *trie {
	return &trie{nodes: []trieNode{{id: -1}}}
}

func (t *trie) empty() bool { return t.n == 0 }

func (t *trie) insert(s string, id int32) {
	if s == "" {
		return
	}
	cur := int32(0)
	for i := 0; i < len(s); i++ {
		b := s[i]
		next := int32(0)
		if cur == 0 {
			next = t.root[b]
		} else {
			for _, e := range t.nodes[cur].edges {
				if e.b == b {
					next = e.to
					break
				}
			}
		}
		if next == 0 {
			next = int32(len(t.nodes))
			t.nodes = append(t.nodes, trieNode{id: -1})
			if cur == 0 {
				t.root[b] = next
			} else {
				t.nodes[cur].edges = append(t.nodes[cur].edges, trieEdge{b, next})
			}
		}
		cur = next
	}
	if t.nodes[cur].id < 0 { // the first of identical patterns wins
		t.nodes[cur].id = id
		t.n++
	}
}

// find returns the leftmost-longest match starting at or after from, or
// ms = -1.
func (t *trie) find(s string, from int) (ms, me int, id int32) {
	for i := from; i < len(s); i++ {
		cur := t.root[s[i]]
		if cur == 0 {
			continue
		}
		best, bestID := -1, int32(-1)
		for j := i; ; {
			if nid := t.nodes[cur].id; nid >= 0 {
				best, bestID = j+1, nid
			}
			j++
			if j >= len(s) {
				break
			}
			next := int32(0)
			for _, e := range t.nodes[cur].edges {
				if e.b == s[j] {
					next = e.to
					break
				}
			}
			if next == 0 {
				break
			}
			cur = next
		}
		if best >= 0 {
			return i, best, bestID
		}
	}
	return -1, -1, -1
}
