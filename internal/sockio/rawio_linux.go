package sockio

import (
	"net"
	"syscall"
	"unsafe"
)

// Raw socket I/O. Reads and writes on the request path try the socket
// directly first, with a system call the runtime is not told about, and go
// through net.Conn only when that would block or fails: net.Conn would
// take and release the descriptor's lock (two atomic operations, each
// costly right after a system call), reset the poller's state, and enter
// and leave the scheduler's syscall state, about 13% of strait's user CPU
// time per request. The socket is non-blocking, so the call never blocks.
//
// Skipping the lock is safe only while no other goroutine can close the
// socket or uses it. So: a connection's socket is closed only by the
// goroutine serving it, or while no goroutine serves it (parked, pooled);
// Server.Close shuts sockets down instead (Shutdown), which keeps their
// descriptors. And callers turn the raw path off while another goroutine
// uses the socket beside theirs or may stop a wait with a deadline, which
// the raw path does not see.

// PlainFD returns fd, the descriptor of nc, if nc is a plain TCP or Unix
// socket, whose bytes are the connection's; else -1.
func PlainFD(nc net.Conn, fd int32) int32 {
	switch nc.(type) {
	case *net.TCPConn, *net.UnixConn:
		return fd
	}
	return -1
}

// Read reads into p from fd, and returns how many bytes it read; 0 when it
// read none, for any reason (would block, end of file, an error, fd < 0):
// the caller then reads through net.Conn, which waits, or reports the
// error.
func Read(fd int32, p []byte) int { return rawCall(syscall.SYS_READ, fd, p) }

// Write writes what of p it can to fd without waiting, and returns how
// much; the caller writes the rest through net.Conn.
func Write(fd int32, p []byte) int { return rawCall(syscall.SYS_WRITE, fd, p) }

func rawCall(trap uintptr, fd int32, p []byte) int {
	if fd < 0 || len(p) == 0 {
		return 0
	}
	n, _ := RawIO(trap, uintptr(fd), p)
	return n
}

// RawIO reads or writes (trap SYS_READ or SYS_WRITE) the non-blocking
// socket fd with p, which is not empty, without telling the runtime (it
// never blocks), and returns the count or the errno.
func RawIO(trap, fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), 0
}

// Shutdown ends the connection of nc for both directions without closing
// its descriptor, and reports whether it could.
func Shutdown(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	err = rc.Control(func(fd uintptr) { syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
	return err == nil
}
