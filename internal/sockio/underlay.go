package sockio

import (
	"net"
	"syscall"
)

// Underlay is the socket under a connection that wraps it (TLS): the
// wrapper reads and writes through it. Reads and writes try the raw path
// first, as a plain Socket's do. Two switches make them never wait:
//
//   - Held: reads fail at once with ErrWouldBlock, without a system call,
//     so that a read of the wrapper returns only what the wrapper already
//     holds. crypto/tls reads whole records, often several at once: after
//     a request, the next one may sit decrypted in the tls.Conn, where no
//     readiness of the socket shows it. Such a read tells before the
//     connection waits for the socket.
//   - NoWait: writes write what fits and fail with ErrWouldBlock rather
//     than wait, for a close_notify on the way out, which must not hold
//     the goroutine that closes (tls.Conn.Close would wait up to 5 s).
//
// ErrWouldBlock is temporary, so a tls.Conn reading through it does not
// keep it as the connection's error.
type Underlay struct {
	net.Conn
	Held, NoWait bool
	fd, plain    int32 // fd is plain while the raw path is on, else -1
}

// NewUnderlay returns nc, a plain socket, ready to be wrapped.
func NewUnderlay(nc net.Conn) *Underlay {
	fd := PlainFD(nc, FD(nc))
	return &Underlay{Conn: nc, fd: fd, plain: fd}
}

// ErrWouldBlock is what an Underlay's reads (Held) and writes (NoWait)
// return instead of waiting.
var ErrWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "sockio: would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

func (u *Underlay) Read(p []byte) (int, error) {
	if u.Held {
		return 0, ErrWouldBlock
	}
	if n := Read(u.fd, p); n > 0 {
		return n, nil
	}
	return u.Conn.Read(p)
}

func (u *Underlay) Write(p []byte) (int, error) {
	n := Write(u.fd, p)
	if n == len(p) {
		return n, nil
	}
	if u.NoWait {
		return n, ErrWouldBlock
	}
	m, err := u.Conn.Write(p[n:])
	return n + m, err
}

// SyscallConn is the socket's, for Shutdown and readiness waits.
func (u *Underlay) SyscallConn() (syscall.RawConn, error) {
	return u.Conn.(syscall.Conn).SyscallConn()
}
