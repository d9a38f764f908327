package udpxdp

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/straitproxy/strait/internal/netnstest"
)

// The program's return codes.
const (
	xdpDrop     = 1
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
)

// xdpMd is the kernel's struct xdp_md, the context of a test run.
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// testRunner runs the program on frames (BPF_PROG_RUN) from a thread in
// the proxy's namespace, where the ingress interface and the FIB are.
type testRunner struct {
	jobs chan *runJob
}

type runJob struct {
	frame   []byte
	ifindex int
	ret     uint32
	out     []byte
	err     error
	done    chan struct{}
}

func newTestRunner(t testing.TB, ns string, prog *ebpf.Program) *testRunner {
	r := &testRunner{jobs: make(chan *runJob)}
	go netnstest.In(ns, func() {
		for j := range r.jobs {
			ctx := xdpMd{DataEnd: uint32(len(j.frame)), IngressIfindex: uint32(j.ifindex)}
			out := make([]byte, len(j.frame)+256)
			opts := ebpf.RunOptions{Data: j.frame, DataOut: out, Context: ctx}
			j.ret, j.err = prog.Run(&opts)
			j.out = opts.DataOut
			close(j.done)
		}
	})
	t.Cleanup(func() { close(r.jobs) })
	return r
}

func (r *testRunner) run(frame []byte, ifindex int) (uint32, []byte, error) {
	j := &runJob{frame: frame, ifindex: ifindex, done: make(chan struct{})}
	r.jobs <- j
	<-j.done
	return j.ret, j.out, j.err
}

// checksum is the Internet checksum of b, folded, from sum.
func checksum(b []byte, sum uint32) uint16 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// udpChecksum is the UDP checksum of seg (header, check zeroed, and
// payload) between src and dst.
func udpChecksum(src, dst netip.Addr, seg []byte) uint16 {
	var pseudo []byte
	pseudo = append(pseudo, src.AsSlice()...)
	pseudo = append(pseudo, dst.AsSlice()...)
	pseudo = append(pseudo, 0, 17)
	pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(len(seg)))
	var sum uint32
	for i := 0; i+1 < len(pseudo); i += 2 {
		sum += uint32(pseudo[i])<<8 | uint32(pseudo[i+1])
	}
	c := checksum(seg, sum)
	if c == 0 {
		c = 0xffff
	}
	return c
}

// frame builds an Ethernet frame to mac of a UDP datagram from src to
// dst, checksums right, with ttl.
func frame(mac net.HardwareAddr, src, dst netip.AddrPort, ttl byte, payload []byte) []byte {
	eth := make([]byte, 14)
	copy(eth, mac)
	udp := binary.BigEndian.AppendUint16(nil, src.Port())
	udp = binary.BigEndian.AppendUint16(udp, dst.Port())
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(udp, 0, 0)
	udp = append(udp, payload...)
	binary.BigEndian.PutUint16(udp[6:], udpChecksum(src.Addr(), dst.Addr(), udp))
	if src.Addr().Is4() {
		binary.BigEndian.PutUint16(eth[12:], 0x0800)
		ip := []byte{0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, ttl, 17, 0, 0}
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
		ip = append(ip, src.Addr().AsSlice()...)
		ip = append(ip, dst.Addr().AsSlice()...)
		binary.BigEndian.PutUint16(ip[10:], checksum(ip, 0))
		return append(append(eth, ip...), udp...)
	}
	binary.BigEndian.PutUint16(eth[12:], 0x86dd)
	ip := []byte{0x60, 0, 0, 0, 0, 0, 17, ttl}
	binary.BigEndian.PutUint16(ip[4:], uint16(len(udp)))
	ip = append(ip, src.Addr().AsSlice()...)
	ip = append(ip, dst.Addr().AsSlice()...)
	return append(append(eth, ip...), udp...)
}

// udpOf returns the IP addresses, the IP header and the UDP datagram of
// a frame whose lengths agree, or ok false.
func udpOf(b []byte) (src, dst netip.AddrPort, iph, udp []byte, ok bool) {
	if len(b) < 14 {
		return
	}
	ip := b[14:]
	var s, d netip.Addr
	switch binary.BigEndian.Uint16(b[12:]) {
	case 0x0800:
		if len(ip) < 28 || ip[0] != 0x45 || ip[9] != 17 {
			return
		}
		n := int(binary.BigEndian.Uint16(ip[2:]))
		if n < 28 || n > len(ip) {
			return
		}
		s, d = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		iph, udp = ip[:20], ip[20:n]
	case 0x86dd:
		if len(ip) < 48 || ip[6] != 17 {
			return
		}
		n := int(binary.BigEndian.Uint16(ip[4:]))
		if 40+n > len(ip) || n < 8 {
			return
		}
		s, d = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		iph, udp = ip[:40], ip[40:40+n]
	default:
		return
	}
	if int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
		return
	}
	src = netip.AddrPortFrom(s, binary.BigEndian.Uint16(udp[0:]))
	dst = netip.AddrPortFrom(d, binary.BigEndian.Uint16(udp[2:]))
	return src, dst, iph, udp, true
}

// udpValid says whether a datagram's UDP checksum is right (or absent,
// over IPv4).
func udpValid(src, dst netip.Addr, udp []byte) bool {
	got := binary.BigEndian.Uint16(udp[6:])
	if got == 0 {
		return src.Is4()
	}
	seg := bytes.Clone(udp)
	seg[6], seg[7] = 0, 0
	return udpChecksum(src, dst, seg) == got
}

// FuzzProgram runs the program on frames, mostly of a flow it forwards
// both ways, IPv4 and IPv6, and mangled: what it passes is unchanged;
// what it sends on is a well-formed datagram with right checksums (Go
// computes them from scratch), the flow's other side's addresses, the
// same payload; it never drops (the flow has no rate).
func FuzzProgram(f *testing.F) {
	tp := newTopology(f)
	p := load(f, tp, Native)
	var c1, o1 *net.Interface
	in(f, tp.Proxy, func() {
		c1, _ = net.InterfaceByName("c1")
		o1, _ = net.InterfaceByName("o1")
	})
	var flows [2]Flow
	for fam := range flows {
		flows[fam], _ = newFlow(f, tp, fam)
		if err := p.Add(flows[fam]); err != nil {
			f.Fatal(err)
		}
	}
	r := newTestRunner(f, tp.Proxy, p.objs.StraitUdp)
	for fam, fl := range flows {
		for _, size := range []int{0, 1, 7, 100, 1401} {
			payload := bytes.Repeat([]byte{byte(size)}, size)
			f.Add(frame(c1.HardwareAddr, fl.Client, fl.Front, 64, payload), false, uint8(fam))
			f.Add(frame(o1.HardwareAddr, fl.Upstream, fl.Back, 3, payload), true, uint8(fam))
		}
		// Another flow's addresses, another host's MAC, the wrong
		// interface: passed.
		f.Add(frame(c1.HardwareAddr, netip.AddrPortFrom(fl.Client.Addr(), 1), fl.Front, 64, []byte("x")), false, uint8(fam))
		f.Add(frame(net.HardwareAddr{2, 0x11, 0x22, 0x33, 0x44, 0x55}, fl.Client, fl.Front, 64, []byte("x")), false, uint8(fam))
		f.Add(frame(o1.HardwareAddr, fl.Client, fl.Front, 64, []byte("x")), true, uint8(fam))
	}
	v4 := frame(c1.HardwareAddr, flows[0].Client, flows[0].Front, 64, []byte("abc"))
	frag := bytes.Clone(v4)
	frag[14+6] |= 0x20 // more fragments
	f.Add(frag, false, uint8(0))
	opts := bytes.Clone(v4)
	opts[14] = 0x46
	f.Add(opts, false, uint8(0))
	short := bytes.Clone(v4)
	binary.BigEndian.PutUint16(short[14+20+4:], 9) // UDP length past the datagram
	f.Add(short, false, uint8(0))
	f.Add(v4[:30], false, uint8(0))

	// The seeds reach the forwarding path: a flow's datagram is sent on,
	// each way; the same for another host's MAC, or arriving by the
	// other interface, passes.
	fl := flows[0]
	other := net.HardwareAddr{2, 0x11, 0x22, 0x33, 0x44, 0x55}
	for _, tc := range []struct {
		what  string
		frame []byte
		ifi   *net.Interface
		want  uint32
	}{
		{"a client's datagram", frame(c1.HardwareAddr, fl.Client, fl.Front, 64, []byte("x")), c1, xdpRedirect},
		{"a reply", frame(o1.HardwareAddr, fl.Upstream, fl.Back, 64, []byte("x")), o1, xdpRedirect},
		{"a client's datagram to another MAC", frame(other, fl.Client, fl.Front, 64, []byte("x")), c1, xdpPass},
		{"a client's datagram by the upstream interface", frame(o1.HardwareAddr, fl.Client, fl.Front, 64, []byte("x")), o1, xdpPass},
		{"a reply by the client interface", frame(c1.HardwareAddr, fl.Upstream, fl.Back, 64, []byte("x")), c1, xdpPass},
	} {
		if ret, _, err := r.run(tc.frame, tc.ifi.Index); err != nil || ret != tc.want {
			f.Fatalf("%s: returned %d, %v; want %d", tc.what, ret, err, tc.want)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, reply bool, _ uint8) {
		if len(b) < 14 || len(b) > 3000 {
			return
		}
		ifindex := c1.Index
		if reply {
			ifindex = o1.Index
		}
		before := p.Counters()
		ret, out, err := r.run(bytes.Clone(b), ifindex)
		if err != nil {
			t.Fatalf("test run: %v", err)
		}
		switch ret {
		case xdpPass:
			if !bytes.Equal(out, b) {
				t.Fatalf("passed a frame changed:\n% x\n% x", b, out)
			}
			return
		case xdpTX, xdpRedirect:
		default:
			t.Fatalf("returned %d", ret)
		}
		// Forwarded: the input was one of the flows' datagrams, whole.
		src, dst, inIP, inUDP, ok := udpOf(b)
		if !ok {
			t.Fatalf("forwarded a frame that is not a whole UDP datagram:\n% x", b)
		}
		if inIP[0] == 0x45 && checksum(inIP, 0) != 0 {
			t.Fatalf("forwarded an IPv4 packet whose header checksum was wrong")
		}
		var want [2]netip.AddrPort
		for _, fl := range flows {
			switch {
			case same(src, fl.Client) && same(dst, fl.Front):
				want = [2]netip.AddrPort{fl.Back, fl.Upstream}
			case same(src, fl.Upstream) && same(dst, fl.Back):
				want = [2]netip.AddrPort{fl.Front, fl.Client}
			}
		}
		if !want[0].IsValid() {
			t.Fatalf("forwarded %v -> %v, of no flow", src, dst)
		}
		gs, gd, outIP, outUDP, ok := udpOf(out)
		if !ok || !same(gs, want[0]) || !same(gd, want[1]) {
			t.Fatalf("forwarded %v -> %v (whole: %v), want %v -> %v", gs, gd, ok, want[0], want[1])
		}
		if outIP[0] == 0x45 && checksum(outIP, 0) != 0 {
			t.Fatalf("forwarded an IPv4 header whose checksum is wrong")
		}
		if outIP[0] == 0x45 && (outIP[8] != 64 || outIP[1] != 0) || outIP[0]>>4 == 6 && (outIP[7] != 64 || binary.BigEndian.Uint32(outIP) != 0x60000000) {
			t.Errorf("forwarded TTL or hop limit not 64, or a TOS, traffic class or flow label")
		}
		if !bytes.Equal(out[6:12], c1.HardwareAddr) && !bytes.Equal(out[6:12], o1.HardwareAddr) {
			t.Errorf("forwarded from MAC %x, not strait's", out[6:12])
		}
		if udpValid(src.Addr(), dst.Addr(), inUDP) && !udpValid(gs.Addr(), gd.Addr(), outUDP) {
			t.Fatalf("forwarded a datagram whose UDP checksum was right and is wrong")
		}
		if !bytes.Equal(outUDP[8:], inUDP[8:]) || !bytes.Equal(out[14+len(outIP)+len(outUDP):], b[14+len(inIP)+len(inUDP):]) {
			t.Fatalf("forwarded a payload changed")
		}
		if c := p.Counters(); c.Forwarded != before.Forwarded+1 {
			t.Fatalf("forwarded, and counted %d", c.Forwarded-before.Forwarded)
		}
	})
}

// same says whether a and b are one address and port, IPv4-mapped or not.
func same(a, b netip.AddrPort) bool {
	return a.Addr().Unmap() == b.Addr().Unmap() && a.Port() == b.Port()
}
