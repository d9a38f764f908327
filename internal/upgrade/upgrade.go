//go:build linux

// Package upgrade hands a process's listening sockets and other files to a
// new process of the same binary, and tells the old process when the new
// one is ready, so that the binary can be replaced without refusing a
// connection.
//
// The old process calls [Start]; the new one calls [Inherit], takes the
// files its configuration still uses and calls [Handoff.Ready], which
// closes the rest: a listener removed from the configuration is closed in
// the new process, and fully once the old one exits.
//
// The files travel as extra descriptors (fd 3 onward); the environment
// variable STRAIT_UPGRADE names them, as JSON, so names may be any string.
package upgrade

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// envVar names the variable that tells a new process what it inherited.
const envVar = "STRAIT_UPGRADE"

// DefaultTimeout is how long Start waits for the new process to be ready
// when Options.Timeout is zero or negative: long enough to load a large
// configuration and its certificates, short enough that a stuck upgrade
// is noticed.
const DefaultTimeout = time.Minute

// exitGrace is how long Start waits for a new process that closed its
// ready pipe without being ready to exit, so that the error can say how it
// ended; such a process is nearly always already exiting.
const exitGrace = time.Second

// firstFD is the descriptor of the first of exec.Cmd.ExtraFiles in the
// new process, after stdin, stdout and stderr.
const firstFD = 3

// handoff is what envVar holds.
type handoff struct {
	Ready int            `json:"ready"` // write end of the ready pipe
	Files map[string]int `json:"files"` // name -> descriptor
	// PGID is the parent's process group, which the new process joins
	// once ready; until then it has a group of its own, which a failed
	// upgrade kills whole.
	PGID int `json:"pgid,omitempty"`
}

// Options says what process Start starts and what it hands over.
type Options struct {
	// Path is the executable, usually os.Executable().
	Path string

	// Args are the arguments after the command name, as for exec.Command
	// (so os.Args[1:] fits); the new process's os.Args[0] is Path.
	Args []string

	// Env is the new process's environment; nil means this process's.
	// Start adds STRAIT_UPGRADE.
	Env []string

	// Files are handed to the new process by name. They stay open here:
	// this process keeps serving on its listeners until it decides to stop.
	Files map[string]*os.File

	// Stdout and Stderr receive the new process's output; nil means
	// /dev/null, as in exec.Cmd.
	Stdout, Stderr io.Writer

	// Timeout bounds the wait for the new process to be ready; zero or
	// negative means DefaultTimeout.
	Timeout time.Duration
}

// Start starts a new process as o says, handing it o.Files, and returns
// once it is ready (has called Handoff.Ready). It returns an error if the
// process exits first, saying how it exited; if it is not ready within
// o.Timeout or before ctx ends, it is killed (SIGKILL) and reaped before
// Start returns the error.
//
// After Start succeeds, a goroutine waits for the process, so that it is
// reaped if it exits while this process still runs.
func Start(ctx context.Context, o Options) (*os.Process, error) {
	if err := context.Cause(ctx); err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}

	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("upgrade: ready pipe: %w", err)
	}
	extra := []*os.File{w}
	closeExtra := func() {
		for _, f := range extra {
			f.Close()
		}
	}
	h := handoff{Ready: firstFD, Files: make(map[string]int, len(o.Files)), PGID: syscall.Getpgrp()}
	for _, name := range slices.Sorted(maps.Keys(o.Files)) {
		f, err := dup(o.Files[name])
		if err != nil {
			r.Close()
			closeExtra()
			return nil, fmt.Errorf("upgrade: file %q: %w", name, err)
		}
		h.Files[name] = firstFD + len(extra)
		extra = append(extra, f)
	}
	val, err := json.Marshal(h)
	if err != nil {
		r.Close()
		closeExtra()
		return nil, fmt.Errorf("upgrade: %w", err)
	}

	env := o.Env
	if env == nil {
		env = os.Environ()
	}
	env = slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		return strings.HasPrefix(kv, envVar+"=")
	})
	cmd := exec.Command(o.Path, o.Args...)
	cmd.Env = append(env, envVar+"="+string(val))
	cmd.Stdout, cmd.Stderr = o.Stdout, o.Stderr
	cmd.ExtraFiles = extra
	// A group of its own until it is ready: a failed new process is killed
	// with whatever it started (a wrapper script's own child would
	// otherwise hold every listening socket), and this process's group is
	// not.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Wait, for a Stdout or Stderr not an *os.File, also waits for the
	// output to end, which a descendant could hold open past the exit.
	cmd.WaitDelay = exitGrace
	err = cmd.Start()
	// Only the new process may hold the pipe's write end after this, so
	// that EOF means it closed it or died.
	closeExtra()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	pid := cmd.Process.Pid

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ready := make(chan error, 1)
	go func() { ready <- readReady(r) }()

	// kill ends a process that will not be ready, and unblocks the reader
	// in case a descendant of it still holds the write end.
	kill := func(err error) error {
		syscall.Kill(-pid, syscall.SIGKILL)
		cmd.Process.Kill() // should it have joined this group already
		<-exited
		r.SetReadDeadline(time.Now())
		return err
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-ready:
		if err == nil {
			return cmd.Process, nil
		}
		select {
		case werr := <-exited:
			syscall.Kill(-pid, syscall.SIGKILL)
			return nil, exitError(pid, werr)
		case <-time.After(exitGrace):
			return nil, kill(fmt.Errorf("upgrade: new process %d not ready: %w; killed", pid, err))
		}
	case werr := <-exited:
		syscall.Kill(-pid, syscall.SIGKILL) // what it started, holding the sockets
		r.SetReadDeadline(time.Now())
		return nil, exitError(pid, werr)
	case <-timer.C:
		return nil, kill(fmt.Errorf("upgrade: new process %d not ready within %v; killed", pid, timeout))
	case <-ctx.Done():
		return nil, kill(fmt.Errorf("upgrade: new process %d not ready: %w; killed", pid, context.Cause(ctx)))
	}
}

var errNotReady = errors.New("closed its ready pipe")

// readReady reads the byte a ready process writes, then closes r.
func readReady(r *os.File) error {
	defer r.Close()
	var b [1]byte
	if n, err := r.Read(b[:]); n == 0 {
		if err == nil || err == io.EOF {
			return errNotReady
		}
		return err
	}
	return nil
}

func exitError(pid int, werr error) error {
	if werr == nil {
		return fmt.Errorf("upgrade: new process %d exited before it was ready: exit status 0", pid)
	}
	return fmt.Errorf("upgrade: new process %d exited before it was ready: %w", pid, werr)
}

// dup returns a close-on-exec duplicate of f to pass to exec.Cmd.
//
// exec.Cmd calls Fd on each extra file, and Fd puts the descriptor of a
// file from net.TCPListener.File into blocking mode. O_NONBLOCK belongs to
// the open file description, which that file shares with the listener
// this process still accepts on: its Accept would then block a thread and
// its Close wait for the next connection. A duplicate wrapped by
// os.NewFile keeps its mode when Fd is called.
func dup(f *os.File) (*os.File, error) {
	if f == nil {
		return nil, errors.New("nil file")
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var derr error
	if err := rc.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup: %w", derr)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// Handoff is what a process inherited from the process that started it.
// Its methods are safe for concurrent use.
type Handoff struct {
	parent bool
	pgid   int // the parent's process group, joined when ready

	mu    sync.Mutex
	ready *os.File            // write end of the ready pipe; nil once used
	files map[string]*os.File // not yet taken
	done  bool
	err   error // of the first Ready
}

// Inherit returns what the process that started this one passed it, and
// unsets STRAIT_UPGRADE so that processes this one starts do not see it.
// With no such process (the variable unset or empty) it returns a Handoff with no files, whose Ready does
// nothing. A variable that cannot be read, or names descriptors that are
// not open, is an error.
func Inherit() (*Handoff, error) {
	val := os.Getenv(envVar)
	if val == "" {
		return &Handoff{}, nil
	}
	os.Unsetenv(envVar)
	return inherit(val)
}

func inherit(val string) (*Handoff, error) {
	var h handoff
	if err := json.Unmarshal([]byte(val), &h); err != nil {
		return nil, fmt.Errorf("upgrade: %s: %w", envVar, err)
	}
	// Check every descriptor before wrapping any: an *os.File closes its
	// descriptor when collected, which must not happen to one this process
	// uses for something else.
	seen := map[int]string{}
	check := func(name string, fd int) error {
		if fd < firstFD {
			return fmt.Errorf("upgrade: %s: %s: descriptor %d is below %d", envVar, name, fd, firstFD)
		}
		if other, dup := seen[fd]; dup {
			return fmt.Errorf("upgrade: %s: %s and %s share descriptor %d", envVar, other, name, fd)
		}
		seen[fd] = name
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return fmt.Errorf("upgrade: %s: %s: descriptor %d: %w", envVar, name, fd, err)
		}
		return nil
	}
	if err := check("ready pipe", h.Ready); err != nil {
		return nil, err
	}
	for name, fd := range h.Files {
		if err := check(strconv.Quote(name), fd); err != nil {
			return nil, err
		}
	}
	// Inherited descriptors are not close-on-exec; make them so, or a
	// process this one starts would keep the parent from seeing EOF on the
	// ready pipe and keep forgotten listeners open.
	for fd := range seen {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			return nil, fmt.Errorf("upgrade: descriptor %d: %w", fd, err)
		}
	}
	// The ready pipe is a pipe: a variable set by someone else must not
	// have a byte written to whatever file it names.
	var st unix.Stat_t
	if err := unix.Fstat(h.Ready, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return nil, fmt.Errorf("upgrade: %s: descriptor %d is not a pipe", envVar, h.Ready)
	}
	out := &Handoff{
		pgid:   h.PGID,
		parent: true,
		ready:  os.NewFile(uintptr(h.Ready), "upgrade ready pipe"),
		files:  make(map[string]*os.File, len(h.Files)),
	}
	for name, fd := range h.Files {
		out.files[name] = os.NewFile(uintptr(fd), name)
	}
	return out, nil
}

// Parent reports whether this process was started by Start.
func (h *Handoff) Parent() bool { return h.parent }

// Listener takes the inherited listening socket named name. It reports
// false if there is none by that name or it was already taken, and an
// error if the file is not a listening socket; the file is closed either
// way, the listener holding its own descriptor.
func (h *Handoff) Listener(name string) (net.Listener, bool, error) {
	f := h.File(name)
	if f == nil {
		return nil, false, nil
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, false, fmt.Errorf("upgrade: listener %q: %w", name, err)
	}
	return ln, true, nil
}

// PacketConn takes the inherited UDP socket named name, as Listener
// does a listening socket.
func (h *Handoff) PacketConn(name string) (*net.UDPConn, bool, error) {
	f := h.File(name)
	if f == nil {
		return nil, false, nil
	}
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, false, fmt.Errorf("upgrade: socket %q: %w", name, err)
	}
	c, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, false, fmt.Errorf("upgrade: socket %q is not a UDP socket", name)
	}
	return c, true, nil
}

// File takes the inherited file named name, or returns nil if there is
// none by that name or it was already taken. The caller closes it.
func (h *Handoff) File(name string) *os.File {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.files[name]
	delete(h.files, name)
	return f
}

// Ready closes the inherited files not taken, such as a listener the new
// configuration no longer has, then tells the parent this process is ready.
// Calls after the first return the first's result.
func (h *Handoff) Ready() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done {
		return h.err
	}
	h.done = true
	// Close first, so that once the parent closes its copies a forgotten
	// listener refuses connections instead of queueing them unanswered.
	for name, f := range h.files {
		f.Close()
		delete(h.files, name)
	}
	if h.ready == nil {
		return nil
	}
	if h.pgid > 0 {
		// Back in the parent's group (a shell's job, say), now that a
		// failure no longer kills this process's group.
		syscall.Setpgid(0, h.pgid)
	}
	_, err := h.ready.Write([]byte{1})
	if cerr := h.ready.Close(); err == nil {
		err = cerr
	}
	h.ready = nil
	if err != nil {
		h.err = fmt.Errorf("upgrade: telling the parent: %w", err)
	}
	return h.err
}

// WritePIDFile writes pid to path, mode 0644, by renaming a file written
// beside it, so that a reader sees the old content or the new, never a part.
func WritePIDFile(path string, pid int) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("upgrade: pid file: %w", err)
	}
	tmp := f.Name()
	_, err = f.WriteString(strconv.Itoa(pid) + "\n")
	if err == nil {
		err = f.Chmod(0o644) // CreateTemp makes it 0600
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("upgrade: pid file: %w", err)
	}
	return nil
}

// MemFile returns an anonymous in-memory file holding data, positioned at
// its start, to hand secrets such as TLS session-ticket keys to a new
// process without writing them to disk. The new process reads it with
// io.ReadAll. The read position is shared with the new process, so use a
// new MemFile for each Start.
func MemFile(name string, data []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("upgrade: memfd %q: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "memfd:"+name)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, fmt.Errorf("upgrade: memfd %q: %w", name, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("upgrade: memfd %q: %w", name, err)
	}
	return f, nil
}
