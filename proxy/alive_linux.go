package proxy

import (
	"net"
	"syscall"
	"unsafe"
)

// aliveCheck tells whether an idle pooled connection may be reused: a peek
// that does not block finds nothing to read on an open idle connection,
// and end-of-file on one the peer closed, or stray bytes it sent.
// It peeks the descriptor directly, not through RawConn.Read, which would
// fail once the connection's last read deadline has passed; the pool owns
// the connection, so nothing else uses or closes it meanwhile.
type aliveCheck struct {
	fd int32
}

func (a *aliveCheck) init(nc net.Conn) {
	a.fd = -1
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			a.fd = connFD(rc)
		}
	}
}

func (a *aliveCheck) check(net.Conn) bool {
	return a.fd < 0 || peek(uintptr(a.fd)) == syscall.EAGAIN
}

// readiness waits until a connection has something to read (bytes, end of
// file or an error) without reading it, so the wait needs no buffer.
type readiness struct {
	rc syscall.RawConn
	fn func(fd uintptr) bool
}

func (r *readiness) init(nc net.Conn) {
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			r.rc = rc
			r.fn = func(fd uintptr) bool { return peek(fd) != syscall.EAGAIN }
		}
	}
}

// wait returns when the connection is readable, or with the read
// deadline's error.
func (r *readiness) wait() error {
	if r.rc == nil {
		return nil // the read that follows will block instead
	}
	return r.rc.Read(r.fn)
}

// peek looks at one byte without taking it or blocking, and returns the
// errno (0 when there is a byte or end of file). It never blocks, so the
// runtime need not be told of the system call (RawSyscall6: about 80 ns
// less than Syscall6, of some 500 here).
func peek(fd uintptr) syscall.Errno {
	var b [1]byte
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno
}
