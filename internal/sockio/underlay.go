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
	// Where the bytes read so far end among TLS records: the header
	// bytes of the next record seen, and the payload bytes still to come
	// of the current one (MidRecord).
	hdr  [5]byte
	hdrN int
	left int
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
	n := Read(u.fd, p)
	var err error
	if n == 0 {
		n, err = u.Conn.Read(p)
	}
	u.track(p[:n])
	return n, err
}

// track follows the TLS record boundaries through bytes read.
func (u *Underlay) track(b []byte) {
	for len(b) > 0 {
		if u.left > 0 {
			k := min(u.left, len(b))
			u.left -= k
			b = b[k:]
			continue
		}
		k := copy(u.hdr[u.hdrN:], b)
		u.hdrN += k
		b = b[k:]
		if u.hdrN == len(u.hdr) {
			u.left, u.hdrN = int(u.hdr[3])<<8|int(u.hdr[4]), 0
		}
	}
}

// MidRecord reports whether the bytes read end inside a TLS record: the
// wrapper holds part of one, which a Held read cannot return, and the rest
// is still to come. Whatever sits there has begun to arrive.
func (u *Underlay) MidRecord() bool { return u.hdrN > 0 || u.left > 0 }

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
