package serve

import (
	"strings"
	"unicode/utf8"
)

// stopMatcher finds OpenAI's stop strings in text that arrives in pieces
// (the detokenised tokens, one at a time). A stop string may span several
// tokens, so the matcher holds back the end of the text that could still
// become one: what it releases never contains the start of a stop string.
//
// Not safe for concurrent use (one per choice).
type stopMatcher struct {
	stops []string
	held  string
}

// push adds a piece of text and returns what can be released. stopped
// reports that a stop string was found: out is then the text before it,
// and the rest (the stop string included) is dropped.
func (m *stopMatcher) push(piece string) (out string, stopped bool) {
	buf := m.held + piece
	m.held = ""
	if len(m.stops) == 0 {
		return buf, false
	}
	first := -1
	for _, s := range m.stops {
		if i := strings.Index(buf, s); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	if first >= 0 {
		return buf[:first], true
	}
	// Hold back the longest end of buf that is a proper prefix of a stop
	// string; everything before it can no longer start one.
	keep := 0
	for _, s := range m.stops {
		for k := min(len(s)-1, len(buf)); k > keep; k-- {
			if strings.HasPrefix(s, buf[len(buf)-k:]) {
				keep = k
				break
			}
		}
	}
	cut := len(buf) - keep
	// Never split a UTF-8 character (a stop string's prefix may end
	// inside one only if buf does too).
	for cut > 0 && cut < len(buf) && !utf8.RuneStart(buf[cut]) {
		cut--
	}
	m.held = buf[cut:]
	return buf[:cut], false
}

// flush releases what is held back at the end of the text.
func (m *stopMatcher) flush() string {
	out := m.held
	m.held = ""
	return out
}

// cutAtStop is the text up to the first stop string (what a request
// with those stop strings answers for a full generation text), and
// whether one was found.
func cutAtStop(text string, stops []string) (string, bool) {
	first := -1
	for _, s := range stops {
		if i := strings.Index(text, s); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	if first < 0 {
		return text, false
	}
	return text[:first], true
}
