// Package fuzzseed gives the fuzz targets of the repository their seed
// corpora from the repository's golden fixtures (testdata/ at the module
// root), when they are present.
package fuzzseed

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// MaxSize is the largest fixture file used as a seed (bigger ones make
// every fuzz iteration slow).
const MaxSize = 4 << 20

// Dir is the shared fixtures folder, found from the working directory
// upward (the folder holding go.mod, then its testdata); "" when
// there is none.
func Dir() string {
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			fx := filepath.Join(d, "testdata")
			if st, err := os.Stat(fx); err == nil && st.IsDir() {
				return fx
			}
			return ""
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}

// Files returns the contents of the fixture files matching the glob
// patterns (relative to Dir), sorted by path, skipping files over MaxSize;
// none when the fixtures are absent.
func Files(patterns ...string) [][]byte {
	dir := Dir()
	if dir == "" {
		return nil
	}
	var paths []string
	for _, p := range patterns {
		m, _ := filepath.Glob(filepath.Join(dir, p))
		paths = append(paths, m...)
	}
	sort.Strings(paths)
	var out [][]byte
	for _, p := range paths {
		if st, err := os.Stat(p); err != nil || st.Size() > MaxSize || st.IsDir() {
			continue
		}
		if b, err := os.ReadFile(p); err == nil {
			out = append(out, b)
		}
	}
	return out
}

// Renderer is a config that renders itself to JSON (every method's
// adapter_config.json type).
type Renderer interface {
	MarshalJSON() ([]byte, error)
}

// ConfigRoundTrip is the body of the adapter_config.json fuzz targets:
// any bytes decode without a panic, and a config that decodes (and so
// validates) renders to JSON that decodes to the same rendering.
func ConfigRoundTrip[C Renderer](t *testing.T, data []byte, decode func([]byte) (C, error)) {
	RoundTrip(t, data, decode, C.MarshalJSON)
}

// RoundTrip is the body of the parsers' fuzz targets: any bytes decode
// without a panic (an error is fine), and a value that decodes renders to
// bytes that decode to the same rendering.
func RoundTrip[C any](t *testing.T, data []byte, decode func([]byte) (C, error), render func(C) ([]byte, error)) {
	c, err := decode(data)
	if err != nil {
		return
	}
	out, err := render(c)
	if err != nil {
		t.Fatalf("render of a value that decoded: %v", err)
	}
	c2, err := decode(out)
	if err != nil {
		t.Fatalf("re-decode of the rendering: %v\n%s", err, out)
	}
	out2, err := render(c2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, out2) {
		t.Fatalf("rendering changed on a round trip:\n%s\n%s", out, out2)
	}
}

// AddModelConfigs seeds a config.json fuzz target with every fixture
// model's config.json and two inline ones (tiny sizes, a negative size).
func AddModelConfigs(f *testing.F) {
	for _, b := range Files("hf/*/config.json") {
		f.Add(b)
	}
	f.Add([]byte(`{"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 10, "n_embd": 8, "n_layer": 1, "n_head": 2}`))
	f.Add([]byte(`{"hidden_size": -1}`))
}

// AddAdapterConfigs seeds a config fuzz target with every fixture
// adapter_config.json and two inline configs (a broken regex, a prompt
// learning geometry).
func AddAdapterConfigs(f *testing.F) {
	for _, b := range Files("hf/adapters/*/*/adapter_config.json") {
		f.Add(b)
	}
	f.Add([]byte(`{"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"], "layers_pattern": "(", "layers_to_transform": 0}`))
	f.Add([]byte(`{"num_virtual_tokens": 4, "token_dim": 8, "num_attention_heads": 2, "num_layers": 2}`))
}
