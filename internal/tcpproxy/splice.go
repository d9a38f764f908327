package tcpproxy

import (
	"errors"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// spliceChunk is the most one splice moves: a pipe's default capacity.
const spliceChunk = 64 << 10

// pipe is a kernel pipe that spliced bytes pass through.
type pipe struct{ r, w int }

// pipes are the spare pipes of a process. A relay takes one only while
// bytes are on their way, so pipes scale with busy relays, not open
// ones; go's own splice (TCPConn.ReadFrom) holds one from before it
// waits for data.
type pipes struct {
	mu   sync.Mutex
	free []*pipe
	max  int // spares kept; more are closed
}

func (ps *pipes) get() (*pipe, error) {
	ps.mu.Lock()
	if n := len(ps.free); n > 0 {
		p := ps.free[n-1]
		ps.free = ps.free[:n-1]
		ps.mu.Unlock()
		return p, nil
	}
	ps.mu.Unlock()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	return &pipe{r: fds[0], w: fds[1]}, nil
}

// put gives back an empty pipe.
func (ps *pipes) put(p *pipe) {
	ps.mu.Lock()
	if len(ps.free) < ps.max {
		ps.free = append(ps.free, p)
		p = nil
	}
	ps.mu.Unlock()
	if p != nil {
		p.close()
	}
}

// closeAll closes the spares.
func (ps *pipes) closeAll() {
	ps.mu.Lock()
	free := ps.free
	ps.free = nil
	ps.mu.Unlock()
	for _, p := range free {
		p.close()
	}
}

func (p *pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// spliceFrom moves up to spliceChunk bytes from the socket fd into p,
// without blocking: n 0 and err nil is the end of the stream, and
// EAGAIN that nothing is there.
func spliceFrom(fd int, p *pipe) (int, error) { return splice(fd, p.w, spliceChunk) }

// spliceTo moves up to n bytes from p to the socket fd, without blocking.
func spliceTo(p *pipe, fd, n int) (int, error) { return splice(p.r, fd, n) }

// splice is splice(2) between non-blocking descriptors, which never
// blocks: the runtime is not told of it (RawSyscall6), as for sockio.RawIO.
func splice(in, out, n int) (int, error) {
	for {
		m, _, errno := syscall.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n),
			unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch errno {
		case 0:
			return int(m), nil
		case syscall.EINTR:
			continue
		}
		return 0, errno
	}
}

// isReset reports whether err is the peer resetting the connection.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
