// Package fuzzseed gives the fuzz targets of the repository their seed
// corpora from the shared fixtures (../shared/fixtures beside the
// repository), when they are present.
package fuzzseed

import (
	"os"
	"path/filepath"
	"sort"
)

// MaxSize is the largest fixture file used as a seed (bigger ones make
// every fuzz iteration slow).
const MaxSize = 4 << 20

// Dir is the shared fixtures folder, found from the working directory
// upward (the folder holding go.mod, then ../shared/fixtures); "" when
// there is none.
func Dir() string {
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			fx := filepath.Join(d, "..", "shared", "fixtures")
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
