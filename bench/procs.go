package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a process the harness started, pinned with taskset. taskset execs
// the program, so the PID is the program's own (nginx's master).
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string        // stdout and stderr (nginx: also its error log)
	done    chan struct{} // closed when the process has exited
	err     error         // Wait's result, once done is closed
}

// start runs args[0] with args[1:] pinned to cpu, with env added to the
// harness's environment, and output to a log file in the temporary dir.
func (b *bench) start(name string, cpu int, env []string, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(b.tmp, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	argv := b.pinned(cpu, append([]string{bin}, args...))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	b.mu.Lock()
	b.procs = append(b.procs, p)
	b.mu.Unlock()
	return p, nil
}

// pinned is the command line that runs argv on cpu, niced by -nice:
// taskset (and nice) exec the program, so its PID is theirs.
func (b *bench) pinned(cpu int, argv []string) []string {
	out := []string{"taskset", "-c", strconv.Itoa(cpu)}
	if b.cfg.nice != 0 {
		out = append([]string{"nice", "-n", strconv.Itoa(b.cfg.nice)}, out...)
	}
	return append(out, argv...)
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM (nginx: fast shutdown, master stops its worker) and
// waits; after 10 s it kills the process and its children by PID.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	pids := p.pids()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		<-p.done
	}
}

// logTail returns the last n lines of the process's output, indented.
func (p *proc) logTail(n int) string {
	lines := p.logLines()
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var sb strings.Builder
	for _, l := range lines {
		sb.WriteString("    | " + l + "\n")
	}
	return sb.String()
}

func (p *proc) logLines() []string {
	data, _ := os.ReadFile(p.logPath)
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// pids is the process and its descendants (nginx: master and worker).
func (p *proc) pids() []int {
	if p == nil || p.exited() {
		return nil
	}
	return tree(p.pid())
}

// tree returns pid and all its descendants, found by scanning /proc for
// parent PIDs (portable across kernels, unlike /proc/PID/task/*/children).
func tree(pid int) []int {
	parent := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(child); len(f) > 1 {
			ppid, _ := strconv.Atoi(f[1])
			parent[ppid] = append(parent[ppid], child)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, parent[out[i]]...)
	}
	return out
}

// statFields returns /proc/PID/stat's fields after the command name: [0]
// is the state (field 3 in proc(5)), [1] the parent PID, [11] utime, [12]
// stime. The name is skipped by its closing parenthesis, since it may hold
// spaces.
func statFields(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(data[i+1:]))
}

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// cpuSeconds is the user+system CPU time of pids.
func cpuSeconds(pids []int) float64 {
	var ticks int64
	for _, pid := range pids {
		if f := statFields(pid); len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + s
		}
	}
	return float64(ticks) / clockTicks
}

// rssKiB is the summed VmRSS of pids, in KiB.
func rssKiB(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				total += kb
			}
		}
		f.Close()
	}
	return total
}

// nofileLimit is the soft "Max open files" of pid, from /proc/PID/limits.
func nofileLimit(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "Max open files") {
			if f := strings.Fields(l); len(f) >= 4 {
				return f[3]
			}
		}
	}
	return "?"
}

// cpuBusy returns the busy and total time of one CPU from /proc/stat, in
// ticks. Busy excludes idle, iowait and steal (time the hypervisor gave
// to someone else).
func cpuBusy(cpu int) (busy, total int64) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	prefix := fmt.Sprintf("cpu%d ", cpu)
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		for i, f := range strings.Fields(l)[1:] {
			v, _ := strconv.ParseInt(f, 10, 64)
			if i >= 8 { // guest and guest_nice are already counted in user and nice
				break
			}
			total += v
			if i != 3 && i != 4 && i != 7 { // idle, iowait, steal
				busy += v
			}
		}
	}
	return busy, total
}

// establishedOn counts established TCP sockets whose local port is port,
// from /proc/net/tcp{,6}: for the origin's port, the connections open to
// the origin (what a pooling proxy keeps).
func establishedOn(port int) int {
	n := 0
	want := fmt.Sprintf(":%04X", port)
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(l)
			if len(f) > 3 && strings.HasSuffix(f[1], want) && f[3] == "01" {
				n++
			}
		}
	}
	return n
}

// otherCPUSeconds is the CPU time used so far by every process on the
// machine except those in ours: user and system time of the living, plus
// the time of their reaped children (cutime, cstime). The difference of two
// calls is the CPU time other work took in between, including processes
// that started and ended in between (their time lands in their parent's
// child times). On a shared machine that is the noise in a run.
func otherCPUSeconds(ours map[int]bool) float64 {
	var ticks int64
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || ours[pid] {
			continue
		}
		f := statFields(pid)
		if len(f) <= 14 {
			continue
		}
		for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
			v, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += v
		}
	}
	return float64(ticks) / clockTicks
}

// ourPIDs is the harness and every process it started, with descendants.
func (b *bench) ourPIDs() map[int]bool {
	ours := map[int]bool{os.Getpid(): true}
	b.mu.Lock()
	procs := append([]*proc(nil), b.procs...)
	b.mu.Unlock()
	for _, p := range procs {
		for _, pid := range p.pids() {
			ours[pid] = true
		}
	}
	return ours
}
