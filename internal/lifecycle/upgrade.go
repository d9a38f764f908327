package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/straitproxy/strait/internal/upgrade"
)

// ticketKeysFile names the file that carries the listeners' TLS session
// ticket keys to a new process: in memory, never on disk.
const ticketKeysFile = "tls-ticket-keys"

// Upgrade starts the binary at this process's path with its arguments,
// hands it every listening socket and the ticket keys, and waits until it
// is ready. On success the caller stops this process (Stop(true)); on
// failure (the new process exits, or is not ready in time) this one
// serves on, and the error says why.
func (p *Process) Upgrade() (err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	defer func() {
		if p.o.Metrics != nil {
			p.o.Metrics.Upgraded(err == nil)
		}
	}()
	if p.cfg == nil {
		return errors.New("the process is stopping")
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this binary: %w", err)
	}
	files := make(map[string]*os.File, len(p.sockets)+1)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for name, sock := range p.sockets {
		f, err := sock.File()
		if err != nil {
			return fmt.Errorf("socket %s: %w", name, err)
		}
		files[name] = f
	}
	keys := make(map[string][][32]byte)
	for addr, ts := range p.gw.TLS() {
		keys[addr] = ts.TicketKeys()
	}
	b, err := json.Marshal(keys)
	if err != nil {
		return err
	}
	if files[ticketKeysFile], err = upgrade.MemFile(ticketKeysFile, b); err != nil {
		return fmt.Errorf("ticket keys: %w", err)
	}
	p.o.Logger.Info("upgrade: starting the new process", "path", exe, "args", os.Args[1:])
	ctx, cancel := context.WithTimeout(context.Background(), p.o.UpgradeTimeout)
	defer cancel()
	proc, err := upgrade.Start(ctx, upgrade.Options{Path: exe, Args: os.Args[1:], Env: os.Environ(), Files: files,
		Stdout: os.Stdout, Stderr: os.Stderr, Timeout: p.o.UpgradeTimeout})
	if err != nil {
		return err
	}
	p.o.Logger.Info("upgrade: the new process is ready; this one drains", "pid", proc.Pid)
	p.o.Notifier.MainPID(proc.Pid)
	return nil
}

// takeTicketKeys gives the listeners' TLS the ticket keys an old process
// handed over, so that sessions it began resume here.
func (p *Process) takeTicketKeys(f *os.File) {
	defer f.Close()
	var keys map[string][][32]byte
	b, err := io.ReadAll(f)
	if err == nil {
		err = json.Unmarshal(b, &keys)
	}
	if err != nil {
		p.o.Logger.Warn("upgrade: the ticket keys handed over do not read; sessions of the old process will not resume", "err", err)
		return
	}
	for addr, ts := range p.gw.TLS() {
		ts.SetTicketKeys(keys[addr])
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
