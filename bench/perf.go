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
	// IPCMin and IPCMax are the lowest and highest instructions per cycle
	// over the run's whole intervals (perfInterval): the core's speed
	// changes within seconds, and a run that met both speeds shows both.
	IPCMin, IPCMax float64
}

// perfInterval is how often perf reports counts during a run.
const perfInterval = 250 // ms

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
	cmd := exec.Command(perf, "stat", "-x", ",", "-I", strconv.Itoa(perfInterval), "-e", "instructions,cycles", "-o", out, "-p", strings.Join(list, ","))
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
	return parsePerf(string(data)), nil
}

// parsePerf reads perf stat's interval CSV: time,value,unit,event,...
// per counter per interval. The totals are the sums; IPCMin and IPCMax
// leave out intervals with under half the median cycles (the last, cut
// short, and any the proxy spent waiting).
func parsePerf(data string) perfCounts {
	var c perfCounts
	type interval struct{ instr, cycles float64 }
	var ivs []interval
	var last string
	for _, line := range strings.Split(data, "\n") {
		f := strings.Split(strings.TrimSpace(line), ",")
		if len(f) < 4 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil { // "<not supported>", "<not counted>"
			continue
		}
		if f[0] != last {
			last = f[0]
			ivs = append(ivs, interval{})
		}
		iv := &ivs[len(ivs)-1]
		switch {
		case strings.HasPrefix(f[3], "instructions"):
			iv.instr = v
			c.Instructions += v
		case strings.HasPrefix(f[3], "cycles"):
			iv.cycles = v
			c.Cycles += v
		}
	}
	var cyc []float64
	for _, iv := range ivs {
		cyc = append(cyc, iv.cycles)
	}
	floor := median(cyc) / 2
	for _, iv := range ivs {
		if iv.cycles == 0 || iv.instr == 0 || iv.cycles < floor {
			continue
		}
		ipc := iv.instr / iv.cycles
		if c.IPCMin == 0 || ipc < c.IPCMin {
			c.IPCMin = ipc
		}
		c.IPCMax = max(c.IPCMax, ipc)
	}
	return c
}
