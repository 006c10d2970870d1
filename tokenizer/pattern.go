package tokenizer

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// span is a piece of a string that a pattern either matched or not.
type span struct {
	start, end int
	match      bool
}

// A pattern finds its matches in a string and returns spans that cover
// the whole string, as HF's Pattern::find_matches does.
type pattern interface {
	findMatches(s string, dst []span) []span
}

// literalPattern matches a fixed string (HF's String pattern).
type literalPattern string

func (p literalPattern) findMatches(s string, dst []span) []span {
	if p == "" {
		return append(dst, span{0, len(s), false})
	}
	prev := 0
	for prev <= len(s) {
		k := strings.Index(s[prev:], string(p))
		if k < 0 {
			break
		}
		start := prev + k
		if start > prev {
			dst = append(dst, span{prev, start, false})
		}
		dst = append(dst, span{start, start + len(p), true})
		prev = start + len(p)
	}
	if prev < len(s) {
		dst = append(dst, span{prev, len(s), false})
	}
	return dst
}

// charPattern matches every char for which the predicate holds.
type charPattern func(rune) bool

func (p charPattern) findMatches(s string, dst []span) []span {
	last := 0
	for i, r := range s {
		if p(r) {
			if last < i {
				dst = append(dst, span{last, i, false})
			}
			w := utf8.RuneLen(r)
			if w < 0 {
				w = 1
			}
			dst = append(dst, span{i, i + w, true})
			last = i + w
		}
	}
	if last < len(s) {
		dst = append(dst, span{last, len(s), false})
	}
	return dst
}

// familyPattern matches one of the hand-written regex families.
type familyPattern struct{ f regexFamily }

func (p *familyPattern) findMatches(s string, dst []span) []span {
	for i := 0; i < len(s); {
		j := p.f.next(s, i)
		dst = append(dst, span{i, j, true})
		i = j
	}
	return dst
}

// goRegexPattern is any other regex, translated to Go's syntax.
type goRegexPattern struct{ re *regexp.Regexp }

func (p goRegexPattern) findMatches(s string, dst []span) []span {
	prev := 0
	for _, m := range p.re.FindAllStringIndex(s, -1) {
		if m[0] == m[1] {
			continue // HF's regexes never match empty; skip rather than loop
		}
		if prev < m[0] {
			dst = append(dst, span{prev, m[0], false})
		}
		dst = append(dst, span{m[0], m[1], true})
		prev = m[1]
	}
	if prev < len(s) {
		dst = append(dst, span{prev, len(s), false})
	}
	return dst
}

type invertPattern struct{ p pattern }

func (p invertPattern) findMatches(s string, dst []span) []span {
	n := len(dst)
	dst = p.p.findMatches(s, dst)
	for i := n; i < len(dst); i++ {
		dst[i].match = !dst[i].match
	}
	return dst
}

// Split behaviours (HF's SplitDelimiterBehavior).
type behavior int

const (
	bRemoved behavior = iota
	bIsolated
	bMergedWithPrevious
	bMergedWithNext
	bContiguous
)

var behaviors = map[string]behavior{
	"Removed":            bRemoved,
	"Isolated":           bIsolated,
	"MergedWithPrevious": bMergedWithPrevious,
	"MergedWithNext":     bMergedWithNext,
	"Contiguous":         bContiguous,
}

// applyBehavior turns matches into the spans to keep (match=false means
// keep, as HF computes (offsets, should_remove)), in place.
func applyBehavior(sp []span, b behavior) []span {
	switch b {
	case bIsolated:
		for i := range sp {
			sp[i].match = false
		}
		return sp
	case bRemoved:
		return sp
	case bContiguous:
		out := sp[:0]
		prev := false
		for _, x := range sp {
			m := x.match
			if len(out) > 0 && m == prev {
				out[len(out)-1].end = x.end
			} else {
				out = append(out, span{x.start, x.end, false})
			}
			prev = m
		}
		return out
	case bMergedWithPrevious:
		out := sp[:0]
		prev := false
		for _, x := range sp {
			m := x.match
			if m && !prev && len(out) > 0 {
				out[len(out)-1].end = x.end
			} else {
				out = append(out, span{x.start, x.end, false})
			}
			prev = m
		}
		return out
	case bMergedWithNext:
		// Walk backwards, merging a match into the piece after it.
		out := make([]span, 0, len(sp))
		prev := false
		for i := len(sp) - 1; i >= 0; i-- {
			x := sp[i]
			m := x.match
			if m && !prev && len(out) > 0 {
				out[len(out)-1].start = x.start
			} else {
				out = append(out, span{x.start, x.end, false})
			}
			prev = m
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
		return append(sp[:0], out...)
	}
	return sp
}

// compileRegex turns an Oniguruma pattern from tokenizer.json into a
// pattern: a hand-written matcher for the known look-ahead families,
// otherwise Go's regexp after rewriting the classes whose meaning differs
// (\s, \S, \d, \D, \w, \W are Unicode in Oniguruma, ASCII in Go).
func compileRegex(src string) (pattern, error) {
	if f, ok := knownRegexes[src]; ok {
		return &familyPattern{f}, nil
	}
	goSrc, err := translateRegex(src)
	if err != nil {
		return nil, err
	}
	re, err := regexp.Compile(goSrc)
	if err != nil {
		return nil, fmt.Errorf("unsupported regex %q: %v", src, err)
	}
	return goRegexPattern{re}, nil
}

const wsClass = `\t\n\v\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}`

// wordClass is Unicode \w for Go's regexp, which has no Alphabetic or
// Join_Control property: the categories, plus the Other_Alphabetic chars
// that are not marks (circled letters and the like).
func wordClass() string {
	var b strings.Builder
	b.WriteString(`\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}`)
	other := func(r rune) bool { return !unicode.IsMark(r) && !unicode.IsLetter(r) && !unicode.Is(unicode.Nl, r) }
	add := func(lo, hi, stride rune) {
		for r := lo; r <= hi; r += stride {
			if other(r) {
				fmt.Fprintf(&b, `\x{%X}`, r)
			}
		}
	}
	for _, x := range unicode.Other_Alphabetic.R16 {
		add(rune(x.Lo), rune(x.Hi), rune(x.Stride))
	}
	for _, x := range unicode.Other_Alphabetic.R32 {
		add(rune(x.Lo), rune(x.Hi), rune(x.Stride))
	}
	return b.String()
}

func translateRegex(src string) (string, error) {
	var b strings.Builder
	inClass := false
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '\\' && i+1 < len(src):
			n := src[i+1]
			i++
			var in, out string
			switch n {
			case 's':
				in, out = wsClass, `[`+wsClass+`]`
			case 'S':
				out = `[^` + wsClass + `]`
			case 'd':
				in, out = `\p{Nd}`, `\p{Nd}`
			case 'D':
				out = `\P{Nd}`
			case 'w':
				in = wordClass()
				out = `[` + in + `]`
			case 'W':
				out = `[^` + wordClass() + `]`
			case 'b', 'B', 'A', 'z', 'Z', 'G', 'K', 'R', 'X', 'h', 'H':
				return "", fmt.Errorf("unsupported regex %q: \\%c", src, n)
			default:
				b.WriteByte('\\')
				b.WriteByte(n)
				continue
			}
			if inClass {
				if in == "" {
					return "", fmt.Errorf("unsupported regex %q: \\%c inside a class", src, n)
				}
				b.WriteString(in)
			} else {
				b.WriteString(out)
			}
		case c == '[' && !inClass:
			inClass = true
			b.WriteByte(c)
			if i+1 < len(src) && src[i+1] == '^' {
				b.WriteByte('^')
				i++
			}
			if i+1 < len(src) && src[i+1] == ']' { // a leading ] is literal
				b.WriteString(`\]`)
				i++
			}
		case c == ']' && inClass:
			inClass = false
			b.WriteByte(c)
		case c == '[' && inClass:
			return "", fmt.Errorf("unsupported regex %q: nested character class", src)
		case c == '(' && !inClass && i+2 < len(src) && src[i+1] == '?' &&
			(src[i+2] == '=' || src[i+2] == '!' || src[i+2] == '<' || src[i+2] == '>'):
			return "", fmt.Errorf("unsupported regex %q: look-around or atomic group", src)
		case (c == '+' || c == '*' || c == '?' || c == '}') && !inClass && i+1 < len(src) && src[i+1] == '+':
			return "", fmt.Errorf("unsupported regex %q: possessive quantifier", src)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}
