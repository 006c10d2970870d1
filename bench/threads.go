package main

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// threadCPU lists the CPU seconds (user + system) each OS thread of this
// process has used, largest first: with -thread-cpu a case shows who
// spent the CPU — the thread that ran the ops, libtorch's OpenMP workers,
// and the Go runtime's own threads (scheduler, GC workers, sysmon) — so
// that anything competing with libtorch's team inside the process shows
// up as CPU time, which a noisy host does not distort the way it distorts
// wall time.
func threadCPU() []float64 {
	tasks, _ := filepath.Glob("/proc/self/task/*/stat")
	hz := 100.0 // USER_HZ on Linux
	var out []float64
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseFloat(f[11], 64) // utime: field 14 of stat
		st, _ := strconv.ParseFloat(f[12], 64) // stime: field 15
		out = append(out, round1((ut+st)/hz*100)/100)
	}
	sort.Sort(sort.Reverse(sort.Float64Slice(out)))
	return out
}
