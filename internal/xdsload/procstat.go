package xdsload

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcSample is a process's memory and CPU at one moment, from /proc.
type ProcSample struct {
	RSSBytes int64   // VmRSS
	HWMBytes int64   // VmHWM: peak resident set so far
	CPUSec   float64 // utime + stime
}

// userHZ is the kernel's USER_HZ, the unit of /proc/PID/stat times: 100 on
// every Linux architecture Go supports.
const userHZ = 100

// SampleProc reads pid's VmRSS, VmHWM and CPU time.
func SampleProc(pid int) (ProcSample, error) {
	var s ProcSample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("reading skiffd's memory: %w (is pid %d running?)", err, pid)
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v) // "123456 kB"
		if len(f) != 2 || f[1] != "kB" {
			return s, fmt.Errorf("/proc/%d/status: unexpected %s line %q", pid, k, line)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return s, fmt.Errorf("/proc/%d/status: %s: %w", pid, k, err)
		}
		if k == "VmRSS" {
			s.RSSBytes = n << 10
		} else {
			s.HWMBytes = n << 10
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("reading skiffd's CPU time: %w", err)
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// are counted after its closing parenthesis; utime and stime are the
	// 14th and 15th fields of the line.
	rest := string(stat)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields after the command name, want at least 13", pid, len(f))
	}
	var ticks int64
	for _, x := range f[11:13] {
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return s, fmt.Errorf("/proc/%d/stat: cpu time %q: %w", pid, x, err)
		}
		ticks += n
	}
	s.CPUSec = float64(ticks) / userHZ
	return s, nil
}
