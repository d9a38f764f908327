package sockio

import (
	"errors"
	"io"
	"net"
	"syscall"
	"time"
	"unsafe"
)

// FD returns nc's file descriptor, or -1 if it has none.
func FD(nc net.Conn) int32 { return fdOf(rawConn(nc)) }

func rawConn(nc net.Conn) syscall.RawConn {
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return rc
		}
	}
	return nil
}

func fdOf(rc syscall.RawConn) int32 {
	fd := int32(-1)
	if rc != nil {
		rc.Control(func(f uintptr) { fd = int32(f) })
	}
	return fd
}

// Readable reports whether fd has something to read (bytes, end of file
// or an error), without waiting or taking anything. It is a system call.
// An unknown descriptor (fd < 0) is not readable.
//
// It peeks the descriptor directly, not through RawConn.Read, which would
// fail once the connection's last read deadline has passed: an idle
// pooled connection, say, whose owner nothing else disturbs.
func Readable(fd int32) bool { return fd >= 0 && Peek(uintptr(fd)) != syscall.EAGAIN }

// Quiet reports whether fd has nothing to read: an open idle connection,
// not one the peer closed or sent stray bytes on. An unknown descriptor
// (fd < 0) is taken to be quiet.
func Quiet(fd int32) bool { return fd < 0 || Peek(uintptr(fd)) == syscall.EAGAIN }

// Peek looks at one byte of fd without taking it or blocking, and
// returns the errno: EAGAIN when there is nothing to read, 0 when there
// is a byte or end of file, else the socket's error, which the peek
// clears (the caller must take it from here). It never blocks, so the
// runtime need not be told of the system call (RawSyscall6: about 80 ns
// less than Syscall6, of some 500 here).
func Peek(fd uintptr) syscall.Errno {
	var b [1]byte
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno
}

// Readiness waits until a connection has something to read (bytes, end of
// file or an error) without reading it, so the wait needs no buffer.
type Readiness struct {
	rc syscall.RawConn
	fn func(fd uintptr) bool
}

// Init readies r for nc, and returns nc's descriptor, or -1.
func (r *Readiness) Init(nc net.Conn) int32 {
	if r.rc = rawConn(nc); r.rc != nil {
		r.fn = func(fd uintptr) bool { return Peek(fd) != syscall.EAGAIN }
	}
	return fdOf(r.rc)
}

// Wait returns when the connection is readable, or with the read
// deadline's error.
func (r *Readiness) Wait() error {
	if r.rc == nil {
		return nil // the read that follows will block instead
	}
	return r.rc.Read(r.fn)
}

// PeekUntil peeks at the start of c's stream into buf, without taking
// anything, until done says the bytes seen are enough (or wrong), the
// stream ends (io.ErrUnexpectedEOF), buf is full with done still wanting
// more (ErrPeekFull), or the deadline passes. It waits for more bytes as
// they come: what is peeked stays in the socket for whoever reads next.
func PeekUntil(c Conn, buf []byte, deadline time.Time, done func(b []byte) (bool, error)) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	c.SetReadDeadline(deadline)
	defer c.SetReadDeadline(time.Time{})
	var derr error
	seen := 0
	err = rc.Read(func(fd uintptr) bool {
		n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		switch {
		case errno == syscall.EAGAIN:
			return false
		case errno != 0:
			derr = errno
			return true
		case n == 0:
			derr = io.ErrUnexpectedEOF
			return true
		case int(n) == seen:
			return false // nothing new: wait for more
		}
		seen = int(n)
		var ok bool
		if ok, derr = done(buf[:n]); ok || derr != nil {
			return true
		}
		if seen == len(buf) {
			derr = ErrPeekFull
			return true
		}
		return false
	})
	if err == nil {
		err = derr
	}
	return err
}

// Conn is a socket whose bytes are the stream's (a TCP socket, not a TLS
// connection over one) that can wait with a deadline: a *net.TCPConn, or
// a socket kept as an *os.File.
type Conn interface {
	syscall.Conn
	SetReadDeadline(t time.Time) error
}

// ErrPeekFull is PeekUntil's error when its buffer filled first.
var ErrPeekFull = errors.New("sockio: peeked a whole buffer, and wanted more")
