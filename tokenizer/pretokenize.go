package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// A piece is a part of the normalized text on its way to the model.
type piece struct {
	s string
	// first: the piece starts at offset 0 of the original text (what
	// Metaspace's prepend_scheme "first" checks).
	first bool
	// bl: the model must see s byte-level encoded (a ByteLevel
	// pre-tokenizer ran); the encoding is done lazily, by the BPE model
	// directly on the bytes, or by text() for anything else.
	bl bool
}

func (p piece) text() string {
	if !p.bl {
		return p.s
	}
	return byteLevelEncode(p.s)
}

// A preTokenizer splits one piece and appends the results to out.
type preTokenizer interface {
	split(p piece, out []piece, sc *scratch) []piece
}

// keepSpans appends the kept, non-empty spans of s as pieces.
func keepSpans(p piece, s string, sp []span, out []piece) []piece {
	for _, x := range sp {
		if x.match || x.start == x.end {
			continue
		}
		out = append(out, piece{s: s[x.start:x.end], first: p.first && x.start == 0})
	}
	return out
}

type splitPre struct {
	pat      pattern
	fam      *regexFamily // set for a hand-written family, Isolated, not inverted
	behavior behavior
}

func (t *splitPre) split(p piece, out []piece, sc *scratch) []piece {
	s := p.text()
	if t.fam != nil {
		for i := 0; i < len(s); {
			j := t.fam.next(s, i)
			out = append(out, piece{s: s[i:j], first: p.first && i == 0})
			i = j
		}
		return out
	}
	sp := t.pat.findMatches(s, sc.spans[:0])
	sp = applyBehavior(sp, t.behavior)
	out = keepSpans(p, s, sp, out)
	sc.spans = sp[:0]
	return out
}

type byteLevelPre struct {
	addPrefixSpace bool
	useRegex       bool
	fam            regexFamily // the GPT-2 regex
}

func (t *byteLevelPre) split(p piece, out []piece, sc *scratch) []piece {
	s := p.text()
	if t.addPrefixSpace && !strings.HasPrefix(s, " ") {
		s = " " + s
	}
	if !t.useRegex {
		return append(out, piece{s: s, first: p.first, bl: true})
	}
	for i := 0; i < len(s); {
		j := t.fam.next(s, i)
		out = append(out, piece{s: s[i:j], first: p.first && i == 0, bl: true})
		i = j
	}
	return out
}

const (
	prependAlways = iota
	prependFirst
	prependNever
)

type metaspacePre struct {
	rep     rune
	repStr  string
	scheme  int
	splitOn bool
}

func (t *metaspacePre) split(p piece, out []piece, sc *scratch) []piece {
	s := strings.ReplaceAll(p.text(), " ", t.repStr)
	if !strings.HasPrefix(s, t.repStr) &&
		(t.scheme == prependAlways || (t.scheme == prependFirst && p.first)) {
		s = t.repStr + s
	}
	if !t.splitOn {
		if s == "" {
			return out
		}
		return append(out, piece{s: s, first: p.first})
	}
	sp := charPattern(func(r rune) bool { return r == t.rep }).findMatches(s, sc.spans[:0])
	sp = applyBehavior(sp, bMergedWithNext)
	out = keepSpans(p, s, sp, out)
	sc.spans = sp[:0]
	return out
}

// runSplit emits maximal runs of chars by class; class 0 chars are
// dropped, class -1 chars are emitted alone.
func runSplit(p piece, out []piece, class func(rune) int) []piece {
	s := p.text()
	start, cur := -1, 0
	flush := func(end int) {
		if start >= 0 && end > start {
			out = append(out, piece{s: s[start:end], first: p.first && start == 0})
		}
		start = -1
	}
	for i, r := range s {
		c := class(r)
		switch {
		case c == 0:
			flush(i)
		case c < 0:
			flush(i)
			w := utf8.RuneLen(r)
			if w < 0 {
				w = 1
			}
			out = append(out, piece{s: s[i : i+w], first: p.first && i == 0})
		case start < 0 || c != cur:
			flush(i)
			start, cur = i, c
		}
	}
	flush(len(s))
	return out
}

// whitespacePre is HF's Whitespace: the matches of \w+|[^\w\s]+.
type whitespacePre struct{}

func (whitespacePre) split(p piece, out []piece, _ *scratch) []piece {
	return runSplit(p, out, func(r rune) int {
		switch {
		case isWord(r):
			return 1
		case isWhiteSpace(r):
			return 0
		}
		return 2
	})
}

// whitespaceSplitPre splits on Unicode whitespace, dropping it.
type whitespaceSplitPre struct{}

func (whitespaceSplitPre) split(p piece, out []piece, _ *scratch) []piece {
	return runSplit(p, out, func(r rune) int {
		if isWhiteSpace(r) {
			return 0
		}
		return 1
	})
}

// bertPre splits on whitespace (dropped) and isolates punctuation.
type bertPre struct{}

func (bertPre) split(p piece, out []piece, _ *scratch) []piece {
	return runSplit(p, out, func(r rune) int {
		switch {
		case isWhiteSpace(r):
			return 0
		case isBertPunct(r):
			return -1
		}
		return 1
	})
}

// charSplitPre splits on chars matching pred, with a behavior
// (Punctuation, Digits, CharDelimiterSplit).
type charSplitPre struct {
	pred     func(rune) bool
	behavior behavior
}

func (t *charSplitPre) split(p piece, out []piece, sc *scratch) []piece {
	s := p.text()
	sp := charPattern(t.pred).findMatches(s, sc.spans[:0])
	sp = applyBehavior(sp, t.behavior)
	out = keepSpans(p, s, sp, out)
	sc.spans = sp[:0]
	return out
}

type seqPre []preTokenizer

func (t seqPre) split(p piece, out []piece, sc *scratch) []piece {
	cur := append(sc.getPieces(), p)
	for _, x := range t {
		next := sc.getPieces()
		for _, q := range cur {
			next = x.split(q, next, sc)
		}
		sc.putPieces(cur)
		cur = next
	}
	out = append(out, cur...)
	sc.putPieces(cur)
	return out
}

// GPT-2's byte-to-unicode table: printable Latin-1 bytes map to
// themselves, the others to U+0100 onwards.
var (
	byteToRune [256]rune
	byteToStr  [256]string
	runeToByte = map[rune]byte{}
)

func init() {
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			byteToRune[b] = rune(b)
		} else {
			byteToRune[b] = rune(256 + n)
			n++
		}
		byteToStr[b] = string(byteToRune[b])
		runeToByte[byteToRune[b]] = byte(b)
	}
}

func byteLevelEncode(s string) string {
	var b strings.Builder
	b.Grow(len(s) * 2)
	for i := 0; i < len(s); i++ {
		b.WriteString(byteToStr[s[i]])
	}
	return b.String()
}
