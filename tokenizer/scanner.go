package tokenizer

import (
	"strconv"
	"unicode/utf8"
)

// A regexFamily matches one of the pre-tokenizer regexes that HF
// tokenizers use and Go's regexp cannot express (they end in the
// look-ahead `\s+(?!\S)`). Each is matched by hand with Oniguruma's
// semantics: leftmost-first alternation, greedy quantifiers with
// backtracking, and Unicode classes.
//
// famGPT2:
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// famCL100K (Llama 3, GPT-4's cl100k, Qwen2/2.5/3 with digits=1):
//
//	(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//	 ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
type regexFamily struct {
	cl100k bool
	digits int  // cl100k: at most this many \p{N} per piece; 0 = unbounded
	fold   bool // contractions match case-insensitively
	js     bool // \s is JavaScript's (OpenAI's JS GPT-2 encoder), not Unicode White_Space
}

// knownRegexes maps the exact pattern strings found in tokenizer.json
// files to their hand-written matchers.
var knownRegexes = func() map[string]regexFamily {
	m := map[string]regexFamily{
		`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`: {},
	}
	for _, d := range []int{0, 1, 2, 3} {
		q := `\p{N}+`
		if d == 1 {
			q = `\p{N}`
		} else if d > 1 {
			q = `\p{N}{1,` + strconv.Itoa(d) + `}`
		}
		// The possessive `?+` matches the same strings: the optional char
		// is never a letter, so giving it back cannot help \p{L}+.
		for _, lead := range []string{`[^\r\n\p{L}\p{N}]?\p{L}+`, `[^\r\n\p{L}\p{N}]?+\p{L}+`} {
			p := `(?i:'s|'t|'re|'ve|'m|'ll|'d)|` + lead + `|` + q + `| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
			m[p] = regexFamily{cl100k: true, digits: d, fold: true}
		}
	}
	return m
}()

func decodeAt(s string, i int) (rune, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

func (f *regexFamily) space(r rune) bool {
	if r < utf8.RuneSelf {
		return asciiClass[r]&clsS != 0
	}
	if f.js {
		return isJSSpace(r)
	}
	return isWhiteSpace(r)
}

// other reports [^\s\p{L}\p{N}].
func (f *regexFamily) other(r rune) bool {
	if r < utf8.RuneSelf {
		return asciiClass[r] == 0
	}
	return !f.space(r) && !isLetter(r) && !isNumber(r)
}

// split appends to dst the end offset of every piece of s, in order.
func (f *regexFamily) split(s string, dst []int) []int {
	for i := 0; i < len(s); {
		i = f.next(s, i)
		dst = append(dst, i)
	}
	return dst
}

// next returns the end of the match that starts at i (< len(s)). Every
// character is matched by some alternative, so there are no gaps.
func (f *regexFamily) next(s string, i int) int {
	r, w := decodeAt(s, i)
	if r == '\'' && i+1 < len(s) {
		if n := f.contraction(s, i+1); n > 0 {
			return i + 1 + n
		}
	}
	if f.cl100k {
		return f.nextCL100K(s, i, r, w)
	}
	// ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`
	j, c := i, r
	if r == ' ' && i+1 < len(s) {
		c, _ = decodeAt(s, i+1)
		if isLetter(c) || isNumber(c) || f.other(c) {
			j = i + 1
		} else {
			c = r
		}
	}
	switch {
	case isLetter(c):
		return f.run(s, j, isLetter, 0)
	case isNumber(c):
		return f.run(s, j, isNumber, 0)
	case f.other(c):
		return f.run(s, j, f.other, 0)
	}
	return f.whitespace(s, i, false)
}

func (f *regexFamily) nextCL100K(s string, i int, r rune, w int) int {
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if isLetter(r) {
		return f.run(s, i, isLetter, 0)
	}
	if r != '\r' && r != '\n' && !isNumber(r) && i+w < len(s) {
		if c, _ := decodeAt(s, i+w); isLetter(c) {
			return f.run(s, i+w, isLetter, 0)
		}
	}
	// \p{N}{1,digits}
	if isNumber(r) {
		return f.run(s, i, isNumber, f.digits)
	}
	// ` ?[^\s\p{L}\p{N}]+[\r\n]*`
	j := -1
	if r == ' ' && i+1 < len(s) {
		if c, _ := decodeAt(s, i+1); f.other(c) {
			j = i + 1
		}
	}
	if j < 0 && f.other(r) {
		j = i
	}
	if j >= 0 {
		j = f.run(s, j, f.other, 0)
		for j < len(s) && (s[j] == '\r' || s[j] == '\n') {
			j++
		}
		return j
	}
	// r is whitespace: \s*[\r\n]+|\s+(?!\S)|\s+
	return f.whitespace(s, i, true)
}

// whitespace matches at i (a whitespace char) `\s*[\r\n]+` (when crlf),
// then `\s+(?!\S)`, then `\s+`.
func (f *regexFamily) whitespace(s string, i int, crlf bool) int {
	end, last, afterNL := i, i, -1
	for end < len(s) {
		c, w := decodeAt(s, end)
		if !f.space(c) {
			break
		}
		if c == '\r' || c == '\n' {
			afterNL = end + w
		}
		last = end
		end += w
	}
	if crlf && afterNL > 0 {
		return afterNL
	}
	if end == len(s) || last == i {
		return end
	}
	return last
}

// run returns the end of the run of chars in class starting at i (at
// least one), at most max chars when max > 0.
func (f *regexFamily) run(s string, i int, class func(rune) bool, max int) int {
	n := 0
	for i < len(s) {
		c, w := decodeAt(s, i)
		if !class(c) {
			break
		}
		i += w
		n++
		if n == max {
			break
		}
	}
	return i
}

// contraction matches 's 't 're 've 'm 'll 'd at j (just after the
// apostrophe) and returns the bytes matched after the apostrophe, or 0.
func (f *regexFamily) contraction(s string, j int) int {
	r, w := decodeAt(s, j)
	r = f.foldRune(r)
	switch r {
	case 's', 't', 'm', 'd':
		return w
	case 'r', 'v', 'l':
		if j+w >= len(s) {
			return 0
		}
		r2, w2 := decodeAt(s, j+w)
		want := 'e'
		if r == 'l' {
			want = 'l'
		}
		if f.foldRune(r2) == want {
			return w + w2
		}
	}
	return 0
}

func (f *regexFamily) foldRune(r rune) rune {
	if !f.fold {
		return r
	}
	if r >= 'A' && r <= 'Z' {
		return r + 'a' - 'A'
	}
	if r == 0x17F { // LATIN SMALL LETTER LONG S folds to s
		return 's'
	}
	return r
}
