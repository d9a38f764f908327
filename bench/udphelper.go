package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/straitproxy/strait/internal/netnstest"
	"golang.org/x/sys/unix"
)

// The -udp mode's load generator and sink are this binary again, run as
// bench -udp-helper load|peak, pinned to the load CPU with GOMAXPROCS=1.
// Each is one goroutine in one busy loop over non-blocking sockets, made
// of raw system calls on buffers made once: the loop allocates nothing,
// never parks, and so neither the Go scheduler nor the garbage collector
// puts its pauses into the latencies or the pacing.
//
//   - load: F client sockets, each connected to the target (a relay, or
//     the sink for direct), send requests evenly paced at a total rate R,
//     round-robin; the sink (the relay's upstream) echoes every datagram to
//     its sender; the clients take the replies, matched by the sequence
//     number and send time each carries. Paced, not in bursts, so that
//     what is measured is how a relay batches by itself, not the burst
//     size of the load generator.
//   - peak: F client sockets send unpaced with GSO (one sendmsg carries
//     -segments datagrams), and the sink, with GRO, only counts: the
//     highest rate a relay forwards. Nothing is answered.

// udpHelperArg, as the first argument, runs this binary as the -udp
// mode's load generator (see udpHelper).
const udpHelperArg = "-udp-helper"

// udpHeader is the part of a request's payload the load generator reads
// back: a number that names the run (a stray datagram of an earlier run
// is not counted), the sequence number and the send time (ns since the
// run started). The rest is a fixed pattern, compared on each reply.
const udpHeader = 16

// udpLateAfter is how late a paced send may be before it counts as late.
const udpLateAfter = 100 * time.Microsecond

// udpRcvBuf is the receive buffer the helper asks for on its sockets (as
// root, beyond net.core.rmem_max): the load generator is not to be where
// datagrams are lost.
const udpRcvBuf = 8 << 20

// udpBatch is how many datagrams one recvmmsg or sendmmsg of the sink
// moves at most.
const udpBatch = 32

// udpLoadResult is what bench -udp-helper load prints, as JSON.
type udpLoadResult struct {
	Sent       int64 `json:"sent"`        // requests sent without error
	SendErrors int64 `json:"send_errors"` // sends that failed (ECONNREFUSED: nothing listened)
	// Late counts the sends that left more than udpLateAfter after their
	// time (the loop fell behind and caught up); MaxLateUs is the worst.
	Late      int64   `json:"late_sends"`
	MaxLateUs float64 `json:"max_late_us"`
	// SinkReceived counts the requests that reached the sink, and
	// EchoErrors the echoes it could not send.
	SinkReceived int64 `json:"sink_received"`
	EchoErrors   int64 `json:"echo_errors"`
	// Replies counts the requests answered within the wait after the
	// last send; Duplicates the replies to a request answered already;
	// Bad the datagrams that were not a reply of this run (wrong size,
	// pattern or run).
	Replies    int64 `json:"replies"`
	Duplicates int64 `json:"duplicates"`
	Bad        int64 `json:"bad"`
	// SendS is the time from the first send to the last.
	SendS float64 `json:"send_s"`
	// Round-trip latency of the answered requests, client to client.
	P50Us  float64 `json:"p50_us"`
	P99Us  float64 `json:"p99_us"`
	P999Us float64 `json:"p99_9_us"`
	MaxUs  float64 `json:"max_us"`
	// Drops is what the kernel dropped at the helper's own sockets (their
	// receive buffers full), from /proc/net/udp.
	Drops int64 `json:"helper_socket_drops"`
	// LoopAllocs is the heap allocations made during the loop: 0 but for
	// error messages kept.
	LoopAllocs uint64   `json:"loop_allocs"`
	Errors     []string `json:"sample_errors,omitempty"`
}

// udpPeakResult is what bench -udp-helper peak prints, as JSON.
type udpPeakResult struct {
	Sent       int64 `json:"sent"` // datagrams (segments), in SendCalls sendmsg calls
	SendCalls  int64 `json:"send_calls"`
	SendErrors int64 `json:"send_errors"`
	// Received counts the datagrams that reached the sink: GRO hands
	// several of one flow over at once (GROReceives times), and its
	// control message says their size.
	Received    int64 `json:"received"`
	RecvCalls   int64 `json:"recv_calls"`
	GROReceives int64 `json:"gro_receives"`
	// SendS is the send phase; RecvS the time from the first send to the
	// last datagram received, over which the forwarded rate is counted.
	SendS  float64  `json:"send_s"`
	RecvS  float64  `json:"recv_s"`
	Drops  int64    `json:"helper_socket_drops"`
	Errors []string `json:"sample_errors,omitempty"`
}

// udpHelper runs this binary as the -udp mode's load generator:
//
//	bench -udp-helper load -target A -sink S -flows F -rate R -size N -duration D -wait W
//	bench -udp-helper peak -target A -sink S -flows F -size N -segments K -duration D
//
// It prints a udpLoadResult or a udpPeakResult as JSON. The harness
// starts it pinned to the load CPU with GOMAXPROCS=1.
func udpHelper(args []string) int {
	if len(args) < 1 || (args[0] != "load" && args[0] != "peak") {
		fmt.Fprintln(os.Stderr, "bench -udp-helper: load or peak?")
		return 2
	}
	fs := flag.NewFlagSet("bench -udp-helper "+args[0], flag.ContinueOnError)
	target := fs.String("target", "", "ip:port the clients send to (a relay, or the sink)")
	sink := fs.String("sink", "", "ip:port the sink binds (the relay's upstream)")
	flows := fs.Int("flows", 4, "client sockets, each its own source port")
	rate := fs.Int("rate", 20000, "load: requests per second, over all flows")
	size := fs.Int("size", 64, "datagram payload bytes")
	segments := fs.Int("segments", 32, "peak: datagrams per GSO send")
	d := fs.Duration("duration", 5*time.Second, "how long to send")
	wait := fs.Duration("wait", time.Second, "load: how long to wait for replies after the last send")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	t, err1 := netip.ParseAddrPort(*target)
	s, err2 := netip.ParseAddrPort(*sink)
	if err := errors.Join(err1, err2); err != nil || !t.Addr().Is4() || !s.Addr().Is4() {
		fmt.Fprintf(os.Stderr, "bench -udp-helper: -target %q and -sink %q must be IPv4 ip:port (%v)\n", *target, *sink, err)
		return 2
	}
	var res any
	var err error
	if args[0] == "load" {
		res, err = udpLoadGen(t, s, *flows, *rate, *size, *d, *wait)
	} else {
		res, err = udpPeakGen(t, s, *flows, *size, *segments, *d)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench -udp-helper:", err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// udpSocket opens a non-blocking IPv4 UDP socket bound to bind (port 0:
// an ephemeral one), connected to peer if it is valid, with a large
// receive buffer.
func udpSocket(bind, peer netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, udpRcvBuf) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, udpRcvBuf) // capped at rmem_max
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: bind.Addr().As4(), Port: int(bind.Port())}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %v: %w", bind, err)
	}
	if peer.IsValid() {
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: peer.Addr().As4(), Port: int(peer.Port())}); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("connect %v: %w", peer, err)
		}
	}
	return fd, nil
}

// udpClients opens n client sockets connected to target, each on its own
// ephemeral port of target's address: n flows for a relay.
func udpClients(n int, target netip.AddrPort) ([]int, error) {
	var fds []int
	for range n {
		fd, err := udpSocket(netip.AddrPortFrom(target.Addr(), 0), target)
		if err != nil {
			closeAll(fds)
			return nil, err
		}
		fds = append(fds, fd)
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// mmsgHdr is struct mmsghdr: one datagram of a recvmmsg or sendmmsg.
type mmsgHdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// udpVec is a vector of datagrams for recvmmsg and sendmmsg, each with a
// buffer, room for an address and for a control message, made once.
type udpVec struct {
	msgs  []mmsgHdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // room for any address
	ctrl  []byte
	bufs  [][]byte
}

// udpCtrl is each datagram's control room: a UDP_GRO size.
var udpCtrl = unix.CmsgSpace(4)

func newUDPVec(n, size int) *udpVec {
	v := &udpVec{
		msgs:  make([]mmsgHdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n),
		ctrl:  make([]byte, n*udpCtrl),
		bufs:  make([][]byte, n),
	}
	for i := range v.bufs {
		v.bufs[i] = make([]byte, size)
	}
	v.arm(n)
	return v
}

// arm readies the first n datagrams for a recvmmsg: whole buffers, room
// for the source's address and a control message.
func (v *udpVec) arm(n int) {
	for i := range n {
		v.iovs[i].Base = &v.bufs[i][0]
		v.iovs[i].SetLen(len(v.bufs[i]))
		h := &v.msgs[i].hdr
		h.Iov, h.Iovlen = &v.iovs[i], 1
		h.Name, h.Namelen = (*byte)(unsafe.Pointer(&v.names[i])), unix.SizeofSockaddrInet6
		h.Control = &v.ctrl[i*udpCtrl]
		h.SetControllen(udpCtrl)
		h.Flags = 0
	}
}

// groSize is the segment size in received datagram i's UDP_GRO control
// message: the kernel handed over several datagrams of that size (the
// last may be shorter) as one. 0: a single datagram.
func (v *udpVec) groSize(i int) int {
	h := &v.msgs[i].hdr
	c := v.ctrl[i*udpCtrl : i*udpCtrl+int(h.Controllen)]
	for len(c) >= unix.SizeofCmsghdr {
		m := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
		if m.Len < unix.SizeofCmsghdr || int(m.Len) > len(c) {
			break
		}
		if d := c[unix.CmsgLen(0):m.Len]; m.Level == unix.SOL_UDP && m.Type == unix.UDP_GRO && len(d) >= 4 {
			return int(binary.NativeEndian.Uint32(d))
		}
		space := unix.CmsgSpace(int(m.Len) - unix.CmsgLen(0))
		if space > len(c) {
			break
		}
		c = c[space:]
	}
	return 0
}

// mmsgCall calls recvmmsg or sendmmsg (trap) on fd for msgs without
// blocking, and returns how many datagrams moved. RawSyscall: the call
// never blocks, so the scheduler need not know of it.
func mmsgCall(trap uintptr, fd int, msgs []mmsgHdr) (int, unix.Errno) {
	for {
		r, _, e := unix.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		return int(r), e
	}
}

// rawWrite and rawRead are write(2) and read(2) on a non-blocking socket,
// without the scheduler (they never block).
func rawWrite(fd int, p []byte) (int, unix.Errno) {
	r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(r), e
}

func rawRead(fd int, p []byte) (int, unix.Errno) {
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(r), e
}

// udpLoadGen is the paced load generator and echo sink: see the comment at
// the top of this file.
func udpLoadGen(target, sinkAddr netip.AddrPort, flows, rate, size int, d, wait time.Duration) (*udpLoadResult, error) {
	if flows < 1 || rate < 1 || size < udpHeader || size > 9000 {
		return nil, fmt.Errorf("want flows ≥ 1, rate ≥ 1 and %d ≤ size ≤ 9000", udpHeader)
	}
	sink, err := udpSocket(sinkAddr, netip.AddrPort{})
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	defer unix.Close(sink)
	clients, err := udpClients(flows, target)
	if err != nil {
		return nil, fmt.Errorf("clients: %w", err)
	}
	defer closeAll(clients)
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	defer unix.Close(ep)
	for _, fd := range append([]int{sink}, clients...) {
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			return nil, err
		}
	}

	total := int(int64(rate) * int64(d) / int64(time.Second))
	if total < 1 {
		return nil, errors.New("no request to send: raise -rate or -duration")
	}
	// lat[seq] is the request's round trip in ns, -1 until answered.
	lat := make([]int64, total)
	for i := range lat {
		lat[i] = -1
	}
	run := rand.Uint32()
	req := pattern(size)
	binary.LittleEndian.PutUint32(req, run)
	reply := make([]byte, size+1) // one more: a longer datagram is seen
	echo := newUDPVec(udpBatch, 1<<16)
	evs := make([]unix.EpollEvent, 16)
	var errs errorSample
	res := &udpLoadResult{}

	// A collection now, after the buffers are made, so that none is
	// under way during the loop (which allocates nothing to start one);
	// then any allocation counted meanwhile is the loop's.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mallocs := ms.Mallocs
	start := time.Now()
	var firstSend, lastSend time.Duration
	answered := int64(0)
	for seq := 0; ; {
		now := time.Since(start)
		if seq < total {
			// At most one send per pass: when behind, the late ones go
			// out at the loop's pace, between receives, not as a burst.
			due := time.Duration(int64(seq) * int64(time.Second) / int64(rate))
			if now >= due {
				if late := now - due; late > udpLateAfter {
					res.Late++
					res.MaxLateUs = max(res.MaxLateUs, float64(late)/1e3)
				}
				binary.LittleEndian.PutUint32(req[4:], uint32(seq))
				binary.LittleEndian.PutUint64(req[8:], uint64(now))
				if _, e := rawWrite(clients[seq%flows], req); e != 0 {
					res.SendErrors++
					errs.add("send: " + e.Error())
				} else {
					res.Sent++
				}
				if seq == 0 {
					firstSend = now
				}
				lastSend = now
				seq++
			}
		} else if answered == res.Sent || now-lastSend > wait {
			break
		}

		// Poll, never block: the loop spins, so that the load CPU is
		// as busy whatever the target (see the README: on this VM a
		// busy load CPU slows the relay's).
		n, err := unix.EpollWait(ep, evs, 0)
		if err != nil && err != unix.EINTR {
			return nil, fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range evs[:max(n, 0)] {
			fd := int(ev.Fd)
			if fd == sink {
				udpEcho(sink, echo, res, &errs)
				continue
			}
			// Replies: read until the socket is empty.
			for {
				m, e := rawRead(fd, reply)
				if e == unix.EAGAIN {
					break
				}
				if e != 0 {
					// ECONNREFUSED: an ICMP error for an earlier send.
					errs.add("receive: " + e.Error())
					break
				}
				rtt := time.Since(start)
				i := int(binary.LittleEndian.Uint32(reply[4:])) // its sequence number
				if m != size || binary.LittleEndian.Uint32(reply) != run || i >= total ||
					!bytes.Equal(reply[udpHeader:m], req[udpHeader:]) {
					res.Bad++
					continue
				}
				if lat[i] >= 0 {
					res.Duplicates++
					continue
				}
				lat[i] = int64(rtt) - int64(binary.LittleEndian.Uint64(reply[8:]))
				answered++
			}
		}
	}
	runtime.ReadMemStats(&ms)
	res.LoopAllocs = ms.Mallocs - mallocs
	res.Replies = answered
	res.SendS = (lastSend - firstSend).Seconds()
	res.Errors = errs.sample()

	got := slices.DeleteFunc(lat, func(v int64) bool { return v < 0 })
	slices.Sort(got)
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	res.P50Us, res.P99Us, res.P999Us = us(percentile(got, 0.50)), us(percentile(got, 0.99)), us(percentile(got, 0.999))
	if len(got) > 0 {
		res.MaxUs = us(got[len(got)-1])
	}
	res.Drops = udpDrops(append([]int{sink}, clients...))
	return res, nil
}

// udpEcho is the sink of the load test: it takes what has arrived and
// sends each datagram back to its source, udpBatch at a time, until the
// socket is empty.
func udpEcho(fd int, v *udpVec, res *udpLoadResult, errs *errorSample) {
	for {
		n, e := mmsgCall(unix.SYS_RECVMMSG, fd, v.msgs)
		if e == unix.EAGAIN || n <= 0 {
			if e != 0 && e != unix.EAGAIN {
				errs.add("sink receive: " + e.Error())
			}
			return
		}
		res.SinkReceived += int64(n)
		// The same vector goes back out: each datagram its received
		// length, to the address it came from.
		for i := range n {
			v.iovs[i].SetLen(int(v.msgs[i].n))
			v.msgs[i].hdr.SetControllen(0)
			v.msgs[i].hdr.Control = nil
		}
		for sent := 0; sent < n; {
			m, e := mmsgCall(unix.SYS_SENDMMSG, fd, v.msgs[sent:n])
			if e != 0 || m <= 0 {
				// The datagram at sent failed (a full buffer, or an ICMP
				// error): count it and go on with the next.
				res.EchoErrors++
				if e != 0 {
					errs.add("sink echo: " + e.Error())
				}
				sent++
				continue
			}
			sent += m
		}
		v.arm(n)
		if n < len(v.msgs) {
			return
		}
	}
}

// percentile is the q quantile (0 < q ≤ 1) of sorted: the smallest value
// with at least q of the values at or below it; 0 for none.
func percentile(sorted []int64, q float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*q+0.999999) - 1 // ceil(n·q) - 1, without float noise
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// udpPeakGen is the GSO load generator and counting sink: see the comment
// at the top of this file.
func udpPeakGen(target, sinkAddr netip.AddrPort, flows, size, segments int, d time.Duration) (*udpPeakResult, error) {
	if flows < 1 || size < 1 || segments < 1 || segments > 64 || size*segments > 65507 {
		return nil, errors.New("want flows ≥ 1, 1 ≤ segments ≤ 64 and size × segments ≤ 65507")
	}
	sink, err := udpSocket(sinkAddr, netip.AddrPort{})
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	defer unix.Close(sink)
	if err := unix.SetsockoptInt(sink, unix.SOL_UDP, unix.UDP_GRO, 1); err != nil {
		return nil, fmt.Errorf("UDP_GRO: %w", err)
	}
	clients, err := udpClients(flows, target)
	if err != nil {
		return nil, fmt.Errorf("clients: %w", err)
	}
	defer closeAll(clients)

	// One sendmsg: segments × size bytes, cut into datagrams of size by
	// the kernel (UDP_SEGMENT), as late as it can (at the receiving
	// socket, if that one does not take GRO).
	payload := pattern(size * segments)
	iov := unix.Iovec{Base: &payload[0]}
	iov.SetLen(len(payload))
	ctrl := make([]byte, unix.CmsgSpace(2))
	cm := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
	cm.Level, cm.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	cm.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(ctrl[unix.CmsgLen(0):], uint16(size))
	msg := unix.Msghdr{Iov: &iov, Iovlen: 1, Control: &ctrl[0]}
	msg.SetControllen(len(ctrl))

	recv := newUDPVec(udpBatch, 1<<16)
	var errs errorSample
	res := &udpPeakResult{}
	// take empties the sink, and says whether anything came.
	var lastRecv time.Duration
	start := time.Now()
	take := func() bool {
		got := false
		for range 8 { // bounded, so that sending goes on
			n, e := mmsgCall(unix.SYS_RECVMMSG, sink, recv.msgs)
			if n <= 0 {
				if e != 0 && e != unix.EAGAIN {
					errs.add("sink receive: " + e.Error())
				}
				break
			}
			got = true
			res.RecvCalls++
			for i := range n {
				if seg := recv.groSize(i); seg > 0 {
					res.Received += int64((int(recv.msgs[i].n) + seg - 1) / seg)
					res.GROReceives++
				} else {
					res.Received++
				}
			}
			recv.arm(n)
			lastRecv = time.Since(start)
			if n < len(recv.msgs) {
				break
			}
		}
		return got
	}

	for i := 0; time.Since(start) < d; i++ {
		fd := clients[i%flows]
		_, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), 0)
		res.SendCalls++
		if e != 0 {
			res.SendErrors++
			errs.add("send: " + e.Error())
		} else {
			res.Sent += int64(segments)
		}
		take()
	}
	res.SendS = time.Since(start).Seconds()
	// What the relay still holds arrives now; done when nothing has come
	// for 200 ms (the relay is quiet, and the sink stays up until then,
	// so that no datagram meets a closed port).
	for quiet := time.Now(); time.Since(quiet) < 200*time.Millisecond; {
		if take() {
			quiet = time.Now()
		}
	}
	res.RecvS = lastRecv.Seconds()
	res.Errors = errs.sample()
	res.Drops = udpDrops(append([]int{sink}, clients...))
	return res, nil
}

// udpDrops sums the drop counters /proc/net/udp gives the sockets fds.
func udpDrops(fds []int) int64 {
	inodes := map[uint64]bool{}
	for _, fd := range fds {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil {
			inodes[st.Ino] = true
		}
	}
	var n int64
	for _, s := range udpSocketTable() {
		if inodes[s.inode] {
			n += s.drops
		}
	}
	return n
}

// udpSock is a line of /proc/net/udp{,6}.
type udpSock struct {
	local, remote int // ports
	inode         uint64
	drops         int64
}

// udpSocketTable reads every UDP socket of the machine (of this network
// namespace) from /proc/net/udp and /proc/net/udp6.
func udpSocketTable() []udpSock {
	var out []udpSock
	for _, file := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		out = append(out, parseUDPTable(string(data))...)
	}
	return out
}

// parseUDPTable parses /proc/net/udp's format: after the header, "sl
// local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid
// timeout inode ref pointer drops".
func parseUDPTable(data string) []udpSock {
	var out []udpSock
	for _, l := range strings.Split(data, "\n")[1:] {
		f := strings.Fields(l)
		if len(f) < 13 {
			continue
		}
		ino, _ := strconv.ParseUint(f[9], 10, 64)
		drops, _ := strconv.ParseInt(f[12], 10, 64)
		out = append(out, udpSock{local: hexPort(f[1]), remote: hexPort(f[2]), inode: ino, drops: drops})
	}
	return out
}

// The -xdp mode (xdp.go) runs the helper once more, as bench -xdp-helper
// paced|flood|discard, in network namespaces. -xdp counts busy time on
// all CPUs, so nothing here spins while it has nothing to do: a spinning
// loop would fill the load CPU, and the XDP program's work, done on the
// CPU that sends, would not show.
//
//   - paced: load's loop, asleep between sends: -flows client sockets,
//     bound to -bind on consecutive ports from -port (fixed, so that a
//     warm-up run opens the very flows the measured run uses), send
//     evenly paced requests, the sink (its socket made in namespace
//     -sink-netns) echoes them, the clients take the replies. Between
//     sends the loop sleeps in epoll_wait, woken by a periodic timerfd,
//     the sink or a reply. One process for both ends, as load is: the
//     direct path and the XDP path deliver within the send call, so a
//     request costs the load one wake-up, and the load CPU keeps room
//     for the XDP program's work, which lands on it.
//   - flood: the same clients send unpaced, -batch datagrams per sendmmsg,
//     round-robin over the flows, for -duration: the highest rate a
//     relay forwards. Nothing is answered.
//   - discard: flood's sink, a separate process on -sink that takes
//     datagrams and drops them, blocking in between, until killed; what
//     arrives is counted by the kernel of its namespace (/proc/net/snmp).

// xdpHelperArg, as the first argument, runs this binary as one of the
// -xdp mode's helpers (see xdpHelper).
const xdpHelperArg = "-xdp-helper"

// udpPacedResult is what bench -xdp-helper paced prints, as JSON: load's
// figures, and how long the calls that send took, per datagram.
type udpPacedResult struct {
	udpLoadResult
	// SendUs is the median time a request's send (write) took, and
	// EchoUs the median time the sink's receive and echo took per
	// datagram (recvmmsg and sendmmsg, ÷ the datagrams): on veth the
	// direct path and the XDP path deliver inside the send call (the
	// receiving side's NAPI runs in the sender's softirq), so the two
	// are what a datagram costs, by a clock read in the same process in
	// the same second, whatever the machine's speed does meanwhile.
	SendUs float64 `json:"send_p50_us"`
	EchoUs float64 `json:"echo_p50_us"`
}

// udpFloodResult is what bench -xdp-helper flood prints, as JSON.
type udpFloodResult struct {
	Sent       int64    `json:"sent"` // datagrams, in SendCalls sendmmsg calls
	SendCalls  int64    `json:"send_calls"`
	SendErrors int64    `json:"send_errors"` // failed calls (EAGAIN: a full send buffer)
	SendS      float64  `json:"send_s"`
	Errors     []string `json:"sample_errors,omitempty"`
}

// xdpHelper runs this binary as one of the -xdp mode's helpers:
//
//	bench -xdp-helper paced -target A -bind IP -port P -flows F -rate R -size N -duration D -wait W -sink S [-sink-netns NS]
//	bench -xdp-helper flood -target A -bind IP -port P -flows F -size N -batch K -duration D
//	bench -xdp-helper discard -sink S
//
// paced prints a udpPacedResult and flood a udpFloodResult, as JSON;
// discard prints nothing and runs until killed.
func xdpHelper(args []string) int {
	if len(args) < 1 || (args[0] != "paced" && args[0] != "flood" && args[0] != "discard") {
		fmt.Fprintln(os.Stderr, "bench -xdp-helper: paced, flood or discard?")
		return 2
	}
	fs := flag.NewFlagSet("bench -xdp-helper "+args[0], flag.ContinueOnError)
	target := fs.String("target", "", "ip:port the clients send to (a relay, or the sink)")
	bind := fs.String("bind", "", "the clients' local IP")
	port := fs.Int("port", 20000, "the first client's local port; the others follow it")
	flows := fs.Int("flows", 4, "client sockets, each its own source port")
	rate := fs.Int("rate", 20000, "paced: requests per second, over all flows")
	size := fs.Int("size", 64, "datagram payload bytes")
	batch := fs.Int("batch", udpBatch, "flood: datagrams per sendmmsg")
	d := fs.Duration("duration", 5*time.Second, "how long to send")
	wait := fs.Duration("wait", time.Second, "paced: how long to wait for replies after the last send")
	sink := fs.String("sink", "", "paced, discard: ip:port the sink binds")
	sinkNS := fs.String("sink-netns", "", "paced: the network namespace the sink's socket is made in (default this process's)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "bench -xdp-helper:", err)
		return 1
	}
	s, err := netip.ParseAddrPort(*sink)
	if args[0] != "flood" && (err != nil || !s.Addr().Is4()) {
		fmt.Fprintf(os.Stderr, "bench -xdp-helper: -sink %q must be an IPv4 ip:port\n", *sink)
		return 2
	}
	if args[0] == "discard" {
		return fail(udpDiscard(s))
	}
	t, err1 := netip.ParseAddrPort(*target)
	b, err2 := netip.ParseAddr(*bind)
	if err := errors.Join(err1, err2); err != nil || !t.Addr().Is4() || !b.Is4() || *port < 1 || *port+*flows > 65536 {
		fmt.Fprintf(os.Stderr, "bench -xdp-helper: -target %q (ip:port) and -bind %q (ip) must be IPv4, and -port %d + -flows %d fit (%v)\n", *target, *bind, *port, *flows, err)
		return 2
	}
	from := netip.AddrPortFrom(b, uint16(*port))
	var res any
	if args[0] == "paced" {
		res, err = udpPacedGen(t, from, s, *sinkNS, *flows, *rate, *size, *d, *wait)
	} else {
		res, err = udpFlood(t, from, *flows, *size, *batch, *d)
	}
	if err != nil {
		return fail(err)
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// udpDiscard is the discard helper: it takes what arrives on addr, and
// blocks in between. It returns only on an error.
func udpDiscard(addr netip.AddrPort) error {
	fd, err := udpSocket(addr, netip.AddrPort{})
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(ep)
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		return err
	}
	vec := newUDPVec(udpBatch, 1<<16)
	evs := make([]unix.EpollEvent, 1)
	for {
		if _, err := unix.EpollWait(ep, evs, -1); err != nil && err != unix.EINTR {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for {
			n, _ := mmsgCall(unix.SYS_RECVMMSG, fd, vec.msgs)
			if n <= 0 {
				break
			}
			vec.arm(n)
		}
	}
}

// udpBoundClients opens n client sockets connected to target, bound to
// from's address on ports from's port, +1, ….
func udpBoundClients(n int, from, target netip.AddrPort) ([]int, error) {
	var fds []int
	for i := range n {
		fd, err := udpSocket(netip.AddrPortFrom(from.Addr(), from.Port()+uint16(i)), target)
		if err != nil {
			closeAll(fds)
			return nil, err
		}
		fds = append(fds, fd)
	}
	return fds, nil
}

// udpPacedGen is the paced helper (see the comment above xdpHelperArg):
// udpLoadGen's loop, but asleep until the next send is due. Send i is
// due i periods of 1/rate (whole nanoseconds, the timer's own period)
// after the start.
func udpPacedGen(target, from, sinkAddr netip.AddrPort, sinkNS string, flows, rate, size int, d, wait time.Duration) (*udpPacedResult, error) {
	if flows < 1 || rate < 1 || size < udpHeader || size > 9000 {
		return nil, fmt.Errorf("want flows ≥ 1, rate ≥ 1 and %d ≤ size ≤ 9000", udpHeader)
	}
	period := time.Second / time.Duration(rate)
	total := int(d / period)
	if total < 1 {
		return nil, errors.New("no request to send: raise -rate or -duration")
	}
	var sink int
	var err error
	open := func() { sink, err = udpSocket(sinkAddr, netip.AddrPort{}) }
	if sinkNS == "" {
		open()
	} else if nserr := netnstest.In(sinkNS, open); nserr != nil {
		return nil, nserr
	}
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	defer unix.Close(sink)
	clients, err := udpBoundClients(flows, from, target)
	if err != nil {
		return nil, fmt.Errorf("clients: %w", err)
	}
	defer closeAll(clients)
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	defer unix.Close(tfd)
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	defer unix.Close(ep)
	for _, fd := range append([]int{tfd, sink}, clients...) {
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			return nil, err
		}
	}
	// The wait for the last replies sleeps in epoll_wait with a timeout,
	// which the kernel may stretch by the timer slack (50 µs by default);
	// a timerfd has none.
	unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)

	lat := make([]int64, total)
	for i := range lat {
		lat[i] = -1
	}
	run := rand.Uint32()
	req := pattern(size)
	binary.LittleEndian.PutUint32(req, run)
	reply := make([]byte, size+1)
	tick := make([]byte, 8)
	echo := newUDPVec(udpBatch, 1<<16)
	evs := make([]unix.EpollEvent, 16)
	var errs errorSample
	out := &udpPacedResult{}
	res := &out.udpLoadResult
	every := unix.NsecToTimespec(int64(period))
	// Made once, as the loop allocates nothing: ns per send, and per
	// echoed datagram of each echo.
	sendNs := make([]int64, 0, total)
	echoNs := make([]int64, 0, total)

	runtime.GC() // as in udpLoadGen: none under way during the loop
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mallocs := ms.Mallocs
	start := time.Now()
	if err := unix.TimerfdSettime(tfd, 0, &unix.ItimerSpec{Interval: every, Value: every}, nil); err != nil {
		return nil, err
	}
	var firstSend, lastSend time.Duration
	answered := int64(0)
	for seq := 0; ; {
		now := time.Since(start)
		timeout := -1 // until the timer, the sink or a reply
		if seq < total {
			if due := time.Duration(seq) * period; now >= due {
				if late := now - due; late > udpLateAfter {
					res.Late++
					res.MaxLateUs = max(res.MaxLateUs, float64(late)/1e3)
				}
				binary.LittleEndian.PutUint32(req[4:], uint32(seq))
				binary.LittleEndian.PutUint64(req[8:], uint64(now))
				_, e := rawWrite(clients[seq%flows], req)
				sendNs = append(sendNs, int64(time.Since(start)-now))
				if e != 0 {
					res.SendErrors++
					errs.add("send: " + e.Error())
				} else {
					res.Sent++
				}
				if seq == 0 {
					firstSend = now
				}
				lastSend = now
				seq++
				if seq == total {
					unix.TimerfdSettime(tfd, 0, &unix.ItimerSpec{}, nil) // no more ticks
				}
			}
			if seq < total && now >= time.Duration(seq)*period {
				timeout = 0 // behind: one more pass at once, after what has arrived
			}
		}
		if seq == total {
			if answered == res.Sent || now-lastSend > wait {
				break
			}
			timeout = int((wait-(now-lastSend))/time.Millisecond) + 1
		}

		n, err := unix.EpollWait(ep, evs, timeout)
		if err != nil && err != unix.EINTR {
			return nil, fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range evs[:max(n, 0)] {
			fd := int(ev.Fd)
			switch fd {
			case tfd:
				// Read, or the periodic timer stops: the kernel
				// re-arms it on a read. The loop goes by the clock.
				rawRead(tfd, tick)
				continue
			case sink:
				t, before := time.Now(), res.SinkReceived
				udpEcho(sink, echo, res, &errs)
				if n := res.SinkReceived - before; n > 0 && len(echoNs) < cap(echoNs) {
					echoNs = append(echoNs, int64(time.Since(t))/n)
				}
				continue
			}
			// One reply per socket and pass, not until EAGAIN: epoll
			// reports a socket with more again at once, and the read
			// that would find it empty is saved (on this VM a system
			// call costs microseconds, and the load CPU needs room).
			m, e := rawRead(fd, reply)
			if e == unix.EAGAIN {
				continue
			}
			if e != 0 {
				errs.add("receive: " + e.Error())
				continue
			}
			rtt := time.Since(start)
			i := int(binary.LittleEndian.Uint32(reply[4:]))
			if m != size || binary.LittleEndian.Uint32(reply) != run || i >= total ||
				!bytes.Equal(reply[udpHeader:m], req[udpHeader:]) {
				res.Bad++
				continue
			}
			if lat[i] >= 0 {
				res.Duplicates++
				continue
			}
			lat[i] = int64(rtt) - int64(binary.LittleEndian.Uint64(reply[8:]))
			answered++
		}
	}
	runtime.ReadMemStats(&ms)
	res.LoopAllocs = ms.Mallocs - mallocs
	res.Replies = answered
	res.SendS = (lastSend - firstSend).Seconds()
	res.Errors = errs.sample()

	got := slices.DeleteFunc(lat, func(v int64) bool { return v < 0 })
	slices.Sort(got)
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	res.P50Us, res.P99Us, res.P999Us = us(percentile(got, 0.50)), us(percentile(got, 0.99)), us(percentile(got, 0.999))
	if len(got) > 0 {
		res.MaxUs = us(got[len(got)-1])
	}
	// The clients' drops: /proc/net/udp is this process's namespace's (the
	// sink's are counted by the harness, in its namespace).
	res.Drops = udpDrops(clients)
	slices.Sort(sendNs)
	slices.Sort(echoNs)
	out.SendUs, out.EchoUs = us(percentile(sendNs, 0.5)), us(percentile(echoNs, 0.5))
	return out, nil
}

// udpFlood is the flood helper: unpaced sendmmsg of batch datagrams on
// each flow in turn, for d.
func udpFlood(target, from netip.AddrPort, flows, size, batch int, d time.Duration) (*udpFloodResult, error) {
	if flows < 1 || size < 1 || size > 9000 || batch < 1 || batch > 1024 {
		return nil, errors.New("want flows ≥ 1, 1 ≤ size ≤ 9000 and 1 ≤ batch ≤ 1024")
	}
	clients, err := udpBoundClients(flows, from, target)
	if err != nil {
		return nil, fmt.Errorf("clients: %w", err)
	}
	defer closeAll(clients)
	// Connected sockets: a message is only its payload, the same for all.
	payload := pattern(size)
	iov := unix.Iovec{Base: &payload[0]}
	iov.SetLen(size)
	msgs := make([]mmsgHdr, batch)
	for i := range msgs {
		msgs[i].hdr.Iov, msgs[i].hdr.Iovlen = &iov, 1
	}
	var errs errorSample
	res := &udpFloodResult{}
	start := time.Now()
	for i := 0; time.Since(start) < d; i++ {
		n, e := mmsgCall(unix.SYS_SENDMMSG, clients[i%flows], msgs)
		res.SendCalls++
		if n > 0 {
			res.Sent += int64(n)
		}
		if e != 0 {
			res.SendErrors++
			errs.add("send: " + e.Error())
		}
	}
	res.SendS = time.Since(start).Seconds()
	res.Errors = errs.sample()
	return res, nil
}
