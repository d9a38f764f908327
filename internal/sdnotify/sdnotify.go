// Package sdnotify tells systemd about the service's state with the
// sd_notify(3) protocol: one datagram per message to the unix socket named
// by NOTIFY_SOCKET, without a systemd library.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// writeTimeout bounds a send, which blocks while the manager's socket
// buffer is full: telling systemd must not stall a reload or a shutdown.
const writeTimeout = 5 * time.Second

// Notifier sends messages to the service manager. A nil *Notifier, what New
// returns without NOTIFY_SOCKET, does nothing, so callers need not check.
// Its methods are safe for concurrent use: each opens a socket for its one
// message, as messages are few (start, reload, stop).
type Notifier struct {
	addr *net.UnixAddr
	err  error // NOTIFY_SOCKET names something this package cannot send to
}

// New returns a Notifier for the socket NOTIFY_SOCKET names, looked up with
// getenv (usually os.Getenv), or nil if it is unset or empty. It does not
// unset the variable: a process started by a binary upgrade needs it.
//
// An absolute path names a socket in the file system and a name starting
// with '@' an abstract one. Anything else, such as systemd's vsock:
// addresses, gives a Notifier whose methods return an error.
func New(getenv func(string) string) *Notifier {
	name := getenv("NOTIFY_SOCKET")
	switch {
	case name == "":
		return nil
	case name[0] == '/' || name[0] == '@' && len(name) > 1:
		// The net package sends a leading '@' as the NUL of an abstract name.
		return &Notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}}
	default:
		return &Notifier{err: fmt.Errorf("sdnotify: unsupported NOTIFY_SOCKET %q", name)}
	}
}

// Notify sends state, newline-separated VARIABLE=value assignments such as
// "READY=1\nSTATUS=serving", in one datagram.
func (n *Notifier) Notify(state string) error {
	if n == nil {
		return nil
	}
	if n.err != nil {
		return n.err
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	return nil
}

// Ready says the service has started (or finished reloading), with status,
// if not empty, as its status line.
func (n *Notifier) Ready(status string) error {
	if status == "" {
		return n.Notify("READY=1")
	}
	return n.Notify("READY=1\n" + statusLine(status))
}

// Reloading says the service is reloading its configuration; Ready says
// when it is done. systemd requires MONOTONIC_USEC with RELOADING=1 for
// Type=notify-reload services, to match the READY=1 that ends the reload.
func (n *Notifier) Reloading() error {
	if n == nil {
		return nil
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	return n.Notify("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1e3, 10))
}

// Stopping says the service is shutting down.
func (n *Notifier) Stopping() error { return n.Notify("STOPPING=1") }

// MainPID tells systemd that pid is now the service's main process, as
// after a binary upgrade has handed over to it.
func (n *Notifier) MainPID(pid int) error {
	if n == nil {
		return nil
	}
	if pid <= 0 {
		return errors.New("sdnotify: MAINPID must be positive")
	}
	return n.Notify("MAINPID=" + strconv.Itoa(pid))
}

// statusLine makes a STATUS= assignment of s, whose newlines would
// otherwise start assignments of their own.
func statusLine(s string) string {
	return "STATUS=" + strings.ReplaceAll(s, "\n", " ")
}
