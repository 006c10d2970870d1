package tokenizer

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// A normalizer rewrites a segment of text before pre-tokenization.
type normalizer interface {
	normalize(s string) string
}

type unicodeNorm struct{ form norm.Form }

func (n unicodeNorm) normalize(s string) string { return n.form.String(s) }

type lowercaseNorm struct{}

func (lowercaseNorm) normalize(s string) string { return lowerFull(s) }

// lowerFull lowercases s the way Rust's char::to_lowercase does, one char
// at a time: Go's simple case mapping plus the one unconditional
// multi-char mapping in SpecialCasing.txt (U+0130 -> "i\u0307").
func lowerFull(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToLower(s)
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if r == 0x130 {
			b.WriteString("i\u0307")
			continue
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

type stripNorm struct{ left, right bool }

func (n stripNorm) normalize(s string) string {
	if n.left {
		s = strings.TrimLeftFunc(s, isWhiteSpace)
	}
	if n.right {
		s = strings.TrimRightFunc(s, isWhiteSpace)
	}
	return s
}

type stripAccentsNorm struct{}

func (stripAccentsNorm) normalize(s string) string { return removeMarks(s) }

// removeMarks drops combining marks (general category M), as HF's
// StripAccents does; it does not decompose first.
func removeMarks(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsMark(r) {
			return -1
		}
		return r
	}, s)
}

type prependNorm struct{ prefix string }

func (n prependNorm) normalize(s string) string {
	if s == "" {
		return s
	}
	return n.prefix + s
}

type replaceNorm struct {
	literal string         // when re is nil
	re      *regexp.Regexp // a Regex pattern
	content string
}

func (n replaceNorm) normalize(s string) string {
	if n.re != nil {
		return n.re.ReplaceAllLiteralString(s, n.content)
	}
	if n.literal == "" {
		return s
	}
	return strings.ReplaceAll(s, n.literal, n.content)
}

type seqNorm []normalizer

func (n seqNorm) normalize(s string) string {
	for _, x := range n {
		s = x.normalize(s)
	}
	return s
}

// bertNorm is HF's BertNormalizer.
type bertNorm struct {
	cleanText, chineseChars, stripAccents, lowercase bool
}

func (n bertNorm) normalize(s string) string {
	if n.cleanText {
		s = strings.Map(func(r rune) rune {
			if r == 0 || r == 0xFFFD || isBertControl(r) {
				return -1
			}
			if isBertWhitespace(r) {
				return ' '
			}
			return r
		}, s)
	}
	if n.chineseChars {
		var b strings.Builder
		changed := false
		for _, r := range s {
			if isChineseChar(r) {
				changed = true
				break
			}
		}
		if changed {
			b.Grow(len(s) + 16)
			for _, r := range s {
				if isChineseChar(r) {
					b.WriteByte(' ')
					b.WriteRune(r)
					b.WriteByte(' ')
				} else {
					b.WriteRune(r)
				}
			}
			s = b.String()
		}
	}
	if n.stripAccents {
		s = strings.Map(func(r rune) rune {
			if unicode.Is(unicode.Mn, r) {
				return -1
			}
			return r
		}, norm.NFD.String(s))
	}
	if n.lowercase {
		s = lowerFull(s)
	}
	return s
}

func isBertWhitespace(r rune) bool {
	return isWhiteSpace(r)
}

func isBertControl(r rune) bool {
	switch r {
	case '\t', '\n', '\r':
		return false
	}
	// Rust's char::is_other: Cc, Cf, Cs, Co and unassigned code points.
	return unicode.In(r, unicode.C) || !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z)
}

func isChineseChar(r rune) bool {
	return (r >= 0x4E00 && r <= 0x9FFF) ||
		(r >= 0x3400 && r <= 0x4DBF) ||
		(r >= 0x20000 && r <= 0x2A6DF) ||
		(r >= 0x2A700 && r <= 0x2B73F) ||
		(r >= 0x2B740 && r <= 0x2B81F) ||
		(r >= 0x2B920 && r <= 0x2CEAF) ||
		(r >= 0xF900 && r <= 0xFAFF) ||
		(r >= 0x2F800 && r <= 0x2FA1F)
}
