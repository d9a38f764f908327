package tcpproxy

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/straitproxy/strait/cluster"
	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/internal/sockio"
	"github.com/straitproxy/strait/proxy"
)

// A plain relay (no PROXY header to take or send, no ClientHello to
// route by) runs on an event loop: one goroutine per CPU accepts,
// connects and moves bytes for all its connections, through an epoll
// instance of its own, as HAProxy and nginx do. A goroutine per
// connection costs two goroutines and their wake-ups, and the runtime
// poller's registering and unregistering (an fcntl and two epoll_ctl a
// socket). The loop registers a socket once (its close unregisters it),
// knows from EPOLLRDHUP that a peer has ended (no read for the end, and a
// last message leaves with its FIN in one segment), and an idle relay
// holds no goroutine and no stack. A short connection costs 17 system
// calls here, 21 with goroutines, and HAProxy's 19.
//
// The loop parks in the runtime's poller, on its epoll descriptor, so a
// quiet loop holds no thread. What may block goes to a goroutine with
// the connection: a cluster whose circuit breaker is full (the call
// waits for a slot), a failed connect (the retries back off) and an
// endpoint given by name (net resolves it).

const (
	evListener = -1 // the epoll_event's Pad of the listening socket
	evWake     = -2 // of the eventfd Shutdown signals on
)

// loop is one event loop of a Serve.
type loop struct {
	s      *Server
	ep     int // the epoll instance
	epf    *os.File
	eprc   syscall.RawConn
	wake   int // eventfd
	lfd    int // the listening socket, a duplicate of the loop's own; -1 once closed
	events [128]unix.EpollEvent
	nev    int
	poll   func(fd uintptr) bool

	sides  []*lside // by descriptor
	gen    int32
	relays map[*lrelay]struct{}
	ready  []*lrelay // relays with more to move, past their budget
	later  []*lrelay // ready's spare

	tick       time.Duration // how often timeouts are looked at
	nextSweep  int64         // mono, in nanoseconds
	pausedTill int64         // accepting paused, for want of descriptors, until then
	backoff    time.Duration
	acceptDone func() // called once the loop stops accepting
}

// lside is one socket of a loop's relay.
type lside struct {
	r       *lrelay
	fd, idx int // idx: 0 client, 1 upstream
	gen     int32
	in, out bool // readable, writable (as the last event or call said)
	rdhup   bool // the peer has sent its FIN
	failed  bool // an error is pending on the socket (EPOLLERR)
	urgent  bool // urgent data came (EPOLLPRI): a read stops short at its mark
}

// lhalf is one direction of a loop's relay.
type lhalf struct {
	buf     *[]byte // held while bytes read wait to be written
	p       *pipe   // held while a bulk burst lasts
	n, done int     // bytes read (into buf or p), and written of those
	bulk    bool
	eof     bool // the source ended (after what is held)
	shut    bool // its FIN was passed on
}

// lrelay is a connection of a loop: connecting, then relaying.
type lrelay struct {
	sides      [2]lside
	halves     [2]lhalf
	connecting bool
	deadline   int64                    // of the connect
	rsa        syscall.RawSockaddrInet6 // the endpoint's address (or an IPv4 one in it)
	rsaLen     uintptr
	ap         netip.AddrPort
	peer       string
	start      time.Time
	sess       *proxy.Session
	call       cluster.Call
	cl         *cluster.Cluster
	queued     bool // among its loop's ready
	ended      bool
	last       [2]int64 // when each half last moved bytes (mono, in nanoseconds)
	bytes      [2]int64
	first      string
}

// serveLoops accepts on ln with one event loop per CPU, and returns once
// they have all stopped accepting (Shutdown); their relays go on. It
// reports false, having started none, if ln is no TCP socket or the
// loops cannot be made.
func (s *Server) serveLoops(ln syscall.Conn) bool {
	fds, err := listenerDups(ln, runtime.GOMAXPROCS(0))
	if err != nil {
		return false // not a TCP socket, or out of descriptors
	}
	var loops []*loop
	for _, fd := range fds {
		l, lerr := s.newLoop(fd)
		if lerr != nil {
			err = lerr
			break
		}
		loops = append(loops, l)
	}
	if err != nil {
		for _, l := range loops {
			l.close()
		}
		for _, fd := range fds[len(loops):] {
			unix.Close(fd)
		}
		s.o.Logger.Warn("tcp: no event loop; relaying with a goroutine per connection", "listener", s.o.Name, "err", err)
		return false
	}
	accepting := make(chan struct{}, len(loops))
	s.mu.Lock()
	for _, l := range loops {
		l.acceptDone = func() { accepting <- struct{}{} }
		s.loops = append(s.loops, l)
	}
	closing := s.closing
	s.mu.Unlock()
	for _, l := range loops {
		go l.run()
		if closing {
			l.notify()
		}
	}
	for range loops {
		<-accepting
	}
	return true
}

func (s *Server) newLoop(lfd int) (*loop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	l := &loop{s: s, ep: ep, lfd: lfd, wake: -1, relays: make(map[*lrelay]struct{})}
	fail := func(err error) (*loop, error) {
		unix.Close(ep)
		if l.wake >= 0 {
			unix.Close(l.wake)
		}
		return nil, err
	}
	if l.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		l.wake = -1
		return fail(os.NewSyscallError("eventfd", err))
	}
	// The listener level-triggered and exclusive: a connection wakes one
	// loop, which takes what is queued.
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, lfd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Pad: evListener}); err != nil {
		return fail(os.NewSyscallError("epoll_ctl", err))
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, l.wake, &unix.EpollEvent{Events: unix.EPOLLIN, Pad: evWake}); err != nil {
		return fail(os.NewSyscallError("epoll_ctl", err))
	}
	if err := unix.SetNonblock(ep, true); err != nil {
		return fail(os.NewSyscallError("fcntl", err))
	}
	l.epf = os.NewFile(uintptr(ep), "epoll")
	l.eprc, _ = l.epf.SyscallConn()
	l.poll = func(fd uintptr) bool {
		n, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 0, 0, 0)
		if errno != 0 {
			l.nev = 0
			return errno != syscall.EINTR && errno != syscall.EAGAIN
		}
		l.nev = int(n)
		return n > 0
	}
	l.tick = s.tick()
	return l, nil
}

// tick is how often a loop looks at its timeouts: an eighth of the
// shortest, between 10ms and 1s.
func (s *Server) tick() time.Duration {
	t := s.o.ConnectTimeout
	for _, d := range []time.Duration{s.o.IdleTimeout, s.o.HalfClosedTimeout} {
		if d > 0 {
			t = min(t, d)
		}
	}
	return min(max(t/8, 10*time.Millisecond), time.Second)
}

// notify wakes the loop to look at Shutdown's state.
func (l *loop) notify() {
	one := uint64(1)
	unix.Write(l.wake, (*[8]byte)(unsafe.Pointer(&one))[:])
}

// close frees a loop that never ran.
func (l *loop) close() {
	l.epf.Close()
	unix.Close(l.wake)
	unix.Close(l.lfd)
}

func (l *loop) run() {
	defer func() {
		l.s.mu.Lock() // no notify after this
		for i, o := range l.s.loops {
			if o == l {
				l.s.loops = append(l.s.loops[:i], l.s.loops[i+1:]...)
				break
			}
		}
		l.s.mu.Unlock()
		l.epf.Close()
		unix.Close(l.wake)
	}()
	l.nextSweep = int64(mono.Now() + l.tick)
	l.epf.SetReadDeadline(mono.Wall(time.Duration(l.nextSweep)))
	for l.lfd >= 0 || len(l.relays) > 0 {
		var err error
		if len(l.ready) > 0 {
			l.poll(uintptr(l.ep)) // relays wait for their turn: no parking
		} else {
			err = l.eprc.Read(l.poll)
		}
		now := int64(mono.Now()) // monotonic: a clock stepped forward must not time relays out
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			l.s.o.Logger.Error("tcp: event loop", "listener", l.s.o.Name, "err", err)
			l.stopAccepting()
			l.kill()
			return
		}
		for i := range l.nev {
			ev := &l.events[i]
			switch ev.Pad {
			case evListener:
				l.accept(now)
			case evWake:
				l.wakeUp()
			default:
				l.event(ev, now)
			}
		}
		l.nev = 0
		l.ready, l.later = l.later[:0], l.ready
		for _, r := range l.later {
			r.queued = false
			if !r.ended {
				l.pump(r, now)
			}
		}
		if now >= l.nextSweep {
			l.sweep(now)
			l.nextSweep = now + int64(l.tick)
			if l.pausedTill > 0 {
				l.nextSweep = min(l.nextSweep, l.pausedTill)
			}
			l.epf.SetReadDeadline(mono.Wall(time.Duration(l.nextSweep)))
		}
	}
}

// wakeUp takes Shutdown's signal.
func (l *loop) wakeUp() {
	var b [8]byte
	unix.Read(l.wake, b[:])
	l.s.mu.Lock()
	closing, killed := l.s.closing, l.s.killed
	l.s.mu.Unlock()
	if closing {
		l.stopAccepting()
	}
	if killed {
		l.kill()
	}
}

func (l *loop) stopAccepting() {
	if l.lfd >= 0 {
		rawClose(l.lfd) // the listener's own descriptor stays open
		l.lfd = -1
		l.acceptDone()
	}
}

// kill ends every relay: the drain timeout is over.
func (l *loop) kill() {
	for r := range l.relays {
		l.stop(r, closedDrain, false)
	}
}

// accept takes the connections queued, up to a batch.
func (l *loop) accept(now int64) {
	s := l.s
	for range 64 {
		if l.lfd < 0 || l.pausedTill > 0 {
			return
		}
		// Counted before the accept, under the lock Shutdown sets
		// closing under: a connection accepted is one Shutdown waits
		// for, and none is accepted once it began (the process that
		// takes the socket over accepts it instead).
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			l.stopAccepting()
			return
		}
		s.wg.Add(1)
		s.mu.Unlock()
		fd, client, errno := rawAccept(l.lfd)
		if errno != 0 {
			s.wg.Done()
		}
		switch errno {
		case 0:
		case syscall.EAGAIN:
			return
		case syscall.EINTR, syscall.ECONNABORTED:
			continue
		default:
			// Out of descriptors, or worse: accepting pauses (the
			// listener is level-triggered, and would wake the loop at
			// once), the listener out of epoll until then.
			l.backoff = min(max(2*l.backoff, 5*time.Millisecond), time.Second)
			l.pausedTill = now + int64(l.backoff)
			l.nextSweep = min(l.nextSweep, l.pausedTill)
			l.epf.SetReadDeadline(mono.Wall(time.Duration(l.nextSweep)))
			rawEpollCtl(l.ep, unix.EPOLL_CTL_DEL, l.lfd, &unix.EpollEvent{})
			s.o.Logger.Warn("accept failed; retrying", "listener", s.o.Name, "err", os.NewSyscallError("accept4", errno), "retry_in", l.backoff)
			return
		}
		l.backoff = 0
		s.Stats.Accepted.Add(1)
		if s.Stats.Active.Add(1) > int64(s.o.MaxConns) {
			s.Stats.Active.Add(-1)
			s.Stats.OverLimit.Add(1)
			s.wg.Done()
			rawResetOnClose(fd)
			rawClose(fd)
			continue
		}
		l.begin(fd, client, now)
	}
}

// begin picks an endpoint for the client fd and connects to it.
func (l *loop) begin(fd int, client netip.AddrPort, now int64) {
	s := l.s
	r := &lrelay{cl: s.o.Cluster, start: mono.Wall(time.Duration(now)), sess: &proxy.Session{ClientAddr: client}}
	r.sides[0] = lside{r: r, fd: fd, idx: 0}
	r.sides[1] = lside{r: r, fd: -1, idx: 1}
	if r.cl.ProxyProtocol() != 0 {
		l.handOff(r, resume{}) // a PROXY header to send first
		return
	}
	r.sess.Stats.Attempts++
	r.call.Try = true
	peer, err := r.cl.Peer(r.sess, &r.call)
	r.call.Try = false
	if err != nil {
		// A full cluster's wait, or no endpoint: a goroutine waits, or
		// says so.
		r.sess.Stats.Attempts--
		l.handOff(r, resume{})
		return
	}
	r.peer = peer.Addr
	ap, perr := netip.ParseAddrPort(peer.Addr)
	if perr != nil || ap.Addr().Zone() != "" {
		l.handOff(r, resume{peer: peer}) // a name or a zone: net's
		return
	}
	r.ap = ap
	l.connect(r, ap, now)
}

// connect starts a connect to ap.
func (l *loop) connect(r *lrelay, ap netip.AddrPort, now int64) {
	family, n := rawSockaddr(ap, &r.rsa)
	r.rsaLen = n
	fd, err := rawSocket(family)
	if err != nil {
		l.connectFailed(r, os.NewSyscallError("socket", err))
		return
	}
	r.sides[1].fd = fd
	if err := rawNoDelay(fd); err != nil {
		l.connectFailed(r, os.NewSyscallError("setsockopt", err))
		return
	}
	switch errno := rawConnect(fd, &r.rsa, n); errno {
	case 0, syscall.EINPROGRESS, syscall.EINTR:
	default:
		l.connectFailed(r, os.NewSyscallError("connect", errno))
		return
	}
	if err := l.register(&r.sides[1]); err != nil {
		l.connectFailed(r, err)
		return
	}
	l.relays[r] = struct{}{}
	r.connecting = true
	r.deadline = now + int64(l.s.o.ConnectTimeout)
	l.connected(r, now)
}

// connected checks whether r's connect is done (by repeating it: see
// connectTCP) and starts relaying if so.
func (l *loop) connected(r *lrelay, now int64) {
	switch errno := rawConnect(r.sides[1].fd, &r.rsa, r.rsaLen); errno {
	case syscall.EALREADY, syscall.EINPROGRESS, syscall.EINTR:
		return // an event says when
	case 0, syscall.EISCONN:
	default:
		delete(l.relays, r)
		l.connectFailed(r, os.NewSyscallError("connect", errno))
		return
	}
	r.connecting = false
	if err := l.register(&r.sides[0]); err != nil {
		l.stop(r, closedReset, false)
		return
	}
	r.sides[0].in, r.sides[0].out, r.sides[1].out = true, true, true // tried at once
	r.last = [2]int64{now, now}
	l.pump(r, now)
}

// connectFailed hands r's client to a goroutine that counts the failure
// and retries, or ends the connection.
func (l *loop) connectFailed(r *lrelay, err error) {
	up := &r.sides[1]
	if up.fd >= 0 {
		l.forget(up)
		rawClose(up.fd)
		up.fd = -1
	}
	err = &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(r.ap), Err: err}
	l.handOff(r, resume{addr: r.peer, failed: connectError(r.peer, err)})
}

// handOff gives r's client, not yet relayed (nor registered), to a
// goroutine that goes on from where r is.
func (l *loop) handOff(r *lrelay, from resume) {
	s := l.s
	c := newSock(r.sides[0].fd, r.sess.ClientAddr)
	s.mu.Lock()
	s.setup[c] = struct{}{}
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer s.Stats.Active.Add(-1)
		s.finish(c, r.cl, r.sess, &r.call, r.start, "", from)
	}()
}

// register adds sd to the loop's epoll, edge-triggered.
func (l *loop) register(sd *lside) error {
	l.gen++
	if l.gen < 0 {
		l.gen = 0
	}
	sd.gen = l.gen
	for sd.fd >= len(l.sides) {
		l.sides = append(l.sides, make([]*lside, max(len(l.sides), 64))...)
	}
	l.sides[sd.fd] = sd
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLPRI | unix.EPOLLET, Fd: int32(sd.fd), Pad: sd.gen}
	if err := rawEpollCtl(l.ep, unix.EPOLL_CTL_ADD, sd.fd, &ev); err != nil {
		l.sides[sd.fd] = nil
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// forget drops sd from the loop's table (its close drops it from epoll).
func (l *loop) forget(sd *lside) {
	if sd.fd >= 0 && sd.fd < len(l.sides) && l.sides[sd.fd] == sd {
		l.sides[sd.fd] = nil
	}
}

func (l *loop) event(ev *unix.EpollEvent, now int64) {
	if int(ev.Fd) >= len(l.sides) {
		return
	}
	sd := l.sides[ev.Fd]
	if sd == nil || sd.gen != ev.Pad {
		return // a socket closed since
	}
	if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		sd.in = true
	}
	if ev.Events&unix.EPOLLRDHUP != 0 {
		sd.rdhup = true
	}
	if ev.Events&unix.EPOLLERR != 0 {
		sd.failed = true
	}
	if ev.Events&unix.EPOLLPRI != 0 {
		sd.urgent, sd.in = true, true
	}
	if ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		sd.out = true
	}
	r := sd.r
	if r.connecting {
		if sd.idx == 1 && ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			l.connected(r, now)
		}
		return
	}
	l.pump(r, now)
}

// pump moves what bytes it can, both ways, until no side can do more.
func (l *loop) pump(r *lrelay, now int64) {
	for budget, progress := pumpBudget, true; progress; budget-- {
		if budget == 0 {
			// A fast pair could keep the loop for good: it goes on
			// after the others have had their turn.
			if !r.queued {
				r.queued = true
				l.ready = append(l.ready, r)
			}
			return
		}
		progress = false
		for dir := range r.halves {
			p, ended := l.move(r, dir, now)
			if ended {
				return
			}
			progress = progress || p
		}
	}
}

// pumpBudget is how many rounds of moves a relay gets at a time: up to
// 2 MiB each way by splice.
const pumpBudget = 32

// move moves dir's bytes once: a write of what is held, or a read; and
// passes the end of the stream on. ended: r was stopped.
func (l *loop) move(r *lrelay, dir int, now int64) (progress, ended bool) {
	h, src, dst := &r.halves[dir], &r.sides[dir], &r.sides[1-dir]
	if h.done < h.n {
		if !dst.out {
			return false, false
		}
		var m int
		var err error
		if h.buf != nil {
			flags := unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL
			if h.eof {
				flags |= unix.MSG_MORE // the FIN follows: one segment
			}
			var errno syscall.Errno
			m, errno = send(dst.fd, (*h.buf)[h.done:h.n], flags)
			if errno != 0 {
				err = errno
			}
		} else {
			m, err = spliceTo(h.p, dst.fd, h.n-h.done)
		}
		switch {
		case err == unix.EAGAIN:
			dst.out = false
			return false, false
		case err != nil:
			l.stop(r, closedReset, isReset(err))
			return false, true
		}
		h.done += m
		r.bytes[dir] += int64(m)
		l.s.total(dir).Add(int64(m))
		r.last[dir] = now
		if h.done == h.n {
			h.release(l.s.pipes, false)
		}
		return true, false
	}
	if !h.eof && src.in {
		if !l.read(r, dir, h, src) {
			return false, true
		}
		if h.n > 0 {
			r.last[dir] = now
			return true, false
		}
		if !h.eof {
			return false, false
		}
	}
	if h.eof && !h.shut {
		h.shut = true
		if r.first == "" {
			r.first = []string{closedClient, closedUpstream}[dir]
		}
		if r.halves[1-dir].shut {
			l.end(r)
			return true, true
		}
		if rawShutdownWrite(dst.fd) != nil {
			l.stop(r, closedReset, false)
			return false, true
		}
		return true, false
	}
	return false, false
}

// read reads what src has into h, by read or splice. It reports false if
// it stopped r.
func (l *loop) read(r *lrelay, dir int, h *lhalf, src *lside) bool {
	h.n, h.done = 0, 0
	var n int
	var err error
	if h.bulk {
		if h.p == nil {
			if h.p, err = l.s.pipes.get(); err != nil {
				l.stop(r, closedReset, false)
				return false
			}
		}
		if n, err = spliceFrom(src.fd, h.p); err == unix.EAGAIN && sockio.Peek(uintptr(src.fd)) == 0 {
			// Bytes are there, and splice takes none: it stops at
			// urgent data, where read goes on past the urgent byte. At
			// once: no other edge may come.
			h.release(l.s.pipes, false)
			src.urgent, h.bulk = true, false
			return l.read(r, dir, h, src)
		}
	} else {
		if h.buf == nil {
			h.buf = copyBufs.Get().(*[]byte)
		}
		var errno syscall.Errno
		if n, errno = sockio.RawIO(syscall.SYS_READ, uintptr(src.fd), *h.buf); errno != 0 {
			err = errno
		}
	}
	switch {
	case err == unix.EAGAIN:
		src.in = false
		h.release(l.s.pipes, false)
	case err != nil:
		l.stop(r, closedReset, isReset(err))
		return false
	case n == 0:
		h.eof = true
		h.release(l.s.pipes, false)
	default:
		h.n = n
		h.bulk = n >= copySize
		// The peer's FIN is in, after these bytes read: the end is known
		// without another read, and the FIN can go with them. Not after
		// a reset, which a read must report, nor once urgent data came:
		// a read stops short at its mark.
		h.eof = h.buf != nil && src.rdhup && !src.failed && !src.urgent && n < copySize
	}
	return true
}

// release gives back what h holds; a pipe that may hold bytes is closed.
func (h *lhalf) release(ps *pipes, dirty bool) {
	if h.p != nil {
		if dirty {
			h.p.close()
		} else {
			ps.put(h.p)
		}
		h.p = nil
	}
	if h.buf != nil {
		copyBufs.Put(h.buf)
		h.buf = nil
	}
}

// sweep ends relays past their timeouts, and connects past theirs.
func (l *loop) sweep(now int64) {
	if l.pausedTill > 0 && now >= l.pausedTill && l.lfd >= 0 {
		l.pausedTill = 0
		rawEpollCtl(l.ep, unix.EPOLL_CTL_ADD, l.lfd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Pad: evListener})
		l.accept(now)
	}
	idle, halfIdle := int64(l.s.o.IdleTimeout), int64(l.s.o.HalfClosedTimeout)
	for r := range l.relays {
		if r.connecting {
			if now >= r.deadline {
				delete(l.relays, r)
				l.connectFailed(r, os.ErrDeadlineExceeded)
			}
			continue
		}
		t := idle
		if (r.halves[0].eof || r.halves[1].eof) && halfIdle > 0 && (t == 0 || halfIdle < t) {
			t = halfIdle
		}
		if t == 0 {
			continue
		}
		stalled := false
		for dir := range r.halves {
			if h := &r.halves[dir]; h.done < h.n {
				if now-r.last[dir] >= t {
					stalled = true
				}
			}
		}
		writing := r.halves[0].done < r.halves[0].n || r.halves[1].done < r.halves[1].n
		switch {
		case stalled:
			l.stop(r, closedStalled, false)
		case !writing && now-max(r.last[0], r.last[1]) >= t:
			l.stop(r, closedIdle, false)
		}
	}
}

// stop ends r at once; with reset, each side gets a reset, not a FIN.
func (l *loop) stop(r *lrelay, how string, reset bool) {
	if r.first == "" {
		r.first = how
	}
	for i := range r.sides {
		if sd := &r.sides[i]; sd.fd >= 0 && reset {
			rawResetOnClose(sd.fd)
		}
	}
	l.end(r)
}

// end closes r's sockets and accounts for it.
func (l *loop) end(r *lrelay) {
	r.ended = true
	delete(l.relays, r)
	for i := range r.sides {
		if sd := &r.sides[i]; sd.fd >= 0 {
			l.forget(sd)
			rawClose(sd.fd)
			sd.fd = -1
		}
		r.halves[i].release(l.s.pipes, true)
	}
	s := l.s
	var e *proxy.Error
	if r.connecting {
		e = &proxy.Error{Side: proxy.Internal, Kind: proxy.KindClosed, Where: "the drain timeout ended the connect to " + r.peer}
	}
	r.cl.Done(r.sess, &r.call, nil)
	s.log(r.sess, r.start, &outcome{in: r.bytes[0], out: r.bytes[1], first: r.first}, r.peer, "", e)
	s.Stats.Active.Add(-1)
	s.wg.Done()
}

// send is send(2) with flags on a non-blocking socket (see sockio.RawIO).
func send(fd int, p []byte, flags int) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), uintptr(flags), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), 0
}
