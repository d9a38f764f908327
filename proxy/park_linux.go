package proxy

import (
	"sync"
	"syscall"
	"time"
)

// parker holds idle keep-alive connections without a goroutine each: one
// goroutine waits on an epoll set of their sockets, and a connection that
// becomes readable (a request, or the client closing) resumes on a new
// goroutine. A parked connection then costs its small conn struct and the
// socket, about a kilobyte, where a goroutine blocked in a read costs a
// stack of at least 2 KiB plus its runtime state.
//
// The sockets stay registered with Go's own poller too; an fd may be in
// several epoll sets. Ours is one-shot: a connection is taken out as soon
// as it fires and never fires twice.
type parker struct {
	epfd   int
	idle   time.Duration
	mu     sync.Mutex
	parked map[int32]*conn // by fd
	closed bool
}

// sweepEvery is how often idle timeouts of parked connections are checked;
// a parked connection outlives its idle timeout by at most this much.
const sweepEvery = time.Second

func newParker(idle time.Duration) (*parker, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	p := &parker{epfd: fd, idle: idle, parked: make(map[int32]*conn)}
	go p.run()
	return p, nil
}

// park hands c to the parker. It reports false if c cannot be parked here
// (no file descriptor, or the parker is closed); the caller then waits on a
// goroutine instead.
func (p *parker) park(c *conn) bool {
	if c.fd < 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.parked[c.fd] = c
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollOneShot, Fd: c.fd}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(c.fd), &ev); err != nil {
		delete(p.parked, c.fd)
		return false
	}
	return true
}

const epollOneShot = 1 << 30 // EPOLLONESHOT, missing from package syscall

func (p *parker) run() {
	events := make([]syscall.EpollEvent, 256)
	lastSweep := mono()
	for {
		n, err := syscall.EpollWait(p.epfd, events, int(sweepEvery/time.Millisecond))
		p.mu.Lock()
		if p.closed || (err != nil && err != syscall.EINTR) {
			p.closed = true
			p.mu.Unlock()
			syscall.Close(p.epfd)
			return
		}
		for _, ev := range events[:max(n, 0)] {
			c := p.parked[ev.Fd]
			if c == nil {
				continue
			}
			delete(p.parked, ev.Fd)
			syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(ev.Fd), nil)
			go c.serve()
		}
		var expired []*conn
		if now := mono(); now-lastSweep >= sweepEvery {
			lastSweep = now
			for fd, c := range p.parked {
				if now-c.idleSince >= p.idle {
					delete(p.parked, fd)
					syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
					expired = append(expired, c)
				}
			}
		}
		p.mu.Unlock()
		for _, c := range expired {
			c.close()
		}
	}
}

// closeAll closes every parked connection and stops the parker (its
// goroutine ends within sweepEvery).
func (p *parker) closeAll() {
	p.mu.Lock()
	parked := p.parked
	p.parked = make(map[int32]*conn)
	p.closed = true
	p.mu.Unlock()
	for _, c := range parked {
		c.close()
	}
}

// connFD returns the socket's file descriptor, or -1.
func connFD(rc syscall.RawConn) int32 {
	fd := int32(-1)
	if rc != nil {
		rc.Control(func(f uintptr) { fd = int32(f) })
	}
	return fd
}
