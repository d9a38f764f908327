//go:build linux

package udpproxy

import (
	"encoding/binary"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr: one datagram of a recvmmsg or sendmmsg.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32 // bytes received or sent
	_   [4]byte
}

// cmsgSpace is the room a datagram's control messages take: a UDP_GRO or
// UDP_SEGMENT size, and an IP_PKTINFO or IPV6_PKTINFO.
var cmsgSpace = unix.CmsgSpace(4) + unix.CmsgSpace(unix.SizeofInet6Pktinfo)

// batch is a vector of datagrams for one recvmmsg or sendmmsg, with the
// buffers, addresses and control space each needs, made once: moving a
// datagram allocates nothing.
type batch struct {
	msgs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // room for either family
	ctrl  []byte                  // cmsgSpace each
	bufs  [][]byte                // a receive batch's own buffers

	// What set was given, for a send to go again another way.
	data [][]byte
	seg  []int
	to   []*unix.RawSockaddrInet6
	from []netip.Addr
}

// newBatch returns a batch of n datagrams; with size > 0 each has a
// buffer of its own (a receive batch), else its buffers are set per send.
func newBatch(n, size int) *batch {
	b := &batch{
		msgs:  make([]mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n),
		ctrl:  make([]byte, n*cmsgSpace),
		data:  make([][]byte, n),
		seg:   make([]int, n),
		to:    make([]*unix.RawSockaddrInet6, n),
		from:  make([]netip.Addr, n),
	}
	if size > 0 {
		b.bufs = make([][]byte, n)
		for i := range b.bufs {
			b.bufs[i] = make([]byte, size)
		}
	}
	return b
}

// armRecv readies datagrams lo to hi for a recvmmsg: each its whole
// buffer and control space, with room for the source's address if named.
func (b *batch) armRecv(lo, hi int, named bool) {
	for i := lo; i < hi; i++ {
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(len(b.bufs[i]))
		h := &b.msgs[i].hdr
		h.Iov, h.Iovlen = &b.iovs[i], 1
		h.Name, h.Namelen = nil, 0
		if named {
			h.Name, h.Namelen = (*byte)(unsafe.Pointer(&b.names[i])), unix.SizeofSockaddrInet6
		}
		h.Control = &b.ctrl[i*cmsgSpace]
		h.SetControllen(cmsgSpace)
		h.Flags = 0
	}
}

// set readies datagram i of a send batch: p to the socket's peer (to nil)
// or to the address to, from the local address from if valid, in
// segments of seg bytes (GSO) if seg > 0.
func (b *batch) set(i int, p []byte, to *unix.RawSockaddrInet6, toLen uint32, from netip.Addr, seg int) {
	b.data[i], b.seg[i], b.to[i], b.from[i] = p, seg, to, from
	b.iovs[i].Base = nil // an empty datagram is a datagram too
	if len(p) > 0 {
		b.iovs[i].Base = &p[0]
	}
	b.iovs[i].SetLen(len(p))
	h := &b.msgs[i].hdr
	h.Iov, h.Iovlen = &b.iovs[i], 1
	h.Name, h.Namelen = nil, 0
	if to != nil {
		h.Name, h.Namelen = (*byte)(unsafe.Pointer(to)), toLen
	}
	c := b.ctrl[i*cmsgSpace : (i+1)*cmsgSpace]
	n := 0
	if seg > 0 {
		n += putCmsg(c, unix.SOL_UDP, unix.UDP_SEGMENT, 2, func(d []byte) { binary.NativeEndian.PutUint16(d, uint16(seg)) })
	}
	if from.IsValid() {
		if from.Is4() {
			n += putCmsg(c[n:], unix.IPPROTO_IP, unix.IP_PKTINFO, unix.SizeofInet4Pktinfo, func(d []byte) {
				clear(d)
				a := from.As4()
				copy(d[4:8], a[:]) // ipi_spec_dst
			})
		} else {
			n += putCmsg(c[n:], unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, unix.SizeofInet6Pktinfo, func(d []byte) {
				clear(d)
				a := from.As16()
				copy(d[:16], a[:])
			})
		}
	}
	h.Control = nil
	h.SetControllen(0)
	if n > 0 {
		h.Control = &c[0]
		h.SetControllen(n)
	}
	h.Flags = 0
}

// maxSegments bounds the datagrams join puts in one GSO send (the
// kernel's UDP_MAX_SEGMENTS was 64 before Linux 6.9).
const maxSegments = 64

// join appends p, one datagram, to queued datagram i, a run of
// datagrams of one size sent with GSO, if it fits: as large as the run's
// segments or smaller (then it ends the run), and within the run's
// buffer, 64 segments, the largest UDP payload, and segments of maxSeg
// bytes (what the path's MTU carries). The datagrams of a
// burst to one peer then cost one send, and travel as one through the
// kernel's stack to where they are split.
func (b *batch) join(i int, p []byte, maxSeg int) bool {
	run, seg := b.data[i], b.seg[i]
	if seg == 0 {
		seg = len(run) // a single datagram: its size is the run's
	}
	n := len(run) + len(p)
	if len(p) == 0 || len(p) > seg || seg > maxSeg || len(run)%seg != 0 || n > MaxDatagram || n > cap(run) || (n+seg-1)/seg > maxSegments {
		return false
	}
	run = append(run, p...) // within run's buffer: no allocation
	to, toLen := b.to[i], b.msgs[i].hdr.Namelen
	b.set(i, run, to, toLen, b.from[i], seg)
	return true
}

// putCmsg writes a control message of level and typ with a data of size
// bytes that fill writes, and returns the room it took.
func putCmsg(c []byte, level, typ int32, size int, fill func([]byte)) int {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(size))
	fill(c[unix.CmsgLen(0):unix.CmsgLen(size)])
	return unix.CmsgSpace(size)
}

// received is what the control messages of received datagram i say: the
// size of its segments if the kernel coalesced several (GRO, else 0), and
// the local address it was sent to (with IP_PKTINFO, else invalid).
func (b *batch) received(i int) (seg int, to netip.Addr) {
	h := &b.msgs[i].hdr
	c := b.ctrl[i*cmsgSpace : i*cmsgSpace+int(h.Controllen)]
	for len(c) >= unix.SizeofCmsghdr {
		m := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
		if m.Len < unix.SizeofCmsghdr || int(m.Len) > len(c) {
			break
		}
		d := c[unix.CmsgLen(0):m.Len]
		switch {
		case m.Level == unix.SOL_UDP && m.Type == unix.UDP_GRO && len(d) >= 2:
			if len(d) >= 4 {
				seg = int(binary.NativeEndian.Uint32(d))
			} else {
				seg = int(binary.NativeEndian.Uint16(d))
			}
		case m.Level == unix.IPPROTO_IP && m.Type == unix.IP_PKTINFO && len(d) >= unix.SizeofInet4Pktinfo:
			to = netip.AddrFrom4([4]byte(d[8:12])) // ipi_addr
		case m.Level == unix.IPPROTO_IPV6 && m.Type == unix.IPV6_PKTINFO && len(d) >= unix.SizeofInet6Pktinfo:
			to = netip.AddrFrom16([16]byte(d[:16])).Unmap()
		}
		space := unix.CmsgSpace(int(m.Len) - unix.CmsgLen(0))
		if space > len(c) {
			break
		}
		c = c[space:]
	}
	return seg, to
}

// source is received datagram i's source address.
func (b *batch) source(i int) netip.AddrPort {
	return fromSockaddr(&b.names[i])
}

// fromSockaddr reads a sockaddr_in or sockaddr_in6 (without its zone: a
// zone would cost an allocation each datagram, and strait's listeners
// are not link-local).
func fromSockaddr(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&s4.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), port)
	case unix.AF_INET6:
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port)
	}
	return netip.AddrPort{}
}

// toSockaddr writes ap as a sockaddr of the family fam (AF_INET6 takes
// an IPv4 address mapped), and returns its length.
func toSockaddr(ap netip.AddrPort, fam int, sa *unix.RawSockaddrInet6) uint32 {
	*sa = unix.RawSockaddrInet6{}
	port := (*[2]byte)(unsafe.Pointer(&sa.Port))
	binary.BigEndian.PutUint16(port[:], ap.Port())
	if fam == unix.AF_INET {
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		s4.Family = unix.AF_INET
		s4.Addr = ap.Addr().Unmap().As4()
		return unix.SizeofSockaddrInet4
	}
	sa.Family = unix.AF_INET6
	sa.Addr = ap.Addr().As16()
	return unix.SizeofSockaddrInet6
}

// mmsg calls recvmmsg or sendmmsg (trap) on fd for msgs, without
// blocking, and returns how many datagrams moved.
func mmsg(trap uintptr, fd int, msgs []mmsghdr) (int, unix.Errno) {
	for {
		r, _, e := unix.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		return int(r), e
	}
}
