// Package udpxdp is strait's fast path for UDP: an XDP program that
// forwards the datagrams of established flows inside the kernel, at the
// driver, before the socket layer sees them.
//
// User space keeps deciding (internal/udpproxy opens each flow, balances
// it, limits it and ends it); once a flow is answered it is added here,
// both directions, and from then on its datagrams have their addresses
// and ports rewritten (checksums fixed incrementally), their next hop
// found with bpf_fib_lookup, and leave through a devmap redirect. What
// the program does not know, or cannot route there, passes to the kernel
// unchanged, so the user-space path is always behind it (docs/udp.md
// lists what passes).
//
// The program's source is bpf/xdp.c; the object built from it is committed,
// so building strait needs no clang (go generate rebuilds it).
//
// bpf_fib_lookup answers only for interfaces with IP forwarding on
// (net.ipv4.conf.IFACE.forwarding, net.ipv6.conf.IFACE.forwarding):
// Attach logs when it is off, and the flows stay in user space.
package udpxdp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Mode is how the program attaches to an interface.
type Mode string

const (
	// Native runs the program in the driver, before an skb is made: the
	// fast one, where the driver supports it.
	Native Mode = "native"
	// Generic runs it after the skb is made, on any interface.
	Generic Mode = "generic"
)

// Flow is one flow the program forwards, both ways.
type Flow struct {
	Client   netip.AddrPort // the client's address
	Front    netip.AddrPort // strait's address the client sends to
	Back     netip.AddrPort // strait's upstream socket's address
	Upstream netip.AddrPort // the endpoint's address
	// Rate, if > 0, is how many datagrams a second the program forwards
	// each way, in bursts of up to Burst; it drops the rest (counted).
	Rate  float64
	Burst int
}

// Counts are what the program forwarded of one flow.
type Counts struct {
	In, InBytes   int64 // client to upstream: datagrams, UDP payload bytes
	Out, OutBytes int64 // upstream to client
}

// Counters are the program's, summed over the CPUs.
type Counters struct {
	Forwarded      uint64 // datagrams forwarded in the kernel
	ForwardedBytes uint64 // their UDP payload bytes
	Passed         uint64 // frames of no flow, passed to the kernel
	Fallback       uint64 // datagrams of a flow the FIB could not route here, passed to the kernel
	Dropped        uint64 // datagrams of a flow over its rate
}

// Path is the loaded program and its maps, and the interfaces it is
// attached to. A process has one, whatever its listeners: an interface
// takes one XDP program.
type Path struct {
	objs   xdpObjects
	logger *slog.Logger

	mu       sync.Mutex
	attached map[string]*attachment
	closed   bool
}

type attachment struct {
	refs    int
	mode    Mode
	ifindex int
	link    link.Link // nil while another program holds the interface
}

// retryEvery is how often Attach tries again an interface another
// program holds: the old process's, during a binary upgrade.
const retryEvery = time.Second

// Load loads the program with a flow table for maxFlows flows (both
// directions of each; least recently used ones go first when it is full,
// back to user space). It attaches nowhere yet.
func Load(maxFlows int, logger *slog.Logger) (*Path, error) {
	spec, err := loadXdp()
	if err != nil {
		return nil, err
	}
	spec.Maps[xdpMapFlows].MaxEntries = uint32(2 * max(maxFlows, 512))
	p := &Path{logger: logger, attached: make(map[string]*attachment)}
	if err := spec.LoadAndAssign(&p.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("loading the XDP program: %+v", ve)
		}
		return nil, fmt.Errorf("loading the XDP program: %w", err)
	}
	return p, nil
}

// Attach attaches the program to the interface named iface, or counts
// one more user of it (attaching again if the interface was made again
// since). If another XDP program holds the interface, it logs so and
// tries again every second until it attaches or Detach.
func (p *Path) Attach(iface string, mode Mode) error {
	var flags link.XDPAttachFlags
	switch mode {
	case Native, "":
		mode, flags = Native, link.XDPDriverMode
	case Generic:
		flags = link.XDPGenericMode
	default:
		return fmt.Errorf("xdp mode %q: want native or generic", mode)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return net.ErrClosed
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return fmt.Errorf("xdp: %w", err)
	}
	refs := 1
	if a := p.attached[iface]; a != nil {
		if a.ifindex == ifi.Index {
			a.refs++
			if a.mode != mode {
				p.logger.Warn("xdp: interface attached already in another mode; it stays so", "interface", iface, "mode", a.mode, "asked", mode)
			}
			return nil
		}
		// The interface was deleted and made again: the program went
		// with the old one.
		refs += a.refs
		p.detach(iface, a)
	}
	var m xdpMac
	copy(m.Addr[:], ifi.HardwareAddr)
	if err := p.objs.Macs.Put(uint32(ifi.Index), m); err != nil {
		return fmt.Errorf("xdp: adding %s to the program's interfaces: %w", iface, err)
	}
	if err := p.objs.Ports.Put(uint32(ifi.Index), uint32(ifi.Index)); err != nil {
		p.objs.Macs.Delete(uint32(ifi.Index))
		return fmt.Errorf("xdp: adding %s to the program's ports: %w", iface, err)
	}
	a := &attachment{refs: refs, mode: mode, ifindex: ifi.Index}
	l, err := link.AttachXDP(link.XDPOptions{Program: p.objs.StraitUdp, Interface: ifi.Index, Flags: flags})
	if err != nil {
		if !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EEXIST) {
			p.objs.Ports.Delete(uint32(ifi.Index))
			p.objs.Macs.Delete(uint32(ifi.Index))
			return fmt.Errorf("xdp: attaching to %s (%s): %w", iface, mode, err)
		}
		p.logger.Warn("xdp: another XDP program holds the interface; trying again every second", "interface", iface, "err", err)
		// The interface index is the caller's network namespace's.
		if ns, err := os.Open("/proc/thread-self/ns/net"); err == nil {
			go p.retry(iface, a, flags, ns)
		} else {
			p.logger.Warn("xdp: cannot try again to attach", "interface", iface, "err", err)
		}
	}
	a.link = l
	p.attached[iface] = a
	for _, fam := range []string{"ipv4", "ipv6"} {
		if b, err := os.ReadFile("/proc/sys/net/" + fam + "/conf/" + iface + "/forwarding"); err == nil && len(b) > 0 && b[0] == '0' {
			p.logger.Warn("xdp: forwarding is off on the interface, so the program cannot route its "+fam+" flows, which stay in user space",
				"interface", iface, "sysctl", "net."+fam+".conf."+iface+".forwarding")
		}
	}
	if l != nil {
		p.logger.Info("xdp: attached", "interface", iface, "mode", mode)
	}
	return nil
}

// retry attaches a to iface once the program holding it goes, unless a
// is detached first (or replaced, the interface made again).
func (p *Path) retry(iface string, a *attachment, flags link.XDPAttachFlags, ns *os.File) {
	// On a thread of its own in Attach's namespace, which ends with it
	// (never unlocked).
	runtime.LockOSThread()
	err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET)
	ns.Close()
	if err != nil {
		p.logger.Warn("xdp: cannot try again to attach", "interface", iface, "err", err)
		return
	}
	t := time.NewTicker(retryEvery)
	defer t.Stop()
	for range t.C {
		p.mu.Lock()
		if p.closed || p.attached[iface] != a {
			p.mu.Unlock()
			return
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: p.objs.StraitUdp, Interface: a.ifindex, Flags: flags})
		if err == nil {
			a.link = l
			p.logger.Info("xdp: attached", "interface", iface, "mode", a.mode)
		}
		p.mu.Unlock()
		if err == nil {
			return
		}
	}
}

// Detach drops one user of iface, and detaches the program from it
// with the last.
func (p *Path) Detach(iface string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.attached[iface]
	if a == nil {
		return
	}
	if a.refs--; a.refs > 0 {
		return
	}
	p.detach(iface, a)
}

func (p *Path) detach(iface string, a *attachment) {
	if a.link != nil {
		a.link.Close()
	}
	p.objs.Ports.Delete(uint32(a.ifindex))
	p.objs.Macs.Delete(uint32(a.ifindex))
	delete(p.attached, iface)
	p.logger.Info("xdp: detached", "interface", iface)
}

// Close detaches the program from every interface and unloads it.
func (p *Path) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	for iface, a := range p.attached {
		p.detach(iface, a)
	}
	return p.objs.Close()
}

// Attached says whether the program is attached to iface now.
func (p *Path) Attached(iface string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.attached[iface]
	return a != nil && a.link != nil
}

func key(src, dst netip.AddrPort) xdpFlowKey {
	return xdpFlowKey{Src: src.Addr().As16(), Dst: dst.Addr().As16(), Sport: htons(src.Port()), Dport: htons(dst.Port())}
}

func rewrite(src, dst netip.AddrPort, rate float64, burst int) xdpFlow {
	v := xdpFlow{Src: src.Addr().As16(), Dst: dst.Addr().As16(), Sport: htons(src.Port()), Dport: htons(dst.Port())}
	if rate > 0 {
		v.Interval = uint64(float64(time.Second) / rate)
		v.Burst = uint64(max(burst-1, 0)) * v.Interval
	}
	return v
}

// htons puts a port in network byte order, as the program reads it from
// the map (the maps hold host-order integers; the ports are the
// packet's bytes).
func htons(p uint16) uint16 { return p<<8 | p>>8 }

// canForward says whether the program can take a flow between these
// addresses: one family throughout (a flow from an IPv4 client to an
// IPv6 endpoint changes its header's size, which the program does not).
func canForward(f Flow) bool {
	a := f.Client.Addr().Unmap().Is4()
	return a == f.Front.Addr().Unmap().Is4() && a == f.Back.Addr().Unmap().Is4() && a == f.Upstream.Addr().Unmap().Is4()
}

// ErrFamilies is Add's answer for a flow that changes address family.
var ErrFamilies = errors.New("xdp: a flow that changes IP version stays in user space")

// Add has the program forward f's datagrams both ways.
func (p *Path) Add(f Flow) error {
	if !canForward(f) {
		return ErrFamilies
	}
	// IPv4-mapped addresses on a dual-stack socket are the packets' IPv4
	// ones: the program keys IPv4 in that form.
	in := rewrite(f.Back, f.Upstream, f.Rate, f.Burst)
	out := rewrite(f.Front, f.Client, f.Rate, f.Burst)
	if err := p.objs.Flows.Put(key(f.Client, f.Front), in); err != nil {
		return fmt.Errorf("xdp: adding a flow: %w", err)
	}
	if err := p.objs.Flows.Put(key(f.Upstream, f.Back), out); err != nil {
		p.objs.Flows.Delete(key(f.Client, f.Front))
		return fmt.Errorf("xdp: adding a flow: %w", err)
	}
	return nil
}

// Remove stops the program forwarding f, and returns what it forwarded.
func (p *Path) Remove(f Flow) Counts {
	var c Counts
	var v xdpFlow
	if p.objs.Flows.LookupAndDelete(key(f.Client, f.Front), &v) == nil {
		c.In, c.InBytes = int64(v.Packets), int64(v.Bytes)
	}
	if p.objs.Flows.LookupAndDelete(key(f.Upstream, f.Back), &v) == nil {
		c.Out, c.OutBytes = int64(v.Packets), int64(v.Bytes)
	}
	return c
}

// Idle says how long ago the program last forwarded a datagram of f,
// either way; ok is false if it never did.
func (p *Path) Idle(f Flow) (idle time.Duration, ok bool) {
	var latest uint64
	var v xdpFlow
	for _, k := range [2]xdpFlowKey{key(f.Client, f.Front), key(f.Upstream, f.Back)} {
		if p.objs.Flows.Lookup(k, &v) == nil {
			latest = max(latest, v.Seen)
		}
	}
	if latest == 0 {
		return 0, false
	}
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return max(time.Duration(ts.Nano()-int64(latest)), 0), true
}

// Counters sums the program's counters over the CPUs.
func (p *Path) Counters() Counters {
	var sum [5]uint64
	for i := range sum {
		var per []uint64
		if p.objs.Counters.Lookup(uint32(i), &per) == nil {
			for _, n := range per {
				sum[i] += n
			}
		}
	}
	return Counters{Forwarded: sum[0], ForwardedBytes: sum[1], Passed: sum[2], Fallback: sum[3], Dropped: sum[4]}
}
