package park

import (
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/internal/sockio"
)

// Parker waits for the next request of keep-alive connections on an epoll
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
//   - hot (Wait): its goroutine blocks, keeping its buffers, for up to
//     After;
//   - parked (Park): after that its goroutine has given back the request
//     state and ended, and a connection that becomes readable resumes on
//     another (Conn.Resume, see Workers). A parked connection costs its
//     small struct and the socket, about a kilobyte.
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
type Parker struct {
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
	conns     map[int32]*Waiter // registered connections, by fd
	hot       []hotWait         // hot waits from hotHead on, oldest first (some already over)
	hotHead   int
	timer     time.Duration // when tick fires (mono)
	lastSweep time.Duration // mono
	closed    bool
}

type hotWait struct {
	c     *Waiter
	since time.Duration // mono
	seq   uint32        // the Waiter's seq when it began
}

// Conn is a connection the parker holds.
type Conn interface {
	// Resume serves the connection, parked until now, whose next request
	// has become readable. It must not block the parker: it hands the
	// connection to a goroutine (Workers.Run).
	Resume()
	// Close closes the connection: its wait timed out, or the parker is
	// closing.
	Close()
}

// Waiter is what the parker keeps of one connection; the connection holds
// it. The parker's fields (state, registered, fired, seq) are guarded by
// its mutex; wake ends a hot wait.
type Waiter struct {
	fd    int32
	owner Conn
	// IdleSince is when the connection last became idle, and IdleEnd
	// when its wait for a request times out (mono); its owner sets them
	// before each wait.
	IdleSince, IdleEnd time.Duration
	// WokeAt is when the parker woke it last (mono); read it after Wait
	// returns Readable.
	WokeAt time.Duration

	state      waitState
	registered bool // the socket is in the parker's epoll set
	fired      bool // an edge came while it was not waiting
	seq        uint32
	wake       chan Wake
}

// Init readies w for the connection owner, whose socket is fd (-1 if
// unknown: it cannot wait here).
func (w *Waiter) Init(fd int32, owner Conn) { w.fd, w.owner = fd, owner }

// Registered reports whether w is in a parker's set, from which
// Parker.Forget must drop it when its connection closes.
func (w *Waiter) Registered() bool { return w.registered }

// Wake is how a hot wait (Parker.Wait) ends.
type Wake uint8

const (
	Readable    Wake = iota // the next request is readable
	Idle                    // idle for After: give back the state and Park
	Closing                 // the parker is closing
	Unavailable             // not waited: wait some other way
)

// waitState is where a Waiter is, guarded by Parker.mu.
type waitState uint8

const (
	notWaiting waitState = iota
	waitingHot
	parking // told to park; its goroutine is giving back its state
	parked
)

// After is how long a connection waits for its next request hot, holding
// its request state, goroutine and read buffer, before it parks. Busy
// keep-alive connections send their next request sooner and never pay for
// parking (a goroutine start); idle ones shed about 10 KiB each almost at
// once, so a burst of connections that go idle together never holds much.
// Measured with 10,000 connections making one request each: 20 ms gives
// 2.7-3.1 KiB RSS per idle connection, 100 ms 3.9-4.3 KiB (more were still
// unparked, with stacks and buffers, at the peak the runtime keeps).
const After = 20 * time.Millisecond

// sweepEvery is how often idle timeouts of parked connections are checked;
// a parked connection outlives its idle timeout by at most this much.
const sweepEvery = time.Second

// New makes a parker. It reports errors.ErrUnsupported where there is
// none (not Linux).
func New() (*Parker, error) {
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
	p := &Parker{epfd: fd, rc: rc, file: f, conns: make(map[int32]*Waiter), lastSweep: mono.Now()}
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
func (p *Parker) register(c *Waiter) bool {
	if c.registered {
		return true
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollET, Fd: c.fd}
	err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(c.fd), &ev)
	if err == syscall.EEXIST {
		// Its socket is in the set already, for a waiter that was
		// forgotten while the socket stayed open: one that went on as
		// another protocol (HTTP/2 after HTTP/1's first read).
		err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(c.fd), &ev)
	}
	if err != nil {
		return false
	}
	c.registered = true
	p.conns[c.fd] = c
	return true
}

// firedReadable reports whether an edge came for c while it was not
// waiting and its socket still has something to read. Called with p.mu
// held, so an edge after the peek finds c waiting.
func (p *Parker) firedReadable(c *Waiter) bool {
	if !c.fired {
		return false
	}
	c.fired = false
	return sockio.Readable(c.fd)
}

// Wait blocks until c is readable (Readable), has been idle for After
// since c.IdleSince (Idle), or the parker closes (Closing). It returns
// Unavailable at once if c cannot wait here, as when p is nil.
func (p *Parker) Wait(c *Waiter) Wake {
	if p == nil || c.fd < 0 {
		return Unavailable
	}
	p.mu.Lock()
	if p.closed || !p.register(c) {
		p.mu.Unlock()
		return Unavailable
	}
	if p.firedReadable(c) {
		p.mu.Unlock()
		return Readable
	}
	if c.wake == nil {
		c.wake = make(chan Wake, 1)
	}
	c.state = waitingHot
	c.seq++
	p.hot = append(p.hot, hotWait{c: c, since: c.IdleSince, seq: c.seq})
	if at := roundUp(c.IdleSince + After); at < p.timer {
		p.setTimer(at) // the timer may be set for the next sweep only
	}
	p.mu.Unlock()
	return <-c.wake
}

// Park hands c, whose goroutine is about to end, to the parker, until its
// next request is readable (Conn.Resume) or c.IdleEnd passes (Conn.Close).
// It reports false if c cannot be parked here: it is readable already
// (bytes came while it gave back its state), it has no file descriptor,
// or the parker is closed or nil. The caller then goes on itself.
func (p *Parker) Park(c *Waiter) bool {
	if p == nil || c.fd < 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || !p.register(c) || p.firedReadable(c) {
		return false
	}
	c.state = parked
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
func (p *Parker) setTimer(t time.Duration) {
	p.timer = t
	p.tick.Reset(t - mono.Now())
}

// run waits for events on the set and wakes the connections they are for.
func (p *Parker) run() {
	events := p.events
	var wake, start []*Waiter
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
		now := mono.Now()
		for _, ev := range events[:max(n, 0)] {
			c := p.conns[ev.Fd]
			if c == nil {
				continue
			}
			switch c.state {
			case waitingHot:
				c.WokeAt = now // read after the wake
				wake = append(wake, c)
			case parked:
				start = append(start, c)
			default: // its goroutine finds out in wait or park
				c.fired = true
				continue
			}
			c.state = notWaiting
		}
		p.mu.Unlock()

		for _, c := range wake {
			c.wake <- Readable
		}
		for _, c := range start {
			c.owner.Resume()
		}
		clear(wake)
		clear(start)
		wake, start = wake[:0], start[:0]
		if err != nil {
			p.CloseAll(false)
		}
	}
}

// expire ends the hot waits that have lasted After in parking, and closes
// parked connections whose wait timed out (Waiter.IdleEnd). It runs on
// p.tick.
func (p *Parker) expire() {
	var toPark, expired []*Waiter
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	now := mono.Now()
	for ; p.hotHead < len(p.hot); p.hotHead++ {
		h := p.hot[p.hotHead]
		if h.since+After > now {
			break
		}
		if h.c.state == waitingHot && h.c.seq == h.seq {
			h.c.state = parking
			toPark = append(toPark, h.c)
		}
		p.hot[p.hotHead] = hotWait{}
	}
	// The list holds every wait of the last After (thousands under
	// load): moving it down on every run was 3% of strait's CPU time.
	if p.hotHead >= 1024 && p.hotHead*2 >= len(p.hot) {
		p.hot = p.hot[:copy(p.hot, p.hot[p.hotHead:])]
		p.hotHead = 0
	}
	if now-p.lastSweep >= sweepEvery {
		p.lastSweep = now
		for fd, c := range p.conns {
			if c.state == parked && now >= c.IdleEnd {
				delete(p.conns, fd)
				syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
				c.state, c.registered = notWaiting, false
				expired = append(expired, c)
			}
		}
	}
	// Come back for the next hot wait to end, or the next sweep.
	next := p.lastSweep + sweepEvery
	if p.hotHead < len(p.hot) {
		next = min(next, p.hot[p.hotHead].since+After)
	}
	p.setTimer(roundUp(next))
	p.mu.Unlock()

	for _, c := range toPark {
		c.wake <- Idle
	}
	for _, c := range expired {
		c.owner.Close()
	}
}

// Forget drops a closed connection. Its socket left the epoll set when it
// was closed.
func (p *Parker) Forget(c *Waiter) {
	p.mu.Lock()
	if p.conns[c.fd] == c {
		delete(p.conns, c.fd)
	}
	c.registered, c.state, c.fired = false, notWaiting, false
	p.mu.Unlock()
}

// CloseAll closes every parked connection, wakes every hot wait with
// Closing, and stops the parker. With serve, a parked connection whose next
// request has begun to arrive is resumed to serve it instead (a woken hot
// wait checks for itself).
func (p *Parker) CloseAll(serve bool) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.tick.Stop()
	var hot, parkedConns []*Waiter
	for _, c := range p.conns {
		switch c.state {
		case waitingHot:
			hot = append(hot, c)
		case parked:
			parkedConns = append(parkedConns, c)
		}
		c.state = notWaiting
	}
	p.conns = make(map[int32]*Waiter)
	p.hot, p.hotHead = nil, 0
	p.mu.Unlock()
	p.file.SetReadDeadline(sockio.Past) // wakes run, which ends
	for _, c := range hot {
		c.wake <- Closing
	}
	for _, c := range parkedConns {
		if serve && sockio.Readable(c.fd) {
			c.owner.Resume()
			continue
		}
		c.owner.Close()
	}
}
