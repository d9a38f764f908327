package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/straitproxy/strait/internal/observe"
	"github.com/straitproxy/strait/internal/upgrade"
)

// stateFile names the file that carries to a new process what it goes
// on from: the listeners' TLS session ticket keys (in memory, never on
// disk) and the reload and upgrade counts.
const stateFile = "state"

// handedState is what stateFile holds.
type handedState struct {
	TicketKeys map[string][][32]byte `json:"ticket_keys"` // by listener address
	Counts     observe.LifeCounts    `json:"counts"`
}

// Upgrade starts the binary at this process's path with its arguments,
// hands it every listening socket, the ticket keys and the counts, and
// waits until it is ready, or ctx ends. On success the caller stops this
// process (Stop(true)); on failure (the new process exits, or is not
// ready in time, or ctx ended: it is then killed) this one serves on, and
// the error says why. Reloads are refused while it waits.
func (p *Process) Upgrade(ctx context.Context) (err error) {
	files, err := p.beginUpgrade()
	if err != nil {
		return err
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
		p.mu.Lock()
		p.upgrading, p.handedOver = false, err == nil
		p.mu.Unlock()
		if p.o.Metrics != nil && err != nil {
			p.o.Metrics.Upgraded(false) // a success is the new process's to count
		}
	}()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this binary: %w", err)
	}
	p.o.Logger.Info("upgrade: starting the new process", "path", exe, "args", os.Args[1:])
	proc, err := upgrade.Start(ctx, upgrade.Options{Path: exe, Args: os.Args[1:], Env: os.Environ(), Files: files,
		Stdout: os.Stdout, Stderr: os.Stderr, Timeout: p.o.UpgradeTimeout})
	if err != nil {
		return err
	}
	p.o.Logger.Info("upgrade: the new process is ready; this one drains", "pid", proc.Pid)
	p.mu.Lock()
	p.newPID = proc.Pid
	p.mu.Unlock()
	p.o.Notifier.MainPID(proc.Pid)
	return nil
}

// beginUpgrade marks an upgrade under way, and returns the files to hand
// over: every listening socket, and the state.
func (p *Process) beginUpgrade() (map[string]*os.File, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.cfg == nil:
		return nil, errors.New("the process is stopping")
	case p.upgrading || p.handedOver:
		return nil, errors.New("an upgrade is under way, or done, already")
	}
	files := make(map[string]*os.File, len(p.sockets)+1)
	fail := func(err error) (map[string]*os.File, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, err
	}
	for name, sock := range p.sockets {
		f, err := sock.File()
		if err != nil {
			return fail(fmt.Errorf("socket %s: %w", name, err))
		}
		files[name] = f
	}
	for name, c := range p.packets {
		f, err := c.File()
		if err != nil {
			return fail(fmt.Errorf("socket %s: %w", name, err))
		}
		files[name] = f
	}
	st := handedState{TicketKeys: make(map[string][][32]byte)}
	for addr, ts := range p.gw.TLS() {
		st.TicketKeys[addr] = ts.TicketKeys()
	}
	if p.o.Metrics != nil {
		st.Counts = p.o.Metrics.LifeCounts()
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fail(err)
	}
	// A new one each time: the new process reads it from where the last
	// reader left it.
	f, err := upgrade.MemFile(stateFile, b)
	if err != nil {
		return fail(fmt.Errorf("state for the new process: %w", err))
	}
	files[stateFile] = f
	p.upgrading = true
	return files, nil
}

// takeState takes what an old process handed over: the listeners' ticket
// keys, so that sessions it began resume here, and its counts (this
// process is one more successful upgrade).
func (p *Process) takeState(f *os.File) {
	defer f.Close()
	var st handedState
	b, err := io.ReadAll(f)
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil {
		p.o.Logger.Warn("upgrade: the state handed over does not read; sessions of the old process will not resume", "err", err)
		return
	}
	for addr, ts := range p.gw.TLS() {
		ts.SetTicketKeys(st.TicketKeys[addr])
	}
	if m := p.o.Metrics; m != nil {
		m.AddLifeCounts(st.Counts)
		m.Upgraded(true)
	}
}

// Watch reloads the config file when it changes, until ctx ends: it
// looks every interval, and reloads once a change has held still for a
// look (an editor's half-written file is not loaded).
func (p *Process) Watch(ctx context.Context, path string, interval time.Duration) {
	stamp := func() string {
		fi, err := os.Stat(path)
		if err != nil {
			return "missing"
		}
		return fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
	}
	loaded, seen := stamp(), ""
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := stamp()
		if st != loaded && st == seen && st != "missing" {
			loaded = st
			p.Reload("watch")
		}
		seen = st
	}
}

// NotReady turns /ready to 503: the process is about to stop.
func (p *Process) NotReady() { p.api.SetReady(false) }

// StopNew sends sig to the process an upgrade started, which this one
// handed over to: a stop that came during the upgrade is for it too.
func (p *Process) StopNew(sig syscall.Signal) {
	p.mu.Lock()
	pid := p.newPID
	p.mu.Unlock()
	if pid > 0 {
		syscall.Kill(pid, sig)
	}
}
