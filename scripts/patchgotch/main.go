// Command patchgotch makes a copy of gotch's libtch compile against the
// installed libtorch headers.
//
// gotch v0.9.1 wraps every ATen op of libtorch 2.1; an older libtorch (such
// as Debian's 1.13) lacks some of them. patchgotch runs `g++ -fsyntax-only`
// on libtch/torch_api.cpp, finds the generated wrappers the compiler rejects
// and replaces each body with one that sets gotch's last error to
// "<name> is not available in libtorch <version>", so calling it returns a Go
// error instead of failing the build. It repeats until the file compiles.
//
// Usage: patchgotch -dir GOTCH_COPY/libtch -version 1.13.1 [-cxxflags "..."]
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

const generated = "torch_api_generated.cpp.h"

var (
	errLine  = regexp.MustCompile(regexp.QuoteMeta(generated) + `:(\d+):`)
	funcHead = regexp.MustCompile(`^([a-z][A-Za-z0-9_ ]*?[ *])(atg_[A-Za-z0-9_]+)\(.*\) \{$`)
)

func main() {
	dir := flag.String("dir", "", "the libtch folder of a writable gotch copy")
	version := flag.String("version", "", "libtorch version, used in the error message")
	cxxflags := flag.String("cxxflags", "", "extra g++ flags (include paths)")
	maxRounds := flag.Int("rounds", 6, "give up after this many compile rounds")
	flag.Parse()
	if *dir == "" || *version == "" {
		fmt.Fprintln(os.Stderr, "patchgotch: -dir and -version are required")
		os.Exit(2)
	}
	total := 0
	for round := 1; round <= *maxRounds; round++ {
		lines, out, err := rejectedLines(*dir, strings.Fields(*cxxflags))
		if err == nil {
			fmt.Printf("patchgotch: libtch compiles against libtorch %s (%d wrappers stubbed)\n", *version, total)
			return
		}
		if len(lines) == 0 {
			fmt.Fprintf(os.Stderr, "patchgotch: g++ failed outside the generated wrappers:\n%s\n", tail(out, 4000))
			os.Exit(1)
		}
		n, err := stub(filepath.Join(*dir, generated), lines, *version)
		if err != nil {
			fmt.Fprintln(os.Stderr, "patchgotch:", err)
			os.Exit(1)
		}
		if n == 0 {
			fmt.Fprintf(os.Stderr, "patchgotch: errors remain but no wrapper could be stubbed:\n%s\n", tail(out, 4000))
			os.Exit(1)
		}
		total += n
		fmt.Printf("patchgotch: round %d: stubbed %d wrappers\n", round, n)
	}
	fmt.Fprintln(os.Stderr, "patchgotch: still not compiling after", *maxRounds, "rounds")
	os.Exit(1)
}

// rejectedLines compiles torch_api.cpp for syntax only and returns the lines
// of the generated file that the compiler's diagnostics point at.
func rejectedLines(dir string, extra []string) (map[int]bool, []byte, error) {
	args := append([]string{"-std=c++17", "-fsyntax-only", "-fmax-errors=0", "-I."}, extra...)
	args = append(args, "torch_api.cpp")
	cmd := exec.Command("g++", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	lines := map[int]bool{}
	for _, m := range errLine.FindAllSubmatch(out, -1) {
		n, _ := strconv.Atoi(string(m[1]))
		lines[n] = true
	}
	return lines, out, err
}

// stub rewrites every wrapper function that contains one of lines.
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
			out = append(out, text[i:end+1]...)
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
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(out, "\n")+"\n"), 0o644); err != nil {
		return 0, err
	}
	return stubbed, os.Rename(tmp, path)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
