package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// perfStat counts a process's instructions and cycles with `perf stat`
// over one measured run. Unlike CPU time, an instruction count does not move
// with the speed of a shared core, so it compares two proxies' work per
// request even when req/s drifts 2× between rounds.
type perfStat struct {
	cmd *exec.Cmd
	out string
}

// perfCounts are the counts perf reported; zero where the CPU (often a
// virtual one) does not expose the counter.
type perfCounts struct {
	Instructions float64
	Cycles       float64
}

// startPerf attaches perf stat to pids (user and kernel work of all their
// threads). It returns nil if perf cannot start.
func (b *bench) startPerf(pids []int) *perfStat {
	perf, ok := lookTool("perf")
	if !ok || len(pids) == 0 {
		return nil
	}
	var list []string
	for _, p := range pids {
		list = append(list, strconv.Itoa(p))
	}
	out := filepath.Join(b.tmp, "perf.out")
	os.Remove(out)
	cmd := exec.Command(perf, "stat", "-x", ",", "-e", "instructions,cycles", "-o", out, "-p", strings.Join(list, ","))
	if err := cmd.Start(); err != nil {
		return nil
	}
	return &perfStat{cmd: cmd, out: out}
}

// stop ends the count (perf prints its totals on SIGINT) and parses them.
func (p *perfStat) stop() (perfCounts, error) {
	var c perfCounts
	if p == nil {
		return c, fmt.Errorf("perf not running")
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	p.cmd.Wait()
	data, err := os.ReadFile(p.out)
	if err != nil {
		return c, err
	}
	// CSV lines: value,unit,event,run time,percentage,...
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil { // "<not supported>", "<not counted>"
			continue
		}
		switch {
		case strings.HasPrefix(f[2], "instructions"):
			c.Instructions = v
		case strings.HasPrefix(f[2], "cycles"):
			c.Cycles = v
		}
	}
	return c, nil
}
