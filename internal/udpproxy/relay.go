//go:build linux

package udpproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/straitproxy/strait/cluster"
	"github.com/straitproxy/strait/internal/fdlimit"
	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/internal/udpxdp"
	"github.com/straitproxy/strait/proxy"
)

// batchSize is how many datagrams one recvmmsg or sendmmsg moves at most.
const batchSize = 32

// bufSize is a receive buffer's: the largest datagram, or a GRO run of
// datagrams (at most 64 KiB), and one byte to see truncation.
const bufSize = 1 << 16

// drainQuiet ends a draining flow that moved nothing for that long.
const drainQuiet = time.Second

// maxBuckets bounds the prefixes whose new-flow rate a shard tracks: a
// flood from more prefixes than that opens no flow until some refill.
const maxBuckets = 1 << 16

// Server relays the datagrams of one listener. Serve runs it on its
// sockets, Shutdown drains it.
type Server struct {
	o     Options
	Stats Stats

	mu       sync.Mutex
	serving  bool
	shards   []*shard // made by New
	attached []string // the interfaces it attached the XDP program to
	draining atomic.Bool
	stopped  atomic.Bool   // drain over: shards close their flows and end
	done     chan struct{} // closed when Serve's shards have ended
}

// New returns a Server with o, its zero fields the defaults, ready to
// relay what reaches conns (the sockets of one address, with
// SO_REUSEPORT), one shard each. Each shard reads and sends on a
// descriptor of its own (a dup), so that the sockets may be closed, or
// passed to another server, while this one drains. It does not close
// conns. MaxFlows is bounded by half the process's descriptor limit: a
// flow holds one.
func New(o Options, conns []*net.UDPConn, feat Features) (*Server, error) {
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxFlows <= 0 {
		o.MaxFlows = DefaultMaxFlows
	}
	if lim := fdlimit.Limit(); lim > 0 && int64(o.MaxFlows) > lim/2 {
		if o.Logger != nil {
			o.Logger.Warn("udp: max_flows is more than half the file descriptor limit allows; it is lowered",
				"listener", o.Name, "max_flows", o.MaxFlows, "fd_limit", lim, "allows", lim/2)
		}
		o.MaxFlows = int(max(lim/2, 1))
	}
	if o.NewFlowsPerPrefix == 0 {
		o.NewFlowsPerPrefix = DefaultNewFlowsPerPrefix
	}
	if o.BatchDelay == 0 {
		o.BatchDelay = DefaultBatchDelay
	}
	if o.FlowRate > 0 && o.FlowBurst <= 0 {
		o.FlowBurst = max(int(o.FlowRate/10), 16)
	}
	s := &Server{o: o, done: make(chan struct{})}
	for _, c := range conns {
		sh, err := newShard(s, c, feat, len(conns))
		if err != nil {
			for _, sh := range s.shards {
				sh.closeAll()
			}
			return nil, err
		}
		s.shards = append(s.shards, sh)
	}
	if o.XDP != nil {
		for _, ifc := range o.XDPInterfaces {
			if err := o.XDP.Attach(ifc, o.XDPMode); err != nil {
				if o.Logger != nil {
					o.Logger.Warn("udp: the XDP program cannot attach; flows through this interface stay in user space", "listener", o.Name, "interface", ifc, "err", err)
				}
				continue
			}
			s.attached = append(s.attached, ifc)
		}
		if len(s.attached) == 0 {
			s.o.XDP = nil
		}
	}
	return s, nil
}

// ended is the end of the server: its shards have closed their flows.
func (s *Server) ended() {
	for _, ifc := range s.attached {
		s.o.XDP.Detach(ifc)
	}
	close(s.done)
}

// Probe returns what the kernel offers UDP sockets: GSO (UDP_SEGMENT,
// Linux 4.18) and GRO (UDP_GRO, Linux 5.0).
func Probe() (Features, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return Features{}, fmt.Errorf("probing UDP offloads: %w", err)
	}
	defer unix.Close(fd)
	var f Features
	_, err = unix.GetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT)
	f.GSO = err == nil
	f.GRO = unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_GRO, 1) == nil
	return f, nil
}

// Serve relays datagrams until Shutdown has drained the server.
func (s *Server) Serve() error {
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		if s.draining.Load() {
			<-s.done // shut down before it served: nothing to do
			return nil
		}
		return errors.New("udpproxy: Serve called twice")
	}
	s.serving = true
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, sh := range s.shards {
		wg.Go(sh.run)
	}
	wg.Wait()
	s.ended()
	return nil
}

// Shutdown stops taking datagrams from clients at once, relays the
// replies of open flows until ctx ends or no flow is left, and then
// closes every flow. The listening sockets stay open for whoever takes
// them over. It returns ctx's error if the drain was cut short.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining.Store(true)
	shards, serving := s.shards, s.serving
	s.serving = true // a Serve after this has nothing to do
	s.mu.Unlock()
	if !serving {
		for _, sh := range shards {
			sh.closeAll()
		}
		s.ended()
		return nil
	}
	for _, sh := range shards {
		sh.wake()
	}
	var err error
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.stopped.Store(true)
	for _, sh := range shards {
		sh.wake()
	}
	<-s.done
	return err
}

// flow is one client address's datagrams and its upstream socket.
type flow struct {
	client netip.AddrPort
	local  netip.Addr // the address the client sent to, on a wildcard listener
	sa     unix.RawSockaddrInet6
	saLen  uint32
	fd     int // connected to the endpoint
	upSeg  int // the largest GSO segment its path takes (its MTU's payload)
	slot   int32
	gen    uint32
	peer   string

	sess proxy.Session
	call cluster.Call

	start, last    time.Duration // mono
	answered       bool
	fast           bool             // forwarded in the kernel (udpxdp) too
	xf             udpxdp.Flow      // its addresses there, once it was offered to the kernel
	kin, kout      int64            // datagrams the kernel forwarded, in and out
	tat            [2]time.Duration // its rate, in and out: the next datagram's theoretical arrival time (GCRA)
	older, younger *flow            // in the shard's list of unanswered flows

	in, out           int64 // datagrams
	inBytes, outBytes int64
}

// bucket is a source prefix's new-flow allowance.
type bucket struct {
	tokens float64
	last   time.Duration
}

// shard is the event loop of one listening socket.
type shard struct {
	s       *Server
	lnfd    int            // the shard's own dup of the listening socket
	fam     int            // the listening socket's address family
	pktinfo bool           // bound to a wildcard address: replies go from where the client sent to
	front   netip.AddrPort // the listening address (its port, on a wildcard one)
	downSeg int            // the largest GSO segment sent to clients: the listener's MTU's payload
	gso     bool
	gro     bool

	ep     *os.File // the epoll set, in Go's poller
	epfd   int
	epRaw  syscall.RawConn
	events []unix.EpollEvent
	poll   func(uintptr) bool // pollOnce
	// What pollOnce saw: events, an error, and how often it was called
	// (more than once: the loop waited).
	nEvents, tries int
	pollErr        error

	flows      map[netip.AddrPort]*flow
	maxFlows   int // this shard's share of MaxFlows
	slots      []*flow
	free       []int32
	oldest     *flow // unanswered flows, the oldest first
	youngest   *flow
	buckets    map[netip.Prefix]*bucket
	rate       float64 // new flows a second per prefix, this shard's share; <= 0: no limit
	lastSwept  time.Duration
	sweepEvery time.Duration

	now       time.Duration
	lastRound time.Duration // the last round that moved datagrams
	parked    time.Duration // when the loop last waited in Go's poller, or yielded
	waited    bool          // moderate waited after the last round
	yield     float64       // datagrams a wait gathers, a moving average
	skip      int           // rounds left before a wait is tried again
	backoff   int           // the rounds skipped after the last try
	delay     unix.Timespec // nanosleep's

	fromClients *batch  // receives from the listening socket
	rxFlows     []*flow // the flow of each of its datagrams
	rxSegs      []int   // and its GRO segment size
	toUpstream  *batch  // a run of one flow's datagrams
	upFlow      *flow   // the flow toUpstream holds datagrams of
	nUp         int
	fromUps     *batch // receives from upstream sockets
	nBuf        int    // of its buffers, those holding replies not yet sent
	toClients   *batch // those replies, to any clients
	nDown       int
	split       *batch // a GRO run sent one datagram at a time

	interval, burst time.Duration // a flow's rate: time per datagram, and how far a burst runs ahead; 0: no limit

	counts counters
	gens   uint32
	logged map[string]time.Duration // last log of a kind of trouble, to log each at most once a minute
}

// counters are what a loop counts between two publishes.
type counters struct {
	in, out, inBytes, outBytes, sendDrops, tooBig, batches, gsoSends, groReceives, rateDrops int64
}

// lnTag marks the listening socket's events from its flows' slots.
const lnTag = ^uint64(0)

func newShard(s *Server, c *net.UDPConn, feat Features, shards int) (*shard, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	sh := &shard{
		s:           s,
		lnfd:        -1,
		gso:         feat.GSO,
		gro:         feat.GRO && feat.GSO, // what GRO joins, GSO must split
		events:      make([]unix.EpollEvent, batchSize),
		flows:       make(map[netip.AddrPort]*flow),
		buckets:     make(map[netip.Prefix]*bucket),
		fromClients: newBatch(batchSize, bufSize),
		rxFlows:     make([]*flow, batchSize),
		rxSegs:      make([]int, batchSize),
		toUpstream:  newBatch(batchSize, 0),
		fromUps:     newBatch(batchSize, bufSize),
		toClients:   newBatch(batchSize, 0),
		split:       newBatch(batchSize, 0),
		sweepEvery:  min(time.Second, s.o.IdleTimeout/4),
		logged:      make(map[string]time.Duration),
		now:         mono.Now(),
	}
	if s.o.NewFlowsPerPrefix > 0 {
		sh.rate = float64(s.o.NewFlowsPerPrefix) / float64(shards)
	}
	// Each shard holds its share of the table (the kernel spreads
	// clients over the sockets by their addresses): a full one evicts
	// from its own unanswered flows.
	sh.maxFlows = max((s.o.MaxFlows+shards-1)/shards, 1)
	sh.lastSwept = sh.now
	sh.poll = sh.pollOnce
	if s.o.FlowRate > 0 {
		sh.interval = time.Duration(float64(time.Second) / s.o.FlowRate)
		sh.burst = time.Duration(max(s.o.FlowBurst-1, 0)) * sh.interval
	}
	var derr error
	rc.Control(func(fd uintptr) {
		sh.lnfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	local, _ := c.LocalAddr().(*net.UDPAddr)
	if derr != nil || sh.lnfd < 0 || local == nil {
		return nil, fmt.Errorf("udpproxy: the listening socket: %w", cmpErr(derr, errors.New("closed")))
	}
	sh.fam = unix.AF_INET6
	if local.IP.To4() != nil && !local.IP.IsUnspecified() || local.IP.Equal(net.IPv4zero) && len(local.IP) == net.IPv4len {
		sh.fam = unix.AF_INET
	}
	if sa, err := unix.Getsockname(sh.lnfd); err == nil {
		if _, ok := sa.(*unix.SockaddrInet4); ok {
			sh.fam = unix.AF_INET
		}
	}
	sh.pktinfo = local.IP.IsUnspecified()
	sh.front = local.AddrPort()
	sh.downSeg = listenerSegment(local.IP, sh.fam)
	// What another server left set on the socket is set again, to what
	// this one wants.
	unix.SetsockoptInt(sh.lnfd, unix.SOL_UDP, unix.UDP_GRO, boolInt(sh.gro))
	if sh.fam == unix.AF_INET6 {
		unix.SetsockoptInt(sh.lnfd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, boolInt(sh.pktinfo))
	}
	unix.SetsockoptInt(sh.lnfd, unix.IPPROTO_IP, unix.IP_PKTINFO, boolInt(sh.pktinfo))
	// Room for bursts: 4 MiB, past net.core.rmem_max if strait may.
	if unix.SetsockoptInt(sh.lnfd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) != nil {
		unix.SetsockoptInt(sh.lnfd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}

	sh.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		unix.Close(sh.lnfd)
		return nil, fmt.Errorf("udpproxy: epoll: %w", err)
	}
	if err := unix.SetNonblock(sh.epfd, true); err != nil {
		unix.Close(sh.epfd)
		unix.Close(sh.lnfd)
		return nil, fmt.Errorf("udpproxy: epoll: %w", err)
	}
	// In Go's poller, the epoll set is readable when a socket in it is:
	// the loop parks as any goroutine waiting on a socket does.
	sh.ep = os.NewFile(uintptr(sh.epfd), "epoll")
	if sh.epRaw, err = sh.ep.SyscallConn(); err != nil {
		sh.ep.Close()
		unix.Close(sh.lnfd)
		return nil, err
	}
	if err := sh.watch(sh.lnfd, lnTag); err != nil {
		sh.ep.Close()
		unix.Close(sh.lnfd)
		return nil, fmt.Errorf("udpproxy: epoll: %w", err)
	}
	return sh, nil
}

// listenerSegment is the largest GSO segment a listener bound to ip
// sends its clients: the payload of its interface's MTU, or of 1500 for
// a wildcard (or unknown) address.
func listenerSegment(ip net.IP, fam int) int {
	hdr := 48
	if fam == unix.AF_INET {
		hdr = 28
	}
	mtu := 1500
	if !ip.IsUnspecified() {
		ifs, _ := net.Interfaces()
		for _, ifc := range ifs {
			addrs, _ := ifc.Addrs()
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
					mtu = ifc.MTU
				}
			}
		}
	}
	return mtu - hdr
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// watch adds fd to the epoll set, level-triggered, its events tagged
// (epoll_data's 64 bits are the Fd and Pad fields of x/sys's EpollEvent).
func (sh *shard) watch(fd int, tag uint64) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(uint32(tag)), Pad: int32(uint32(tag >> 32))}
	return unix.EpollCtl(sh.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
}

func tagOf(ev *unix.EpollEvent) uint64 { return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32 }

func flowTag(f *flow) uint64 { return uint64(uint32(f.slot)) | uint64(f.gen)<<32 }

// wake makes the loop look at the server's state now.
func (sh *shard) wake() { sh.ep.SetReadDeadline(time.Unix(1, 0)) }

// run is the shard's loop: wait for a socket to be readable, move what
// it holds, send what was gathered; sweep idle flows now and then.
func (sh *shard) run() {
	defer sh.closeAll()
	reading := true        // the listening socket is in the epoll set
	var next time.Duration // the deadline set, 0 for none
	for {
		// After each deadline set (a wake sets one too, which the loop
		// may have overwritten), the server's state is looked at.
		if next == 0 {
			next = sh.lastSwept + sh.sweepEvery
			sh.ep.SetReadDeadline(mono.Wall(next))
			s := sh.s
			if s.stopped.Load() || s.draining.Load() && len(sh.flows) == 0 {
				return
			}
			if reading && s.draining.Load() {
				unix.EpollCtl(sh.epfd, unix.EPOLL_CTL_DEL, sh.lnfd, nil)
				reading = false
				// The kernel would go on sending clients' datagrams to
				// these flows; in user space they reach the listening
				// socket, and its new server.
				for _, f := range sh.slots {
					if f != nil && f.fast {
						sh.fromKernel(f)
					}
				}
			}
		}
		sh.tries = 0
		err := sh.epRaw.Read(sh.poll)
		n, werr, tries := sh.nEvents, sh.pollErr, sh.tries
		sh.now = mono.Now()
		if err == nil && werr != nil {
			err = werr
		}
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				sh.log("epoll", "udp: the event loop failed; its flows are closed", "listener", sh.s.o.Name, "err", err)
				return
			}
			next = 0 // the sweep's time, or a wake
			n = 0
		}
		for i := range sh.events[:n] {
			tag := tagOf(&sh.events[i])
			if tag == lnTag {
				sh.readClients()
				continue
			}
			if f := sh.flowOf(tag); f != nil {
				sh.readUpstream(f)
			}
		}
		sh.flushUp()
		sh.flushDown()
		moved := sh.counts.in + sh.counts.out
		if sh.waited {
			if tries > 1 {
				moved = 0 // the wait gathered nothing: the loop slept since
			}
			sh.gathered(moved)
		}
		if tries > 1 {
			sh.parked = sh.now
		}
		if n > 0 {
			if sh.now-sh.parked > time.Millisecond {
				// Under steady load the loop does not park: goroutines
				// waiting for this P (an HTTP listener's, with
				// GOMAXPROCS=1) get it once a millisecond. (A yield each
				// round cost a datagram of ping-pong a third more.)
				runtime.Gosched()
				sh.parked = sh.now
			}
			sh.moderate(moved)
		}
		sh.publish()
		if sh.now-sh.lastSwept >= sh.sweepEvery {
			sh.sweep()
		}
		if sh.lastSwept+sh.sweepEvery != next {
			next = 0
		}
	}
}

// pollOnce looks at the epoll set without waiting: it is RawConn.Read's
// callback, bound once (a closure made each round would be allocated).
func (sh *shard) pollOnce(uintptr) bool {
	sh.tries++
	for {
		sh.nEvents, sh.pollErr = unix.EpollWait(sh.epfd, sh.events, 0)
		if sh.pollErr != unix.EINTR {
			return sh.nEvents > 0 || sh.pollErr != nil
		}
	}
}

// flowOf is the flow an event's tag names, if it is still open.
func (sh *shard) flowOf(tag uint64) *flow {
	slot, gen := int32(tag&0xffffffff), uint32(tag>>32)
	if int(slot) >= len(sh.slots) {
		return nil
	}
	if f := sh.slots[slot]; f != nil && f.gen == gen {
		return f
	}
	return nil
}

// readClients takes a batch of datagrams from the listening socket and
// queues each to its flow's upstream socket, opening flows as needed.
func (sh *shard) readClients() {
	b := sh.fromClients
	b.armRecv(0, batchSize, true)
	n, e := mmsg(unix.SYS_RECVMMSG, sh.lnfd, b.msgs)
	if e != 0 {
		if e != unix.EAGAIN {
			sh.log("recv", "udp: reading the listening socket failed", "err", e)
		}
		return
	}
	sh.counts.batches++
	// Each datagram's flow first; then each flow's datagrams together,
	// in order: one send for them (GSO when they are of a size), not one
	// a datagram as they came interleaved.
	flows, segs := sh.rxFlows[:n], sh.rxSegs[:n]
	for i := range n {
		flows[i] = nil
		m := &b.msgs[i]
		if m.hdr.Flags&unix.MSG_TRUNC != 0 {
			sh.counts.tooBig++
			continue
		}
		src := b.source(i)
		seg, local := b.received(i)
		f := sh.flows[src]
		if f == nil {
			if f = sh.open(src, local); f == nil {
				continue
			}
		}
		f.last = sh.now
		moved := local != f.local
		f.local = local // replies go from where the client sent to last
		if f.fast && sh.pktinfo && moved {
			// The kernel's entries, keyed by the old address, are made
			// again.
			sh.fromKernel(f)
			f.xf.Client = netip.AddrPort{}
			sh.toKernel(f)
		}
		flows[i], segs[i] = f, seg
	}
	for i, f := range flows {
		if f == nil {
			continue
		}
		for j := i; j < n; j++ {
			if flows[j] != f {
				continue
			}
			flows[j] = nil
			if f.fd >= 0 { // a later open may have evicted it
				sh.queueUp(f, b.bufs[j][:b.msgs[j].n], segs[j])
			}
		}
	}
	// The buffers are reused by the next read: what they hold goes now.
	sh.flushUp()
}

// queueUp adds p, a datagram or a GRO run of datagrams of seg bytes each,
// to the datagrams going to f's endpoint.
func (sh *shard) queueUp(f *flow, p []byte, seg int) {
	if seg >= len(p) {
		seg = 0
	}
	k := datagrams(len(p), seg)
	if !sh.admit(&f.tat[0], k) {
		sh.counts.rateDrops += k
		return
	}
	if seg > 0 {
		sh.counts.groReceives++
	}
	f.in += k
	f.inBytes += int64(len(p))
	sh.counts.in += k
	sh.counts.inBytes += int64(len(p))
	if f.in >= oneWay && !f.fast {
		sh.toKernel(f)
	}
	if seg > 0 && (!sh.gso || seg > f.upSeg) {
		for len(p) > 0 {
			q := p[:min(seg, len(p))]
			p = p[len(q):]
			sh.queueUp1(f, q, 0)
		}
		return
	}
	sh.queueUp1(f, p, seg)
}

func (sh *shard) queueUp1(f *flow, p []byte, seg int) {
	if sh.upFlow == f && sh.nUp > 0 && seg == 0 && sh.gso && sh.toUpstream.join(sh.nUp-1, p, f.upSeg) {
		return
	}
	if sh.upFlow != f || sh.nUp == batchSize {
		sh.flushUp()
	}
	sh.upFlow = f
	sh.toUpstream.set(sh.nUp, p, nil, 0, netip.Addr{}, seg)
	sh.nUp++
}

// flushUp sends the datagrams queued for one flow's endpoint.
func (sh *shard) flushUp() {
	f, n := sh.upFlow, sh.nUp
	sh.upFlow, sh.nUp = nil, 0
	if n == 0 {
		return
	}
	if refused := sh.send(f.fd, sh.toUpstream, n); refused {
		sh.end(f, endRefused)
	}
}

// readUpstream takes a batch of f's replies and queues them to its
// client.
func (sh *shard) readUpstream(f *flow) {
	if sh.nBuf == batchSize {
		sh.flushDown()
	}
	b := sh.fromUps
	b.armRecv(sh.nBuf, batchSize, false)
	n, e := mmsg(unix.SYS_RECVMMSG, f.fd, b.msgs[sh.nBuf:])
	if e != 0 {
		if unreachable(e) {
			sh.end(f, endRefused)
		}
		return
	}
	sh.counts.batches++
	if !f.answered {
		f.answered = true
		sh.unlist(f)
		sh.toKernel(f)
	}
	f.last = sh.now
	first := sh.nBuf
	sh.nBuf += n
	for i := first; i < first+n; i++ {
		m := &b.msgs[i]
		if m.hdr.Flags&unix.MSG_TRUNC != 0 {
			sh.counts.tooBig++
			continue
		}
		p := b.bufs[i][:m.n]
		seg, _ := b.received(i)
		if seg >= len(p) {
			seg = 0
		}
		k := datagrams(len(p), seg)
		if seg > 0 {
			sh.counts.groReceives++
		}
		if !sh.admit(&f.tat[1], k) {
			sh.counts.rateDrops += k
			continue
		}
		f.out += k
		f.outBytes += int64(len(p))
		sh.counts.out += k
		sh.counts.outBytes += int64(len(p))
		if seg > 0 && (!sh.gso || seg > sh.downSeg) {
			sh.flushDown() // in order
			sh.sendSplit(sh.lnfd, p, seg, &f.sa, f.saLen, f.local)
			continue
		}
		if seg == 0 && sh.gso && sh.nDown > 0 && sh.toClients.to[sh.nDown-1] == &f.sa && sh.toClients.join(sh.nDown-1, p, sh.downSeg) {
			continue
		}
		sh.toClients.set(sh.nDown, p, &f.sa, f.saLen, f.local, seg)
		sh.nDown++
	}
}

// flushDown sends the replies queued for clients, and frees the buffers
// they were read into.
func (sh *shard) flushDown() {
	n := sh.nDown
	sh.nDown, sh.nBuf = 0, 0
	if n > 0 {
		sh.send(sh.lnfd, sh.toClients, n)
	}
}

// send sends b's first n datagrams on fd without blocking; a datagram
// the socket has no room for is dropped and counted, as a router would.
// It reports whether the socket's peer refused (ICMP unreachable).
func (sh *shard) send(fd int, b *batch, n int) (refused bool) {
	for i := 0; i < n; {
		sent, e := mmsg(unix.SYS_SENDMMSG, fd, b.msgs[i:n])
		if e == 0 {
			for _, seg := range b.seg[i : i+sent] {
				if seg > 0 {
					sh.counts.gsoSends++
				}
			}
			i += sent
			continue
		}
		switch {
		case e == unix.EIO && b.seg[i] > 0:
			// The device cannot segment (a veth without checksum
			// offload): send this run one by one, and no more runs.
			sh.noGSO()
			sh.sendSplit(fd, b.data[i], b.seg[i], b.to[i], b.msgs[i].hdr.Namelen, b.from[i])
		case e == unix.EMSGSIZE && b.seg[i] > 0:
			// Segments past the path's MTU: one by one, each fragmented
			// by IP as a single datagram would be.
			sh.sendSplit(fd, b.data[i], b.seg[i], b.to[i], b.msgs[i].hdr.Namelen, b.from[i])
		case unreachable(e):
			refused = true
			sh.counts.sendDrops += segments(b, i)
		default:
			sh.counts.sendDrops += segments(b, i)
		}
		i++
	}
	return refused
}

// unreachable reports whether e is an ICMP error's: the endpoint's port
// is closed, or it cannot be reached.
func unreachable(e unix.Errno) bool {
	return e == unix.ECONNREFUSED || e == unix.EHOSTUNREACH || e == unix.ENETUNREACH
}

// segments is how many datagrams queued message i of b holds.
func segments(b *batch, i int) int64 { return datagrams(len(b.data[i]), b.seg[i]) }

// datagrams is how many datagrams n bytes in segments of seg bytes are
// (one if seg is 0).
func datagrams(n, seg int) int64 {
	if seg > 0 {
		return int64((n + seg - 1) / seg)
	}
	return 1
}

// sendSplit sends p, a run of datagrams of seg bytes, one datagram at a
// time.
func (sh *shard) sendSplit(fd int, p []byte, seg int, to *unix.RawSockaddrInet6, toLen uint32, from netip.Addr) {
	b := sh.split
	for len(p) > 0 {
		k := 0
		for ; k < batchSize && len(p) > 0; k++ {
			q := p[:min(seg, len(p))]
			p = p[len(q):]
			b.set(k, q, to, toLen, from, 0)
		}
		sh.send(fd, b, k)
	}
}

// noGSO turns GSO off for good, and with it GRO (what GRO joins, GSO
// must split): on the listening socket and on the flows' sockets.
func (sh *shard) noGSO() {
	if !sh.gso {
		return
	}
	sh.gso, sh.gro = false, false
	sh.log("gso", "udp: a device cannot segment datagrams (GSO); strait sends them one by one from now on", "listener", sh.s.o.Name)
	unix.SetsockoptInt(sh.lnfd, unix.SOL_UDP, unix.UDP_GRO, 0)
	for _, f := range sh.flows {
		unix.SetsockoptInt(f.fd, unix.SOL_UDP, unix.UDP_GRO, 0)
	}
}

// moderate waits BatchDelay after a round that moved few datagrams when
// rounds come close together: datagrams gather meanwhile, and the next
// round moves several for one wake-up, as a network card's interrupt
// moderation does. It stops waiting while waits gather less than two
// datagrams (rare datagrams, or a client waiting on each reply, as in
// ping-pong: the wait would only add latency), and tries again after 64
// rounds, then 128, up to 4096.
func (sh *shard) moderate(moved int64) {
	d := sh.s.o.BatchDelay
	since := sh.now - sh.lastRound
	sh.lastRound = sh.now
	if d <= 0 || since > 4*d || moved >= batchSize/4 {
		return
	}
	if sh.yield < 2 {
		if sh.skip > 0 {
			sh.skip--
			return
		}
		// A try: if it gathers no more than the last, the next is twice
		// as far off (up to 4096 rounds): the waits that add latency for
		// nothing stay rare.
		sh.backoff = min(max(2*sh.backoff, 64), 4096)
		sh.skip = sh.backoff
	} else {
		sh.backoff = 0
	}
	sh.delay = unix.NsecToTimespec(d.Nanoseconds())
	// A raw call: a blocking one would have Go's sysmon, which watches
	// system calls every 20µs, retake the P and hand it over each time
	// (a quarter of the loop's CPU went there). Other goroutines of this
	// P wait the delay. The thread's timer slack (50µs by default) would
	// double a 50µs sleep: it is set to none first.
	unix.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_TIMERSLACK, 1, 0, 0, 0, 0)
	unix.RawSyscall(unix.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&sh.delay)), 0, 0)
	sh.now = mono.Now()
	sh.lastRound = sh.now
	sh.waited = true
}

// gathered counts what the round after a wait moved (0 if it found
// nothing ready at once) into the yield of waits.
func (sh *shard) gathered(moved int64) {
	sh.waited = false
	sh.yield = 0.75*sh.yield + 0.25*float64(moved)
}

// open makes the flow of a new client address, if the limits allow:
// its prefix's rate, the table's room (evicting an unanswered flow if it
// must), an endpoint from the cluster. It returns nil if not, the
// datagram dropped and counted.
func (sh *shard) open(src netip.AddrPort, local netip.Addr) *flow {
	s := sh.s
	if !sh.allow(src.Addr()) {
		s.Stats.RateDrops.Add(1)
		return nil
	}
	if len(sh.flows) >= sh.maxFlows {
		if sh.oldest == nil {
			s.Stats.FullDrops.Add(1)
			return nil
		}
		s.Stats.FlowsEvicted.Add(1)
		sh.end(sh.oldest, endEvicted)
	}
	f := &flow{client: src, local: local, start: sh.now, last: sh.now}
	f.saLen = toSockaddr(src, sh.fam, &f.sa)
	f.sess.ClientAddr = src
	f.sess.Stats.Attempts = 1
	f.call.NoWait = true
	cl := s.o.Cluster
	peer, err := cl.Peer(&f.sess, &f.call)
	if err != nil {
		s.Stats.NoUpstream.Add(1)
		cl.Done(&f.sess, &f.call, nil)
		sh.log("peer", "udp: no endpoint takes a new flow; its datagrams are dropped", "listener", s.o.Name, "client", src, "err", err)
		return nil
	}
	f.peer = peer.Addr
	fd, upSeg, err := sh.dial(peer.Addr)
	if err != nil {
		s.Stats.NoUpstream.Add(1)
		e := &proxy.Error{Side: proxy.Upstream, Kind: proxy.KindConnect, Err: err, Where: "connecting a UDP socket to " + peer.Addr}
		if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
			e.Side, e.Kind = proxy.Internal, proxy.KindLimit
		} else {
			cl.FailToConnect(&f.sess, &f.call, e)
		}
		cl.Done(&f.sess, &f.call, e)
		sh.log("dial", "udp: cannot open a flow's upstream socket; its datagrams are dropped", "listener", s.o.Name, "endpoint", peer.Addr, "err", err)
		return nil
	}
	f.fd, f.upSeg = fd, upSeg
	if len(sh.free) > 0 {
		f.slot = sh.free[len(sh.free)-1]
		sh.free = sh.free[:len(sh.free)-1]
	} else {
		f.slot = int32(len(sh.slots))
		sh.slots = append(sh.slots, nil)
	}
	sh.gens++
	f.gen = sh.gens
	if err := sh.watch(fd, flowTag(f)); err != nil {
		unix.Close(fd)
		sh.free = append(sh.free, f.slot)
		cl.Done(&f.sess, &f.call, nil)
		sh.log("epoll", "udp: cannot watch a flow's upstream socket; its datagrams are dropped", "err", err)
		return nil
	}
	sh.slots[f.slot] = f
	sh.flows[src] = f
	sh.list(f)
	s.Stats.Flows.Add(1)
	s.Stats.FlowsActive.Add(1)
	return f
}

// dial returns a non-blocking UDP socket connected to addr, an IP
// address and port, and the largest GSO segment its path takes: a
// segment past the MTU is not fragmented but lost, where a single
// datagram would be.
func (sh *shard) dial(addr string) (fd, seg int, err error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return -1, 0, fmt.Errorf("want an IP address and port: %w", err)
	}
	fam, level, opt, hdr := unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_MTU, 48
	if ap.Addr().Is4() {
		fam, level, opt, hdr = unix.AF_INET, unix.IPPROTO_IP, unix.IP_MTU, 28
	}
	fd, err = unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, err
	}
	if sh.gro {
		unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_GRO, 1)
	}
	var sa unix.RawSockaddrInet6
	n := toSockaddr(ap, fam, &sa)
	if _, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), uintptr(n)); e != 0 {
		unix.Close(fd)
		return -1, 0, e
	}
	if mtu, err := unix.GetsockoptInt(fd, level, opt); err == nil && mtu > hdr {
		seg = mtu - hdr
	}
	return fd, seg, nil
}

// allow takes one of the new flows a's prefix may open now.
func (sh *shard) allow(a netip.Addr) bool {
	if sh.rate <= 0 {
		return true
	}
	a = a.Unmap()
	bits := prefix6
	if a.Is4() {
		bits = prefix4
	}
	p, _ := a.Prefix(bits)
	b := sh.buckets[p]
	if b == nil {
		if len(sh.buckets) >= maxBuckets {
			return false
		}
		b = &bucket{tokens: sh.rate, last: sh.now}
		sh.buckets[p] = b
	}
	b.tokens = min(sh.rate, b.tokens+(sh.now-b.last).Seconds()*sh.rate)
	b.last = sh.now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// admit takes k datagrams from a flow's rate one way (tat), or says it
// is over: the generic cell rate algorithm, which the XDP program runs
// too.
func (sh *shard) admit(tat *time.Duration, k int64) bool {
	if sh.interval == 0 {
		return true
	}
	t := max(*tat, sh.now)
	if t-sh.now > sh.burst {
		return false
	}
	*tat = t + time.Duration(k)*sh.interval
	return true
}

// oneWay is how many datagrams a client's flow that was never answered
// sends before it counts as established: a stream one way (logs, media)
// goes to the kernel too.
const oneWay = 64

// toKernel has the XDP program forward f, established (answered, or
// oneWay datagrams sent), if the listener has one; once.
func (sh *shard) toKernel(f *flow) {
	x := sh.s.o.XDP
	if x == nil || f.xf.Client.IsValid() || sh.s.draining.Load() {
		// Once draining, the server only relays replies: a client's
		// next datagrams are the new server's.
		return
	}
	f.xf.Client = f.client // offered
	front := sh.front
	if sh.pktinfo {
		if !f.local.IsValid() {
			return
		}
		front = netip.AddrPortFrom(f.local, front.Port())
	}
	up, err := netip.ParseAddrPort(f.peer)
	if err != nil {
		return
	}
	sa, err := unix.Getsockname(f.fd)
	if err != nil {
		return
	}
	var back netip.AddrPort
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		back = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		back = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	xf := udpxdp.Flow{Client: f.client, Front: front, Back: back, Upstream: up, Rate: sh.s.o.FlowRate, Burst: sh.s.o.FlowBurst}
	if err := x.Add(xf); err != nil {
		sh.log("xdp", "udp: a flow stays in user space", "listener", sh.s.o.Name, "err", err)
		return
	}
	f.fast, f.xf = true, xf
	sh.s.Stats.FlowsXDP.Add(1)
}

// fromKernel takes f out of the XDP program: what it forwarded counts
// in f's totals, and its datagrams come to strait's sockets again.
func (sh *shard) fromKernel(f *flow) {
	x := sh.s.o.XDP
	if d, ok := x.Idle(f.xf); ok {
		f.last = max(f.last, sh.now-d)
	}
	c := x.Remove(f.xf)
	f.in += c.In
	f.inBytes += c.InBytes
	f.out += c.Out
	f.outBytes += c.OutBytes
	f.kin += c.In
	f.kout += c.Out
	f.fast = false
	sh.s.Stats.FlowsXDP.Add(-1)
}

// Why a flow ended, for its access log line.
const (
	endIdle     = "idle"
	endEvicted  = "evicted"
	endRefused  = "refused"
	endShutdown = "shutdown"
)

// end closes f: its socket, its place in the table, its use of the
// cluster.
func (sh *shard) end(f *flow, why string) {
	if sh.slots[f.slot] != f {
		return // ended already
	}
	if sh.upFlow == f {
		sh.upFlow, sh.nUp = nil, 0 // what it had queued goes with it
	}
	if f.fast {
		sh.fromKernel(f) // before its socket, and so its port, goes
	}
	unix.EpollCtl(sh.epfd, unix.EPOLL_CTL_DEL, f.fd, nil)
	unix.Close(f.fd)
	f.fd = -1
	sh.slots[f.slot] = nil
	sh.free = append(sh.free, f.slot)
	delete(sh.flows, f.client)
	if !f.answered {
		sh.unlist(f)
	}
	s := sh.s
	s.Stats.FlowsActive.Add(-1)
	var e *proxy.Error
	switch why {
	case endIdle:
		s.Stats.FlowsExpired.Add(1)
	case endRefused:
		s.Stats.FlowsRefused.Add(1)
		e = &proxy.Error{Side: proxy.Upstream, Kind: proxy.KindConnect, Where: "the endpoint refused a datagram (ICMP port unreachable)"}
		s.o.Cluster.ErrorWhileProxy(&f.sess, &f.call, e)
	}
	s.o.Cluster.Done(&f.sess, &f.call, e)
	if l := s.o.AccessLog; l != nil {
		l.Info("udp flow", "listener", s.o.Name, "client", f.client, "upstream", f.peer,
			"datagrams_in", f.in, "bytes_in", f.inBytes, "datagrams_out", f.out, "bytes_out", f.outBytes,
			"duration", (sh.now - f.start).Round(time.Millisecond).String(), "end", why, "xdp_datagrams_in", f.kin, "xdp_datagrams_out", f.kout)
	}
}

// list adds f, new, to the unanswered flows; unlist takes it out.
func (sh *shard) list(f *flow) {
	f.older = sh.youngest
	if sh.youngest != nil {
		sh.youngest.younger = f
	} else {
		sh.oldest = f
	}
	sh.youngest = f
}

func (sh *shard) unlist(f *flow) {
	if f.older != nil {
		f.older.younger = f.younger
	} else {
		sh.oldest = f.younger
	}
	if f.younger != nil {
		f.younger.older = f.older
	} else {
		sh.youngest = f.older
	}
	f.older, f.younger = nil, nil
}

// sweep ends the flows idle for the idle timeout, and forgets the
// prefixes whose allowance is whole again.
func (sh *shard) sweep() {
	sh.lastSwept = sh.now
	idle := sh.s.o.IdleTimeout
	if sh.s.draining.Load() {
		// The listener is no longer read: a flow has only replies left
		// to relay, and one quiet for a second has none.
		idle = min(idle, drainQuiet)
	}
	cl := sh.s.o.Cluster
	for _, f := range sh.slots {
		if f == nil {
			continue
		}
		if f.fast && !cl.Serving(&f.call) {
			// Its endpoint is ejected, unhealthy, draining or gone: the
			// flow's datagrams come back where strait sees them.
			sh.fromKernel(f)
		}
		if f.fast && sh.now-f.last >= idle {
			if d, ok := sh.s.o.XDP.Idle(f.xf); ok {
				f.last = max(f.last, sh.now-d)
			}
		}
		if sh.now-f.last >= idle {
			sh.end(f, endIdle)
		}
	}
	for p, b := range sh.buckets {
		if b.tokens+(sh.now-b.last).Seconds()*sh.rate >= sh.rate {
			delete(sh.buckets, p)
		}
	}
	for k, t := range sh.logged {
		if sh.now-t >= time.Minute {
			delete(sh.logged, k)
		}
	}
}

// publish adds what the loop counted since the last time to the
// server's Stats: atomics once a round, not once a datagram.
func (sh *shard) publish() {
	c, st := &sh.counts, &sh.s.Stats
	if c.in != 0 {
		st.DatagramsIn.Add(c.in)
		st.BytesIn.Add(c.inBytes)
	}
	if c.out != 0 {
		st.DatagramsOut.Add(c.out)
		st.BytesOut.Add(c.outBytes)
	}
	if c.batches != 0 {
		st.Batches.Add(c.batches)
	}
	if c.sendDrops != 0 {
		st.SendDrops.Add(c.sendDrops)
	}
	if c.tooBig != 0 {
		st.TooBig.Add(c.tooBig)
	}
	if c.gsoSends != 0 {
		st.GSOSends.Add(c.gsoSends)
	}
	if c.groReceives != 0 {
		st.GROReceives.Add(c.groReceives)
	}
	if c.rateDrops != 0 {
		st.FlowRateDrops.Add(c.rateDrops)
	}
	*c = counters{}
}

// closeAll ends every flow and the epoll set.
func (sh *shard) closeAll() {
	sh.now = mono.Now()
	sh.flushUp()
	sh.flushDown()
	for _, f := range sh.slots {
		if f != nil {
			sh.end(f, endShutdown)
		}
	}
	sh.publish()
	if sh.ep != nil {
		sh.ep.Close()
	}
	if sh.lnfd >= 0 {
		unix.Close(sh.lnfd)
		sh.lnfd = -1
	}
}

func cmpErr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

// log logs msg at most once a minute for each kind of trouble: a flood
// must not become a flood of lines.
func (sh *shard) log(kind, msg string, args ...any) {
	if t, ok := sh.logged[kind]; ok && sh.now-t < time.Minute {
		return
	}
	sh.logged[kind] = sh.now
	if l := sh.s.o.Logger; l != nil {
		l.Warn(msg, args...)
	}
}
