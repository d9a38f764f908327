package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/straitproxy/strait/config"
)

// TestReadmeQuickStart follows the README's quick start in a fresh clone
// of what is committed: `go run ./cmd/strait`, then `curl localhost:8080`
// answered by demo origins a and b in turn, then a clean stop.
func TestReadmeQuickStart(t *testing.T) {
	git := needTool(t, "git")
	needTool(t, "curl")
	goBin, err := exec.LookPath("go")
	if err != nil {
		skipOrFail(t, "the go command is not in PATH")
	}
	// The embedded default config uses fixed ports.
	for _, addr := range []string{"127.0.0.1:8080", "127.0.0.1:9081", "127.0.0.1:9082"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			skipOrFail(t, "%s is busy on this machine (%v): the README's default config needs it", addr, err)
		}
		ln.Close()
	}

	clone := filepath.Join(t.TempDir(), "strait")
	if out, err := exec.Command(git, "clone", "-q", "--no-hardlinks", moduleRoot, clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}

	readme, err := os.ReadFile(filepath.Join(clone, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"go run ./cmd/strait", "curl localhost:8080", "./scripts/test"} {
		if !bytes.Contains(readme, []byte(cmd)) {
			t.Errorf("README.md no longer shows %q: this test follows it", cmd)
		}
	}
	t.Run("TestScript", func(t *testing.T) {
		fi, err := os.Stat(filepath.Join(clone, "scripts", "test"))
		if err != nil {
			t.Fatalf("scripts/test is not committed: %v", err)
		}
		if fi.Mode()&0o111 == 0 {
			t.Errorf("scripts/test is not executable (mode %v)", fi.Mode())
		}
		ci, err := os.ReadFile(filepath.Join(clone, ".ci", "run"))
		if err != nil {
			t.Fatalf(".ci/run is not committed: %v", err)
		}
		calls := false
		for _, line := range strings.Split(string(ci), "\n") {
			line = strings.TrimSpace(line)
			if !strings.HasPrefix(line, "#") && strings.Contains(line, "scripts/test") {
				calls = true
			}
		}
		if !calls {
			t.Errorf(".ci/run does not call scripts/test:\n%s", ci)
		}
	})

	// `go run` dies of SIGTERM (it only relays SIGINT and SIGQUIT), so
	// strait's exit status is not go run's. To see it, this process makes
	// itself a subreaper: when go run is gone, strait becomes its child.
	if err := setSubreaper(true); err != nil {
		t.Fatalf("prctl(PR_SET_CHILD_SUBREAPER): %v", err)
	}
	defer setSubreaper(false)

	cmd := exec.Command(goBin, "run", "./cmd/strait")
	cmd.Dir = clone
	p := startProc(t, cmd)
	waitPort(t, "127.0.0.1:8080", 3*time.Minute, p.exited)

	var got []string
	for range 4 {
		r := mustCurl(t, "localhost:8080")
		got = append(got, string(r.Stdout))
	}
	if want := []string{"a\n", "b\n", "a\n", "b\n"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("bodies %q, want %q", got, want)
	}
	metrics := string(mustCurl(t, "localhost:9901/metrics").Stdout)
	if v := metricValue(metrics, "strait_http_requests_total", `cluster="demo"`, `code="2xx"`); v != 4 {
		t.Errorf("the README's metrics: strait_http_requests_total 2xx = %v, want 4", v)
	}

	gorun := p.cmd.Process.Pid
	pid, err := groupMember(gorun, "strait")
	if err != nil {
		t.Fatalf("finding the strait process under go run: %v", err)
	}
	// Stop go run first, so that it cannot reap strait when strait exits
	// (under load strait may well exit before go run dies of the signal).
	syscall.Kill(gorun, syscall.SIGSTOP)
	if err := waitState(gorun, "T", 5*time.Second); err != nil {
		t.Fatalf("stopping go run: %v", err)
	}
	p.signal(syscall.SIGTERM) // the whole group, as a service manager would
	start := time.Now()
	zerr := waitState(pid, "Z", 10*time.Second)
	syscall.Kill(gorun, syscall.SIGKILL) // it would die of the SIGTERM; now strait is ours
	if zerr != nil {
		t.Fatalf("strait (pid %d) after SIGTERM: %v\nstderr:\n%s", pid, zerr, tail(p.stderr.String(), 20))
	}
	elapsed := time.Since(start)
	status, err := waitOrphan(pid, 10*time.Second)
	if err != nil {
		t.Fatalf("strait (pid %d): %v", pid, err)
	}
	if !status.Exited() || status.ExitStatus() != 0 {
		t.Errorf("strait ended with %s after SIGTERM, want exit status 0", waitString(status))
	}
	if !p.wait(10 * time.Second) {
		t.Errorf("go run did not end")
	}
	stderr := p.stderr.String()
	if !strings.Contains(stderr, "strait: stopped") {
		t.Errorf("strait did not report a clean stop:\n%s", tail(stderr, 20))
	}
	t.Logf("strait exited with %s within %v of SIGTERM", waitString(status), elapsed.Round(time.Microsecond))
}

const prSetChildSubreaper = 36

func setSubreaper(on bool) error {
	v := uintptr(0)
	if on {
		v = 1
	}
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, v, 0); errno != 0 {
		return errno
	}
	return nil
}

// groupMember returns the pid of the process named comm in process group
// pgid.
func groupMember(pgid int, comm string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		s := string(stat)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		fields := strings.Fields(s[close+1:])
		if len(fields) < 3 || s[open+1:close] != comm {
			continue
		}
		if g, _ := strconv.Atoi(fields[2]); g == pgid {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no process %q in group %d", comm, pgid)
}

// procState returns the state letter of pid from /proc (R, S, T, Z...),
// or "" if there is no such process.
func procState(pid int) string {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// waitState polls until pid is in state (e.g. "T" stopped, "Z" exited and
// not yet reaped).
func waitState(pid int, state string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st := procState(pid)
		if st == state {
			return nil
		}
		if st == "" {
			return fmt.Errorf("process %d is gone (reaped by another)", pid)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d still in state %s after %v, want %s", pid, st, timeout, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitOrphan waits for pid, which becomes this process's child once its
// parent dies (see setSubreaper), and returns its wait status.
func waitOrphan(pid int, timeout time.Duration) (syscall.WaitStatus, error) {
	deadline := time.Now().Add(timeout)
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		switch {
		case err == nil && got == pid:
			return ws, nil
		case err != nil && !errors.Is(err, syscall.ECHILD) && !errors.Is(err, syscall.EINTR):
			return ws, err
		}
		// Not yet ours (ECHILD: go run still alive), or still running.
		if time.Now().After(deadline) {
			if syscall.Kill(pid, 0) == nil {
				syscall.Kill(pid, syscall.SIGKILL)
				return ws, fmt.Errorf("still running %v after SIGTERM (killed)", timeout)
			}
			return ws, fmt.Errorf("ended, but its exit status was not seen")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitString(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("signal %v", ws.Signal())
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}

// TestReadmeLibraryExample builds the README's library example as it
// stands, so that it cannot drift from the API, and runs it with its port
// taken: it must say so and exit, not panic.
func TestReadmeLibraryExample(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(moduleRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	code := goBlock(string(readme), "proxy.New(")
	if code == "" {
		t.Fatal("README.md has no ```go block calling proxy.New")
	}
	if !strings.HasPrefix(code, "package main\n") {
		t.Errorf("the example is not a whole program (it does not start with package main):\n%s", code)
	}
	if n := strings.Count(code, "\n"); n > 30 {
		t.Errorf("the example has %d lines; keep it short", n)
	}

	// An overlay puts the file inside the module, so that its imports
	// resolve to this tree, without writing into the tree.
	dir := t.TempDir()
	src := writeFile(t, dir, "main.go", []byte(code))
	overlay, err := json.Marshal(map[string]any{
		"Replace": map[string]string{filepath.Join(moduleRoot, "test", "e2e", "readmeexample", "main.go"): src},
	})
	if err != nil {
		t.Fatal(err)
	}
	overlayPath := writeFile(t, dir, "overlay.json", overlay)
	bin := filepath.Join(dir, "example")
	build := exec.Command("go", "build", "-overlay", overlayPath, "-o", bin, "./test/e2e/readmeexample")
	build.Dir = moduleRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s\nthe example:\n%s", err, out, code)
	}

	addr := regexp.MustCompile(`"(127\.0\.0\.1:\d+)"\)\n`).FindStringSubmatch(code)
	if addr == nil {
		t.Fatalf("cannot find the address the example listens on:\n%s", code)
	}
	if ln, err := net.Listen("tcp", addr[1]); err == nil { // else it is taken already
		defer ln.Close()
	}
	cmd := exec.Command(bin)
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("the example ran on although %s is taken", addr[1])
	}
	if err == nil || strings.Contains(stderr.String(), "panic") || !strings.Contains(stderr.String(), "address already in use") {
		t.Errorf("with %s taken the example ended with %v:\n%s\nwant a message saying the address is in use", addr[1], err, stderr.String())
	}
}

// goBlock returns the first ```go block of markdown that contains want.
func goBlock(markdown, want string) string {
	for _, part := range strings.Split(markdown, "```go\n")[1:] {
		block, _, ok := strings.Cut(part, "```")
		if ok && strings.Contains(block, want) {
			return block
		}
	}
	return ""
}

// TestReadmeDefaultPorts checks that the README names the ports of the
// embedded default config, and that when one of its demo origins' ports is
// taken, strait says which and that the default config wants it.
func TestReadmeDefaultPorts(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(moduleRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	quick, _, _ := strings.Cut(string(readme), "Run the whole test suite")
	def := config.Default()
	addrs := []string{def.Listeners[0].Address}
	for _, d := range def.DemoOrigins {
		addrs = append(addrs, d.Address)
	}
	for _, a := range addrs {
		if !strings.Contains(quick, a) {
			t.Errorf("the README's quick start does not name %s, which the default config uses", a)
		}
	}

	taken := def.DemoOrigins[0].Address
	if ln, err := net.Listen("tcp", taken); err == nil { // else it is taken already
		defer ln.Close()
	}
	_, stderr, code := runStrait(t)
	if code != 1 {
		t.Fatalf("strait with %s taken: exit %d, want 1\n%s", taken, code, stderr)
	}
	for _, want := range []string{taken, "default config", "demo origin " + def.DemoOrigins[0].Name, "run -c"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the message does not say %q:\n%s", want, stderr)
		}
	}
	t.Logf("%s", stderr)
}
