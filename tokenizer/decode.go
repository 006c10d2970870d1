package tokenizer

import (
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// A decoder turns tokens back into text, one step of HF's decode_chain.
type decoder interface {
	decodeChain(tokens []string) []string
}

type byteLevelDec struct {
	// dropBOM drops a leading U+FEFF from the text, as JavaScript's
	// TextDecoder (and so the gpt-3-encoder package) does.
	dropBOM bool
}

// decodeChain maps every char back to its byte (a token with a char
// outside the byte-level alphabet is taken as its UTF-8 bytes) and
// returns one string, invalid UTF-8 replaced as Rust's from_utf8_lossy
// does.
func (d byteLevelDec) decodeChain(tokens []string) []string {
	buf := make([]byte, 0, 64)
	for _, t := range tokens {
		n := len(buf)
		ok := true
		for _, r := range t {
			b, in := runeToByte[r]
			if !in {
				ok = false
				break
			}
			buf = append(buf, b)
		}
		if !ok {
			buf = append(buf[:n], t...)
		}
	}
	s := lossyUTF8(buf)
	if d.dropBOM {
		s = strings.TrimPrefix(s, "\uFEFF")
	}
	return []string{s}
}

type replaceDec struct {
	literal string
	re      *regexp.Regexp
	content string
}

func (d replaceDec) decodeChain(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		switch {
		case d.re != nil:
			out[i] = d.re.ReplaceAllLiteralString(t, d.content)
		case d.literal == "":
			out[i] = t
		default:
			out[i] = strings.ReplaceAll(t, d.literal, d.content)
		}
	}
	return out
}

type byteFallbackDec struct{}

// decodeChain turns runs of <0xXX> tokens into text; a run that is not
// valid UTF-8 becomes one U+FFFD per byte, as HF does.
func (byteFallbackDec) decodeChain(tokens []string) []string {
	out := make([]string, 0, len(tokens))
	var pending []byte
	flush := func() {
		if len(pending) == 0 {
			return
		}
		if utf8.Valid(pending) {
			out = append(out, string(pending))
		} else {
			for range pending {
				out = append(out, "\uFFFD")
			}
		}
		pending = pending[:0]
	}
	for _, t := range tokens {
		if b, ok := parseByteToken(t); ok {
			pending = append(pending, b)
			continue
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

// parseByteToken parses "<0xXX>".
func parseByteToken(t string) (byte, bool) {
	if len(t) != 6 || !strings.HasPrefix(t, "<0x") || t[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(t[3:5], 16, 8)
	if err != nil {
		return 0, false
	}
	return byte(v), true
}

type fuseDec struct{}

func (fuseDec) decodeChain(tokens []string) []string {
	return []string{strings.Join(tokens, "")}
}

type stripDec struct {
	content     rune
	start, stop int
}

func (d stripDec) decodeChain(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		rs := []rune(t)
		lo := 0
		for k := 0; k < d.start && k < len(rs) && rs[k] == d.content; k++ {
			lo = k + 1
		}
		hi := len(rs)
		for k := 0; k < d.stop; k++ {
			j := len(rs) - k - 1
			if j < lo || rs[j] != d.content {
				break
			}
			hi = j
		}
		out[i] = string(rs[lo:hi])
	}
	return out
}

type metaspaceDec struct {
	rep        rune
	prependAny bool // prepend_scheme is not "never"
}

func (d metaspaceDec) decodeChain(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		var b strings.Builder
		b.Grow(len(t))
		for _, r := range t {
			if r == d.rep {
				if i == 0 && d.prependAny {
					continue
				}
				b.WriteByte(' ')
			} else {
				b.WriteRune(r)
			}
		}
		out[i] = b.String()
	}
	return out
}

type wordPieceDec struct {
	prefix  string
	cleanup bool
}

func (d wordPieceDec) decodeChain(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		if i != 0 {
			if strings.HasPrefix(t, d.prefix) {
				t = strings.Replace(t, d.prefix, "", 1)
			} else {
				t = " " + t
			}
		}
		if d.cleanup {
			t = cleanupSpaces(t)
		}
		out[i] = t
	}
	return out
}

var cleanupReplacer = []string{" .", ".", " ?", "?", " !", "!", " ,", ",", " ' ", "'", " n't", "n't",
	" 'm", "'m", " do not", " don't", " 's", "'s", " 've", "'ve", " 're", "'re"}

// cleanupSpaces is HF's wordpiece cleanup: the replacements run one after
// another over the whole string, in this order.
func cleanupSpaces(s string) string {
	for i := 0; i < len(cleanupReplacer); i += 2 {
		s = strings.ReplaceAll(s, cleanupReplacer[i], cleanupReplacer[i+1])
	}
	return s
}

type bpeDec struct{ suffix string }

func (d bpeDec) decodeChain(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		rep := " "
		if i == len(tokens)-1 {
			rep = ""
		}
		if d.suffix == "" {
			out[i] = t
		} else {
			out[i] = strings.ReplaceAll(t, d.suffix, rep)
		}
	}
	return out
}

type ctcDec struct {
	pad, delimiter string
	cleanup        bool
}

func (d ctcDec) decodeChain(tokens []string) []string {
	out := make([]string, 0, len(tokens))
	for i, t := range tokens {
		if i > 0 && tokens[i-1] == t {
			continue
		}
		if d.pad != "" {
			t = strings.ReplaceAll(t, d.pad, "")
		}
		if d.cleanup {
			t = cleanupSpaces(t)
			if d.delimiter != "" {
				t = strings.ReplaceAll(t, d.delimiter, " ")
			}
		}
		if t != "" {
			out = append(out, t)
		}
	}
	return out
}

type seqDec []decoder

func (d seqDec) decodeChain(tokens []string) []string {
	for _, x := range d {
		tokens = x.decodeChain(tokens)
	}
	return tokens
}

// lossyUTF8 converts b to a string, replacing each maximal ill-formed
// subsequence with one U+FFFD (Rust's String::from_utf8_lossy, the
// WHATWG decoder). Go's own conversions use one U+FFFD per bad byte.
func lossyUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 8)
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			sb.WriteByte(c)
			i++
			continue
		}
		if r, w := utf8.DecodeRune(b[i:]); r != utf8.RuneError || w > 1 {
			sb.Write(b[i : i+w])
			i += w
			continue
		}
		// Invalid: skip the lead byte and the continuation bytes that
		// could still have completed it.
		need, lo, hi := 0, byte(0x80), byte(0xBF)
		switch {
		case c >= 0xC2 && c <= 0xDF:
			need = 1
		case c == 0xE0:
			need, lo = 2, 0xA0
		case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
			need = 2
		case c == 0xED:
			need, hi = 2, 0x9F
		case c == 0xF0:
			need, lo = 3, 0x90
		case c >= 0xF1 && c <= 0xF3:
			need = 3
		case c == 0xF4:
			need, hi = 3, 0x8F
		}
		j := i + 1
		for k := 0; k < need && j < len(b); k++ {
			if b[j] < lo || b[j] > hi {
				break
			}
			lo, hi = 0x80, 0xBF
			j++
		}
		sb.WriteString("\uFFFD")
		i = j
	}
	return sb.String()
}
