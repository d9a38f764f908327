//go:build linux

package upgrade

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests start the test binary itself as the new process; helperEnv
// makes TestHelperProcess act as one, in the mode it names.
const (
	helperEnv      = "STRAIT_UPGRADE_TEST_HELPER"
	helperPIDEnv   = "STRAIT_UPGRADE_TEST_PIDFILE"
	helperLifetime = 30 * time.Second // a helper the test failed to kill exits by itself
	helperTimeout  = 20 * time.Second // for Start, when the helper is meant to be ready
	ioTimeout      = 10 * time.Second
)

// Names of the handed-over files, not plain words, to check the encoding.
const (
	lnName     = "listener tcp 127.0.0.1 \"main\"\n"
	unusedName = "listener tcp 127.0.0.1 unused={}"
	secretName = "tls-ticket-keys"
)

// report is what a serving helper writes on each connection it accepts.
type report struct {
	PID    int    `json:"pid"`
	Parent bool   `json:"parent"`
	Env    string `json:"env"`    // STRAIT_UPGRADE after Inherit
	Unused string `json:"unused"` // the untaken file's descriptor after Ready: "closed", "open" or "none"
	Secret string `json:"secret"` // content of the file secretName
}

func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		return
	}
	time.AfterFunc(helperLifetime, func() { os.Exit(2) })
	if err := runHelper(mode); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runHelper(mode string) error {
	h, err := Inherit()
	if err != nil {
		return err
	}
	hang := func() error {
		if err := WritePIDFile(os.Getenv(helperPIDEnv), os.Getpid()); err != nil {
			return err
		}
		select {}
	}
	switch mode {
	case "exit3":
		os.Exit(3)
	case "hang":
		return hang()
	case "closepipe":
		h.ready.Close()
		return hang()
	case "serve":
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}

	ln, ok, err := h.Listener(lnName)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("no listener")
	}
	rep := report{PID: os.Getpid(), Parent: h.Parent(), Env: os.Getenv(envVar), Unused: "none"}
	if f := h.File(secretName); f != nil {
		b, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			return err
		}
		rep.Secret = string(b)
	}
	unusedFD := -1
	if f := h.files[unusedName]; f != nil {
		unusedFD = int(f.Fd())
	}
	if err := h.Ready(); err != nil {
		return err
	}
	if unusedFD >= 0 {
		rep.Unused = "open"
		if _, err := unix.FcntlInt(uintptr(unusedFD), unix.F_GETFD, 0); errors.Is(err, unix.EBADF) {
			rep.Unused = "closed"
		}
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		json.NewEncoder(c).Encode(rep)
		c.Close()
	}
}

// startHelper starts the test binary as a helper in mode through Start.
func startHelper(t *testing.T, ctx context.Context, mode string, o Options, env ...string) (*os.Process, error) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	o.Path = exe
	o.Args = []string{"-test.run=^TestHelperProcess$"}
	o.Env = append(append(os.Environ(), helperEnv+"="+mode), env...)
	o.Stderr = os.Stderr
	p, err := Start(ctx, o)
	if p != nil {
		t.Cleanup(func() { p.Kill() })
	}
	return p, err
}

// listen returns a loopback listener and a copy of its file, both closed
// at the end of the test.
func listen(t *testing.T) (*net.TCPListener, *os.File) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return ln, f
}

func readReport(t *testing.T, c net.Conn) report {
	t.Helper()
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	var r report
	if err := json.NewDecoder(c).Decode(&r); err != nil {
		t.Fatalf("reading the helper's report: %v", err)
	}
	return r
}

func dialReport(t *testing.T, addr string) report {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return readReport(t, c)
}

// TestStartHandsOverListener: the new process serves on the listener once
// this one has closed it, including a connection that was already waiting
// in the listen queue.
func TestStartHandsOverListener(t *testing.T) {
	ln, f := listen(t)
	addr := ln.Addr().String()
	// Nobody accepts yet: the connection waits in the listen queue.
	queued, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer queued.Close()

	p, err := startHelper(t, t.Context(), "serve", Options{
		Files:   map[string]*os.File{lnName: f},
		Timeout: helperTimeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	ln.Close()

	r := readReport(t, queued)
	if r.PID != p.Pid {
		t.Errorf("queued connection answered by pid %d, want the new process %d", r.PID, p.Pid)
	}
	r = dialReport(t, addr)
	if r.PID != p.Pid || !r.Parent || r.Env != "" {
		t.Errorf("new connection: got %+v, want pid %d, parent true, %s unset", r, p.Pid, envVar)
	}
}

// checkNonblocking checks that ln is still in non-blocking mode. The new
// process sets the mode again on a listener it takes (the mode belongs to
// the socket, shared by both processes), so check one it does not take.
func checkNonblocking(t *testing.T, ln *net.TCPListener) {
	t.Helper()
	if !nonblocking(t, ln) {
		t.Error("this process's listener was put in blocking mode: its Accept would block a thread")
	}
}

func nonblocking(t *testing.T, ln *net.TCPListener) bool {
	t.Helper()
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	var ferr error
	rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) })
	if ferr != nil {
		t.Fatal(ferr)
	}
	return flags&unix.O_NONBLOCK != 0
}

// TestReadyClosesUntakenFiles: a listener the new process does not take is
// closed by Ready, so once this process closes its copy it refuses
// connections; until then it works here as before.
func TestReadyClosesUntakenFiles(t *testing.T) {
	ln, f := listen(t)
	unused, uf := listen(t)
	p, err := startHelper(t, t.Context(), "serve", Options{
		Files:   map[string]*os.File{lnName: f, unusedName: uf},
		Timeout: helperTimeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := dialReport(t, ln.Addr().String())
	if r.PID != p.Pid || r.Unused != "closed" {
		t.Errorf("got %+v, want pid %d and the untaken descriptor closed", r, p.Pid)
	}
	checkNonblocking(t, unused)
	addr := unused.Addr().String()
	uf.Close()
	unused.Close()
	if c, err := net.DialTimeout("tcp", addr, ioTimeout); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Errorf("dialing the forgotten listener: %v, want connection refused", err)
	}
}

// TestMemFileHandedOver: the new process reads what MemFile holds.
func TestMemFileHandedOver(t *testing.T) {
	secret := bytes.Repeat([]byte("0123456789abcdef"), 1000)
	m, err := MemFile("keys", secret)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ln, f := listen(t)
	if _, err := startHelper(t, t.Context(), "serve", Options{
		Files:   map[string]*os.File{lnName: f, secretName: m},
		Timeout: helperTimeout,
	}); err != nil {
		t.Fatal(err)
	}
	if r := dialReport(t, ln.Addr().String()); r.Secret != string(secret) {
		t.Errorf("the new process read %d bytes, want the %d written", len(r.Secret), len(secret))
	}
}

// TestStartExitBeforeReady: Start says how a process that exits before it
// is ready ended, and this process can go on serving on its listener.
func TestStartExitBeforeReady(t *testing.T) {
	ln, f := listen(t)
	start := time.Now()
	p, err := startHelper(t, t.Context(), "exit3", Options{
		Files:   map[string]*os.File{lnName: f},
		Timeout: helperTimeout,
	})
	if err == nil || p != nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("Start = %v, %v; want an error saying exit status 3", p, err)
	}
	if d := time.Since(start); d > ioTimeout {
		t.Errorf("Start took %v", d)
	}
	checkNonblocking(t, ln)
}

// TestStartTimeout: a process never ready is killed after the timeout.
func TestStartTimeout(t *testing.T) {
	const timeout = 500 * time.Millisecond
	pidFile := filepath.Join(t.TempDir(), "pid")
	start := time.Now()
	p, err := startHelper(t, t.Context(), "hang", Options{Timeout: timeout}, helperPIDEnv+"="+pidFile)
	d := time.Since(start)
	if err == nil || p != nil || !strings.Contains(err.Error(), "not ready within") {
		t.Fatalf("Start = %v, %v; want a timeout", p, err)
	}
	if d < timeout || d > timeout+ioTimeout {
		t.Errorf("Start returned after %v, want about %v", d, timeout)
	}
	// The helper may not have got as far as writing its pid.
	if pid, err := readPID(pidFile); err == nil {
		checkGone(t, pid)
	}
}

// TestStartKillsDescendants: a new process that is a wrapper (a shell
// script starting the real thing) and never ready is killed with what it
// started, which holds the handed-over listener: after Start fails, the
// socket is this process's alone.
func TestStartKillsDescendants(t *testing.T) {
	ln, lnf := listen(t)
	defer ln.Close()
	pidFile := filepath.Join(t.TempDir(), "pid")
	_, err := Start(t.Context(), Options{Path: "/bin/sh", Args: []string{"-c", "sleep 30 & echo $! > " + pidFile + "; wait"},
		Files: map[string]*os.File{"l": lnf}, Timeout: 500 * time.Millisecond})
	if err == nil {
		t.Fatal("Start succeeded")
	}
	pid, err := readPID(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	// sleep was a child of the shell: once killed, init reaps it.
	deadline := time.Now().Add(ioTimeout)
	for unix.Kill(pid, 0) == nil {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(b), ") Z") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the wrapper's child %d outlived the failed upgrade", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStartContextDone: a process not yet ready is killed when ctx ends.
func TestStartContextDone(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pid := make(chan int, 1)
	go func() {
		defer cancel()
		for deadline := time.Now().Add(ioTimeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if p, err := readPID(pidFile); err == nil {
				pid <- p
				return
			}
		}
	}()
	p, err := startHelper(t, ctx, "hang", Options{Timeout: helperTimeout}, helperPIDEnv+"="+pidFile)
	if !errors.Is(err, context.Canceled) || p != nil {
		t.Fatalf("Start = %v, %v; want context.Canceled", p, err)
	}
	select {
	case pid := <-pid:
		checkGone(t, pid)
	default:
		t.Fatal("the helper did not write its pid")
	}
}

// TestStartReadyPipeClosed: a process that closes its ready pipe without
// being ready is not waited for until the timeout.
func TestStartReadyPipeClosed(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	start := time.Now()
	p, err := startHelper(t, t.Context(), "closepipe", Options{Timeout: helperTimeout}, helperPIDEnv+"="+pidFile)
	if err == nil || p != nil || !errors.Is(err, errNotReady) {
		t.Fatalf("Start = %v, %v; want %v", p, err, errNotReady)
	}
	if d := time.Since(start); d > exitGrace+ioTimeout {
		t.Errorf("Start took %v", d)
	}
	if pid, err := readPID(pidFile); err == nil {
		checkGone(t, pid)
	}
}

// TestStartInvalid: Start starts nothing for a nil file or an ended ctx.
func TestStartInvalid(t *testing.T) {
	if p, err := startHelper(t, t.Context(), "serve", Options{Files: map[string]*os.File{lnName: nil}}); err == nil || p != nil {
		t.Errorf("Start with a nil file = %v, %v; want an error", p, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if p, err := startHelper(t, ctx, "serve", Options{}); !errors.Is(err, context.Canceled) || p != nil {
		t.Errorf("Start with ctx done = %v, %v; want context.Canceled", p, err)
	}
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// checkGone checks that pid was killed and reaped.
func checkGone(t *testing.T, pid int) {
	t.Helper()
	if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("process %d: kill 0 = %v, want ESRCH", pid, err)
	}
}

func TestInheritNoParent(t *testing.T) {
	t.Setenv(envVar, "")
	h, err := Inherit()
	if err != nil {
		t.Fatal(err)
	}
	if h.Parent() {
		t.Error("Parent() = true")
	}
	if ln, ok, err := h.Listener(lnName); ln != nil || ok || err != nil {
		t.Errorf("Listener = %v, %v, %v", ln, ok, err)
	}
	if f := h.File(secretName); f != nil {
		t.Errorf("File = %v", f)
	}
	if err := h.Ready(); err != nil {
		t.Error(err)
	}
}

// TestInherit: what a parent passes, read in this process: the variable is
// unset, the descriptors become close-on-exec, each file is taken once,
// and Ready writes one byte to the pipe and closes it, once.
func TestInherit(t *testing.T) {
	ln, lnf := listen(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	m, err := MemFile("secret", []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// The Handoff owns what it inherits, so give it descriptors of its own,
	// not close-on-exec as after exec.
	rawDup := func(f *os.File) int {
		fd, err := unix.Dup(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	val, _ := json.Marshal(handoff{
		Ready: rawDup(pw),
		Files: map[string]int{lnName: rawDup(lnf), secretName: rawDup(m), unusedName: rawDup(m)},
	})
	pw.Close()
	t.Setenv(envVar, string(val))

	h, err := Inherit()
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := os.LookupEnv(envVar); ok {
		t.Errorf("%s = %q after Inherit, want unset", envVar, v)
	}
	if !h.Parent() {
		t.Error("Parent() = false")
	}
	for name, f := range h.files {
		if fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
			t.Errorf("%q: F_GETFD = %#x, %v; want FD_CLOEXEC", name, fl, err)
		}
	}

	got, ok, err := h.Listener(lnName)
	if err != nil || !ok {
		t.Fatalf("Listener = %v, %v", ok, err)
	}
	defer got.Close()
	if got.Addr().String() != ln.Addr().String() {
		t.Errorf("inherited listener on %v, want %v", got.Addr(), ln.Addr())
	}
	if _, ok, _ := h.Listener(lnName); ok {
		t.Error("listener taken twice")
	}
	if _, ok, err := h.Listener(secretName); ok || err == nil {
		t.Errorf("Listener(a memfd) = %v, %v; want an error", ok, err)
	}
	if f := h.File(secretName); f != nil {
		t.Error("file taken by a failed Listener is still there")
	}
	unused := int(h.files[unusedName].Fd())

	if err := h.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := h.Ready(); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(unused), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("untaken file after Ready: F_GETFD error %v, want EBADF", err)
	}
	pr.SetReadDeadline(time.Now().Add(ioTimeout))
	if b, err := io.ReadAll(pr); err != nil || len(b) != 1 {
		t.Errorf("the parent read %q, %v; want one byte then EOF", b, err)
	}
}

// TestInheritInvalid: a variable that cannot be used is an error.
func TestInheritInvalid(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	open := int(pr.Fd())
	for _, tc := range []struct{ name, val string }{
		{"not JSON", "3"},
		{"truncated", `{"ready":3,"files":{"a":4`},
		{"trailing data", `{"ready":3}x`},
		{"string descriptor", `{"ready":"3"}`},
		{"fractional descriptor", `{"ready":3.5}`},
		{"no ready pipe", `{"files":{}}`},
		{"stderr", `{"ready":2}`},
		{"negative", fmt.Sprintf(`{"ready":%d,"files":{"a":-1}}`, open)},
		{"not open", fmt.Sprintf(`{"ready":%d,"files":{"a":%d}}`, open, math.MaxInt32)},
		{"shared", fmt.Sprintf(`{"ready":%d,"files":{"a":%d}}`, open, open)},
	} {
		if h, err := inherit(tc.val); err == nil {
			t.Errorf("%s: inherit(%s) = %+v, want an error", tc.name, tc.val, h)
		}
	}
}

func TestMemFile(t *testing.T) {
	data := []byte("ticket keys")
	f, err := MemFile("keys", data)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("F_GETFD = %#x, %v; want FD_CLOEXEC", fl, err)
	}
	// Anonymous: no name in any file system.
	if target, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd())); err != nil || !strings.HasPrefix(target, "/memfd:keys") {
		t.Errorf("fd links to %q, %v; want /memfd:keys", target, err)
	}
	if b, err := io.ReadAll(f); err != nil || !bytes.Equal(b, data) {
		t.Errorf("read %q, %v; want %q", b, err, data)
	}
}

func TestWritePIDFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "strait.pid")
	for _, pid := range []int{1234, 56} {
		if err := WritePIDFile(path, pid); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != strconv.Itoa(pid)+"\n" {
			t.Errorf("pid file holds %q, %v; want %d", b, err, pid)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode() != 0o644 {
		t.Errorf("mode %v, %v; want 0644", fi.Mode(), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d files, want the pid file alone", len(ents))
	}
	if err := WritePIDFile(filepath.Join(dir, "missing", "x.pid"), 1); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
}

// TestWritePIDFileAtomic: a reader never sees a pid file empty or partly
// written while it is being replaced.
func TestWritePIDFileAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "strait.pid")
	if err := WritePIDFile(path, 1); err != nil {
		t.Fatal(err)
	}
	const writes = 500
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		defer close(done)
		for i := range writes {
			if err := WritePIDFile(path, 1000000+i); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for reading := true; reading; {
		select {
		case <-done:
			reading = false
		default:
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if s := string(b); s != "1\n" && (len(s) != 8 || s[0] != '1' || s[7] != '\n') {
			t.Fatalf("read %q while the file was replaced", s)
		}
	}
	wg.Wait()
}
