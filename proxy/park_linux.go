package proxy

import (
	"os"
	"sync"
	"syscall"
	"time"
)

// parker waits for the next request of keep-alive connections on an epoll
// set of its own, and wakes them in the order their requests arrived.
//
// Go's poller would do the waiting otherwise, but it wakes the goroutines
// that became ready in one poll in reverse order: under load the
// connection whose request came first is served last of its batch, and
// p99 was 1.5-2.6 times nginx's at the same rate. (Built with a Go runtime
// patched to wake in order, the same strait had nginx's p99.)
//
// A socket joins the set at its first wait and stays, edge-triggered, so a
// wait costs no system call. An edge that comes while its connection is
// not waiting marks it fired; the next wait peeks first, since the bytes
// may have been read meanwhile.
//
// A connection waits in one of two ways:
//   - hot: its goroutine blocks on conn.wake, keeping its buffers, for up
//     to parkAfter;
//   - parked: after that its goroutine has given back the request state
//     and ended, and a connection that becomes readable resumes on another
//     (see workers). A parked connection costs its small conn struct and the
//     socket, about a kilobyte.
//
// The sockets stay registered with Go's poller too; an fd may be in several
// epoll sets. The epoll descriptor is itself registered with Go's poller,
// so the parker's goroutine waits for events without blocking a thread,
// and is woken only when the scheduler has run out of work: the end of a
// batch, as in an event loop. Timeouts (hot waits that end in parking,
// idle parked connections) are kept by a timer of their own, because a
// poll in the middle of a batch serves its late arrivals ahead of the
// responses still due to the batch's early ones: the 1% of requests
// that meet it took twice as long.
type parker struct {
	epfd int
	rc   syscall.RawConn // of the epoll descriptor
	file *os.File
	tick *time.Timer // runs expire

	// run's epoll_wait, made once: a closure passed to RawConn.Read
	// escapes, and would be allocated for every wait.
	poll    func(uintptr) bool
	events  []syscall.EpollEvent
	n       int
	pollErr error

	mu        sync.Mutex
	conns     map[int32]*conn // registered connections, by fd
	hot       []hotWait       // hot waits from hotHead on, oldest first (some already over)
	hotHead   int
	timer     time.Duration // when tick fires (mono)
	lastSweep time.Duration // mono
	closed    bool
}

type hotWait struct {
	c     *conn
	since time.Duration // mono
	seq   uint32        // the conn's waitSeq when it began
}

// Wait states of a conn (conn.waitState), guarded by parker.mu.
const (
	notWaiting uint8 = iota
	waitingHot
	parking // told to park; its goroutine is giving back its state
	parked
)

// sweepEvery is how often idle timeouts of parked connections are checked;
// a parked connection outlives its idle timeout by at most this much.
const sweepEvery = time.Second

func newParker() (*parker, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	// Non-blocking, so os.NewFile registers it with Go's poller.
	f := os.NewFile(uintptr(fd), "strait-parker")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &parker{epfd: fd, rc: rc, file: f, conns: make(map[int32]*conn), lastSweep: mono()}
	p.tick = time.AfterFunc(time.Hour, p.expire)
	p.setTimer(p.lastSweep + sweepEvery)
	p.events = make([]syscall.EpollEvent, 256)
	p.poll = func(uintptr) bool {
		p.n, p.pollErr = syscall.EpollWait(p.epfd, p.events, 0)
		return p.n > 0 || (p.pollErr != nil && p.pollErr != syscall.EINTR)
	}
	go p.run()
	return p, nil
}

// register adds c's socket to the set, once. Called with p.mu held.
func (p *parker) register(c *conn) bool {
	if c.registered {
		return true
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollET, Fd: c.fd}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(c.fd), &ev); err != nil {
		return false
	}
	c.registered = true
	p.conns[c.fd] = c
	return true
}

// firedReadable reports whether an edge came for c while it was not
// waiting and its socket still has something to read. Called with p.mu
// held, so an edge after the peek finds c waiting.
func (p *parker) firedReadable(c *conn) bool {
	if !c.fired {
		return false
	}
	c.fired = false
	return peek(uintptr(c.fd)) != syscall.EAGAIN
}

// wait blocks until c is readable (wokeReadable), has been idle for
// parkAfter (wokePark), or the server closes (wokeClose). It returns
// waitUnavailable at once if c cannot wait here.
func (p *parker) wait(c *conn) uint8 {
	if p == nil || c.fd < 0 {
		return waitUnavailable
	}
	p.mu.Lock()
	if p.closed || !p.register(c) {
		p.mu.Unlock()
		return waitUnavailable
	}
	if p.firedReadable(c) {
		p.mu.Unlock()
		return wokeReadable
	}
	if c.wake == nil {
		c.wake = make(chan uint8, 1)
	}
	c.waitState = waitingHot
	c.waitSeq++
	p.hot = append(p.hot, hotWait{c: c, since: c.idleSince, seq: c.waitSeq})
	if at := roundUp(c.idleSince + parkAfter); at < p.timer {
		p.setTimer(at) // the timer may be set for the next sweep only
	}
	p.mu.Unlock()
	return <-c.wake
}

// park hands c, whose goroutine is about to end, to the parker. It reports
// false if c cannot be parked here: it is readable already (bytes came
// while it gave back its state), it has no file descriptor, or the parker
// is closed. The caller then goes on itself.
func (p *parker) park(c *conn) bool {
	if c.fd < 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || !p.register(c) || p.firedReadable(c) {
		return false
	}
	c.waitState = parked
	return true
}

const epollET = 1 << 31 // EPOLLET; package syscall's is negative, an int

// roundUp rounds a time of the parker's timer up to the next 5 ms, so that
// under load the timer is seldom moved.
func roundUp(t time.Duration) time.Duration {
	const step = 5 * time.Millisecond
	return (t/step + 1) * step
}

// setTimer makes expire run at t. Called with p.mu held.
func (p *parker) setTimer(t time.Duration) {
	p.timer = t
	p.tick.Reset(t - mono())
}

// run waits for events on the set and wakes the connections they are for.
func (p *parker) run() {
	events := p.events
	var wake, start []*conn
	for {
		p.n, p.pollErr = 0, nil
		err := p.rc.Read(p.poll)
		n := p.n
		if p.pollErr != nil && p.pollErr != syscall.EINTR {
			err = p.pollErr
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			p.file.Close()
			return
		}
		now := mono()
		for _, ev := range events[:max(n, 0)] {
			c := p.conns[ev.Fd]
			if c == nil {
				continue
			}
			switch c.waitState {
			case waitingHot:
				c.wokeAt = now // read after the wake
				wake = append(wake, c)
			case parked:
				start = append(start, c)
			default: // its goroutine finds out in wait or park
				c.fired = true
				continue
			}
			c.waitState = notWaiting
		}
		p.mu.Unlock()

		for _, c := range wake {
			c.wake <- wokeReadable
		}
		for _, c := range start {
			c.srv.workers.run(task{c: c, resume: true})
		}
		clear(wake)
		clear(start)
		wake, start = wake[:0], start[:0]
		if err != nil {
			p.closeAll(false)
		}
	}
}

// expire ends the hot waits that have lasted parkAfter in parking, and
// closes parked connections whose wait timed out (conn.idleEnd). It runs
// on p.tick.
func (p *parker) expire() {
	var toPark, expired []*conn
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	now := mono()
	for ; p.hotHead < len(p.hot); p.hotHead++ {
		h := p.hot[p.hotHead]
		if h.since+parkAfter > now {
			break
		}
		if h.c.waitState == waitingHot && h.c.waitSeq == h.seq {
			h.c.waitState = parking
			toPark = append(toPark, h.c)
		}
		p.hot[p.hotHead] = hotWait{}
	}
	// The list holds every wait of the last parkAfter (thousands under
	// load): moving it down on every run was 3% of strait's CPU time.
	if p.hotHead >= 1024 && p.hotHead*2 >= len(p.hot) {
		p.hot = p.hot[:copy(p.hot, p.hot[p.hotHead:])]
		p.hotHead = 0
	}
	if now-p.lastSweep >= sweepEvery {
		p.lastSweep = now
		for fd, c := range p.conns {
			if c.waitState == parked && now >= c.idleEnd {
				delete(p.conns, fd)
				syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
				c.waitState, c.registered = notWaiting, false
				expired = append(expired, c)
			}
		}
	}
	// Come back for the next hot wait to end, or the next sweep.
	next := p.lastSweep + sweepEvery
	if p.hotHead < len(p.hot) {
		next = min(next, p.hot[p.hotHead].since+parkAfter)
	}
	p.setTimer(roundUp(next))
	p.mu.Unlock()

	for _, c := range toPark {
		c.wake <- wokePark
	}
	for _, c := range expired {
		c.close()
	}
}

// forget drops a closed connection. Its socket left the epoll set when it
// was closed.
func (p *parker) forget(c *conn) {
	p.mu.Lock()
	if p.conns[c.fd] == c {
		delete(p.conns, c.fd)
	}
	c.registered, c.waitState, c.fired = false, notWaiting, false
	p.mu.Unlock()
}

// closeAll closes every parked connection, wakes every hot wait to close,
// and stops the parker. With serve, a parked connection whose next request
// has begun to arrive is resumed to serve it instead (a woken hot wait
// checks for itself).
func (p *parker) closeAll(serve bool) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.tick.Stop()
	var hot, parkedConns []*conn
	for _, c := range p.conns {
		switch c.waitState {
		case waitingHot:
			hot = append(hot, c)
		case parked:
			parkedConns = append(parkedConns, c)
		}
		c.waitState = notWaiting
	}
	p.conns = make(map[int32]*conn)
	p.hot, p.hotHead = nil, 0
	p.mu.Unlock()
	p.file.SetReadDeadline(aLongTimeAgo) // wakes run, which ends
	for _, c := range hot {
		c.wake <- wokeClose
	}
	for _, c := range parkedConns {
		if serve && c.readable() {
			c.srv.workers.run(task{c: c, resume: true})
			continue
		}
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
