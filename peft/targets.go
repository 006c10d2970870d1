package peft

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Targets is a module selector as PEFT's configs write it in
// target_modules / exclude_modules (and IA3's feedforward_modules): a list
// of names, a regex string, or unset (JSON null). A Targets value is
// immutable in use and safe for concurrent use.
//
// A list entry matches a module path that equals it or ends with "." plus
// the entry (PEFT's `key == t or key.endswith("." + t)`); as an extension,
// a "*" component of an entry matches any one path component
// ("layer.*.output.dense"). A regex must match the whole path
// (re.fullmatch). The special string "all-linear" selects every Linear and
// Conv1D layer except the output layer (expanded by InjectAdapter).
type Targets struct {
	List  []string
	Regex string
}

// TargetList makes list targets (with no names, an empty list: set, and
// matching nothing).
func TargetList(names ...string) Targets {
	if names == nil {
		names = []string{}
	}
	return Targets{List: names}
}

// TargetRegex makes regex targets (matched against the whole module path).
func TargetRegex(pattern string) Targets { return Targets{Regex: pattern} }

// AllLinear is PEFT's target_modules="all-linear".
const AllLinear = "all-linear"

// IsSet reports whether t selects anything (a list, even empty, or a regex).
func (t Targets) IsSet() bool { return t.List != nil || t.Regex != "" }

// MarshalJSON writes the regex as a string, the list as an array, unset as null.
func (t Targets) MarshalJSON() ([]byte, error) {
	switch {
	case t.Regex != "":
		return json.Marshal(t.Regex)
	case t.List != nil:
		return json.Marshal(t.List)
	}
	return []byte("null"), nil
}

// UnmarshalJSON reads a string (regex), an array of strings, or null.
func (t *Targets) UnmarshalJSON(b []byte) error {
	*t = Targets{}
	switch {
	case string(b) == "null":
		return nil
	case len(b) > 0 && b[0] == '"':
		return json.Unmarshal(b, &t.Regex)
	}
	return json.Unmarshal(b, &t.List)
}

// String renders t for messages: a quoted regex or a quoted list.
func (t Targets) String() string {
	if t.Regex != "" {
		return strconv.Quote(t.Regex)
	}
	return fmt.Sprintf("%q", t.List)
}

// Validate reports a regex that does not compile.
func (t Targets) Validate() error {
	if t.Regex != "" && t.Regex != AllLinear {
		if _, err := regexp.Compile(t.Regex); err != nil {
			return fmt.Errorf("regex %q: %w", t.Regex, err)
		}
	}
	return nil
}

// Matches reports whether the module at path is selected (see Targets).
func (t Targets) Matches(path string) bool {
	if t.Regex != "" {
		re, err := regexp.Compile(`^(?:` + t.Regex + `)$`)
		return err == nil && re.MatchString(path)
	}
	for _, n := range t.List {
		if matchEntry(path, n) {
			return true
		}
	}
	return false
}

// matchEntry is PEFT's list matching of a module path against one entry,
// with "*" components matching any one path component.
func matchEntry(path, entry string) bool {
	if !strings.Contains(entry, "*") {
		return path == entry || strings.HasSuffix(path, "."+entry)
	}
	p, e := strings.Split(path, "."), strings.Split(entry, ".")
	if len(e) > len(p) {
		return false
	}
	p = p[len(p)-len(e):]
	for i := range e {
		if e[i] != "*" && e[i] != p[i] {
			return false
		}
	}
	return true
}

// anyLayer is PEFT's default layer-index regex.
var anyLayer = regexp.MustCompile(`^.*?\.[^.]*\.(\d+)\.`)

// LayerPatternRegexp is PEFT's layer-index regex for one layers_pattern
// entry (rf".*\.{layer_pattern}\.(\d+)\.", the pattern unescaped).
func LayerPatternRegexp(p string) (*regexp.Regexp, error) {
	return regexp.Compile(`^.*?\.` + p + `\.(\d+)\.`)
}

// LayerIndex extracts the layer number from a module path as PEFT does
// (model.layers.3.self_attn.q_proj → 3), trying each of patterns
// (layers_pattern) or, with none, any "<name>.<number>." after the first
// component.
func LayerIndex(path string, patterns []string) (int, bool) {
	var res []*regexp.Regexp
	if len(patterns) == 0 {
		res = append(res, anyLayer)
	}
	for _, p := range patterns {
		re, err := LayerPatternRegexp(p)
		if err != nil {
			return 0, false
		}
		res = append(res, re)
	}
	for _, re := range res {
		if m := re.FindStringSubmatch(path); m != nil {
			n, err := strconv.Atoi(m[1])
			return n, err == nil
		}
	}
	return 0, false
}
