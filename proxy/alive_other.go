//go:build !linux

package proxy

import (
	"net"
	"syscall"
)

// aliveCheck has no portable non-blocking peek here; a stale connection is
// caught by the retry of an idempotent request instead.
type aliveCheck struct{ fd int32 }

func (a *aliveCheck) init(net.Conn)       { a.fd = -1 }
func (a *aliveCheck) check(net.Conn) bool { return true }

// peek is not made here; no descriptor is known to ask it of (connFD).
func peek(uintptr) syscall.Errno { return syscall.EAGAIN }

// readiness has no buffer-free wait here: the parked connection's read
// blocks with a buffer instead.
type readiness struct{ rc syscall.RawConn }

func (r *readiness) init(net.Conn) {}
func (r *readiness) wait() error   { return nil }
