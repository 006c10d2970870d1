package serve

import (
	"strings"
	"testing"
)

// Text split into pieces anywhere gives, through the matcher, exactly the
// text before the first stop string (cutAtStop on the whole text), and
// never releases part of a stop string.
func TestStopMatcherSpansPieces(t *testing.T) {
	cases := []struct {
		text  string
		stops []string
	}{
		{"Hello world. Bye", []string{"world"}},
		{"abcabcabd", []string{"abd"}},
		{"aaaab", []string{"aab"}},
		{"no stop here", []string{"xyz", "zz"}},
		{"one\n\ntwo", []string{"\n\n", "two"}},
		{"héllo wörld", []string{"ö"}},
		{"ends with a prefix ab", []string{"abc"}},
		{"stop at the very start", []string{"stop"}},
		{"earliest wins: B then A", []string{"A", "B"}},
	}
	for _, c := range cases {
		want, wantStop := cutAtStop(c.text, c.stops)
		// every way of cutting into pieces of 1..4 bytes
		for size := 1; size <= 4; size++ {
			m := &stopMatcher{stops: c.stops}
			var got strings.Builder
			stopped := false
			for i := 0; i < len(c.text) && !stopped; i += size {
				out, s := m.push(c.text[i:min(i+size, len(c.text))])
				for _, st := range c.stops {
					if strings.Contains(got.String()+out, st) {
						t.Fatalf("%q pieces of %d: released %q containing stop %q", c.text, size, got.String()+out, st)
					}
				}
				got.WriteString(out)
				stopped = s
			}
			if !stopped {
				got.WriteString(m.flush())
			}
			if got.String() != want || stopped != wantStop {
				t.Fatalf("%q stops %q pieces of %d: got %q (stopped %v), want %q (%v)", c.text, c.stops, size, got.String(), stopped, want, wantStop)
			}
		}
	}
}

// Text that may still become a stop string is held back, and released
// once it cannot.
func TestStopMatcherHoldsBack(t *testing.T) {
	m := &stopMatcher{stops: []string{"END"}}
	if out, _ := m.push("the E"); out != "the " {
		t.Fatalf("released %q, want %q (\"E\" may start END)", out, "the ")
	}
	if out, _ := m.push("N"); out != "" {
		t.Fatalf("released %q while \"EN\" may start END", out)
	}
	if out, stop := m.push("d"); out != "ENd" || stop {
		t.Fatalf("got %q %v, want \"ENd\" released", out, stop)
	}
	if out, stop := m.push(" E"); out != " " || stop {
		t.Fatalf("got %q %v", out, stop)
	}
	if out, stop := m.push("ND!"); out != "" || !stop {
		t.Fatalf("got %q %v, want a stop", out, stop)
	}
}
