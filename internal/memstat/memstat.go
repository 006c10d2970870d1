// Package memstat reads the process's resident memory, for tests and
// benchmarks that prove C memory (libtorch tensors, invisible to Go's GC)
// stays flat.
package memstat

import (
	"bufio"
	"os"
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
