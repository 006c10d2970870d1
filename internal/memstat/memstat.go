// Package memstat reads the process's resident memory, for tests and
// benchmarks that prove C memory (libtorch tensors, invisible to Go's GC)
// stays flat.
package memstat

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// RSS returns the current resident set size in bytes (0 when unknown).
func RSS() int64 { return field("VmRSS:") }

// PeakRSS returns the peak resident set size in bytes (0 when unknown).
func PeakRSS() int64 { return field("VmHWM:") }

func field(name string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name) {
			fs := strings.Fields(line[len(name):])
			if len(fs) == 0 {
				return 0
			}
			kb, _ := strconv.ParseInt(fs[0], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// ResetPeak resets VmHWM (Linux ≥ 4.0) so PeakRSS measures from now on.
func ResetPeak() error {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// Growth runs fn warmup times, then n times, and returns the RSS before and
// after the n runs (after a Go GC each time) and the relative growth: the
// check of the tests that prove a loop's C memory stays flat.
func Growth(warmup, n int, fn func()) (before, after int64, growth float64) {
	for i := 0; i < warmup; i++ {
		fn()
	}
	runtime.GC()
	before = RSS()
	for i := 0; i < n; i++ {
		fn()
	}
	runtime.GC()
	after = RSS()
	return before, after, float64(after-before) / float64(before)
}

// RSSAnon is the resident anonymous memory in bytes (the heap libtorch's
// tensors live in), 0 when unknown.
func RSSAnon() int64 { return field("RssAnon:") }

// RSSFile is the resident file-backed memory in bytes (mapped files:
// checkpoints, code), 0 when unknown.
func RSSFile() int64 { return field("RssFile:") }
