package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// Character classes as HF's engines see them. Oniguruma (HF's regex
// engine) and Rust's char::is_whitespace use Unicode White_Space for \s;
// Go's regexp \s is ASCII only, which is why none of this uses it.

const (
	clsL    = 1 << iota // \p{L}
	clsN                // \p{N}
	clsS                // \s (Unicode White_Space)
	clsCRLF             // \r or \n
)

var asciiClass [128]uint8

func init() {
	for c := 0; c < 128; c++ {
		r := rune(c)
		var k uint8
		if unicode.IsLetter(r) {
			k |= clsL
		}
		if unicode.IsNumber(r) {
			k |= clsN
		}
		if isWhiteSpace(r) {
			k |= clsS
		}
		if r == '\r' || r == '\n' {
			k |= clsCRLF
		}
		asciiClass[c] = k
	}
}

// isWhiteSpace reports Unicode White_Space: Oniguruma's \s, Rust's
// char::is_whitespace.
func isWhiteSpace(r rune) bool {
	switch r {
	case '\t', '\n', '\v', '\f', '\r', ' ', 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
		return true
	}
	return r >= 0x2000 && r <= 0x200A
}

// isJSSpace reports JavaScript's \s (used by OpenAI's GPT-2 encoder as
// ported to JavaScript): White_Space without U+0085, plus U+FEFF.
func isJSSpace(r rune) bool {
	if r == 0x85 {
		return false
	}
	return r == 0xFEFF || isWhiteSpace(r)
}

func isLetter(r rune) bool {
	if r < utf8.RuneSelf {
		return asciiClass[r]&clsL != 0
	}
	return unicode.IsLetter(r)
}

func isNumber(r rune) bool {
	if r < utf8.RuneSelf {
		return asciiClass[r]&clsN != 0
	}
	return unicode.IsNumber(r)
}

// isWord is Unicode \w (UTS #18), as both Oniguruma and Rust's regex
// crate define it: Alphabetic, M, Nd, Pc and Join_Control (so U+200D
// ZERO WIDTH JOINER is a word char).
func isWord(r rune) bool {
	if r < utf8.RuneSelf {
		return r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
	}
	return unicode.IsLetter(r) || unicode.IsMark(r) || unicode.Is(unicode.Nd, r) ||
		unicode.Is(unicode.Pc, r) || unicode.Is(unicode.Nl, r) ||
		unicode.Is(unicode.Other_Alphabetic, r) || unicode.Is(unicode.Join_Control, r)
}

// isRustNumeric is Rust's char::is_numeric: Nd, Nl, No.
func isRustNumeric(r rune) bool {
	if r < utf8.RuneSelf {
		return r >= '0' && r <= '9'
	}
	return unicode.IsNumber(r)
}

// isBertPunct is HF's BERT punctuation: ASCII punctuation or Unicode P*.
func isBertPunct(r rune) bool {
	if r < utf8.RuneSelf {
		return (r >= 33 && r <= 47) || (r >= 58 && r <= 64) || (r >= 91 && r <= 96) || (r >= 123 && r <= 126)
	}
	return unicode.IsPunct(r)
}
