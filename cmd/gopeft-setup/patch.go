package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// gotch v0.9.1 wraps every ATen op of libtorch 2.1; an older libtorch (such
// as Debian's 1.13) lacks some of them. patchLibtch compiles libtch's
// torch_api.cpp with `g++ -fsyntax-only`, finds the generated wrappers the
// compiler rejects and gives each a body that sets gotch's last error to
// "<name> is not available in libtorch <version>", so calling it returns a
// Go error instead of failing the build. It repeats until the file
// compiles (a rejected wrapper can hide the next ones' errors).

const generated = "torch_api_generated.cpp.h"

// maxRounds bounds the compile-and-stub rounds.
const maxRounds = 6

var (
	errLine  = regexp.MustCompile(regexp.QuoteMeta(generated) + `:(\d+):`)
	funcHead = regexp.MustCompile(`^([a-z][A-Za-z0-9_ ]*?[ *])(atg_[A-Za-z0-9_]+)\(.*\) \{$`)
)

// patchLibtch makes dir (a writable copy of gotch's libtch) compile against
// the libtorch headers in cxxflags; it returns how many wrappers it stubbed.
func patchLibtch(dir, version string, cxxflags []string) (int, error) {
	total := 0
	for round := 1; round <= maxRounds; round++ {
		lines, out, err := rejectedLines(dir, cxxflags)
		if err == nil {
			return total, nil
		}
		if len(lines) == 0 {
			return total, fmt.Errorf("g++ failed on %s outside the generated wrappers:\n%s", filepath.Join(dir, "torch_api.cpp"), tail(out, 4000))
		}
		n, err := stub(filepath.Join(dir, generated), lines, version)
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, fmt.Errorf("g++ errors remain in %s but no wrapper could be stubbed:\n%s", generated, tail(out, 4000))
		}
		total += n
		say("round %d: stubbed %d wrappers", round, n)
	}
	return total, fmt.Errorf("libtch still does not compile after %d rounds of stubbing", maxRounds)
}

// rejectedLines compiles torch_api.cpp for syntax only and returns the lines
// of the generated file that the compiler's diagnostics point at.
func rejectedLines(dir string, extra []string) (map[int]bool, []byte, error) {
	args := append([]string{"-std=c++17", "-fsyntax-only", "-fmax-errors=0", "-I."}, extra...)
	args = append(args, "torch_api.cpp")
	cmd := exec.Command("g++", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil, out, nil
	}
	lines := map[int]bool{}
	for _, m := range errLine.FindAllSubmatch(out, -1) {
		n, _ := strconv.Atoi(string(m[1]))
		lines[n] = true
	}
	return lines, out, err
}

// stub rewrites every wrapper function of the file at path that contains
// one of lines (1-based) and reports how many it rewrote.
func stub(path string, lines map[int]bool, version string) (int, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var text []string
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		text = append(text, sc.Text())
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	var out []string
	stubbed := 0
	for i := 0; i < len(text); i++ {
		m := funcHead.FindStringSubmatch(text[i])
		if m == nil {
			out = append(out, text[i])
			continue
		}
		end := i + 1
		for end < len(text) && text[end] != "}" {
			end++
		}
		hit := false
		for l := i + 1; l <= end+1; l++ { // diagnostics use 1-based lines
			if lines[l] {
				hit = true
				break
			}
		}
		if !hit {
			out = append(out, text[i:min(end+1, len(text))]...)
			i = end
			continue
		}
		ret := strings.TrimSpace(m[1])
		out = append(out, text[i],
			fmt.Sprintf(`  torch_last_err = strdup("%s is not available in libtorch %s");`, m[2], version))
		if ret != "void" {
			out = append(out, "  return 0;")
		}
		out = append(out, "}")
		stubbed++
		i = end
	}
	return stubbed, writeAtomic(path, []byte(strings.Join(out, "\n")+"\n"))
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
