// Package netnstest builds the network of the UDP fast path's tests and
// benchmark: three network namespaces, a client, strait's (the proxy)
// and an origin, joined by two veth pairs, IPv4 and IPv6 on each.
//
//	client c0 ── c1 proxy o1 ── o0 origin
//
// The proxy's ends, c1 and o1, are where XDP attaches. The senders' ends
// send whole checksums (tx off: a frame XDP forwards loses the skb's
// note that its checksum is partial), and have GRO on, which a veth
// needs to take frames another veth's XDP program redirects to it. IP
// forwarding is on in the proxy, which bpf_fib_lookup asks for.
//
// AddDirect adds a third veth pair, straight from the client to the
// origin, for a benchmark's baseline without the proxy:
//
//	client d0 ── d1 origin
//
// It needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and ip, ethtool and
// sysctl.
package netnstest

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// Topology is the three namespaces, by name, and their addresses:
// index 0 IPv4, 1 IPv6.
type Topology struct {
	Client, Proxy, Origin string
	ClientIP, FrontIP     [2]netip.Addr // c0, c1
	BackIP, OriginIP      [2]netip.Addr // o1, o0
	// The direct link's ends, d0 and d1, once AddDirect made it.
	DirectClientIP, DirectOriginIP [2]netip.Addr
}

// Create makes the namespaces, named after tag (a few characters that
// set this run apart: the pid), and their links. Close removes them.
func Create(tag string) (*Topology, error) {
	p := netip.MustParseAddr
	tp := &Topology{
		Client: "nc" + tag, Proxy: "np" + tag, Origin: "no" + tag,
		ClientIP: [2]netip.Addr{p("10.91.1.2"), p("fd00:91:1::2")},
		FrontIP:  [2]netip.Addr{p("10.91.1.1"), p("fd00:91:1::1")},
		BackIP:   [2]netip.Addr{p("10.91.2.1"), p("fd00:91:2::1")},
		OriginIP: [2]netip.Addr{p("10.91.2.2"), p("fd00:91:2::2")},
	}
	steps := [][]string{}
	for _, ns := range []string{tp.Client, tp.Proxy, tp.Origin} {
		steps = append(steps, []string{"ip", "netns", "add", ns}, []string{"ip", "-n", ns, "link", "set", "lo", "up"})
	}
	steps = append(steps,
		[]string{"ip", "link", "add", "c0", "netns", tp.Client, "type", "veth", "peer", "name", "c1", "netns", tp.Proxy},
		[]string{"ip", "link", "add", "o0", "netns", tp.Origin, "type", "veth", "peer", "name", "o1", "netns", tp.Proxy})
	for _, a := range [][3]string{
		{tp.Client, "c0", "10.91.1.2/24"}, {tp.Client, "c0", "fd00:91:1::2/64"},
		{tp.Proxy, "c1", "10.91.1.1/24"}, {tp.Proxy, "c1", "fd00:91:1::1/64"},
		{tp.Proxy, "o1", "10.91.2.1/24"}, {tp.Proxy, "o1", "fd00:91:2::1/64"},
		{tp.Origin, "o0", "10.91.2.2/24"}, {tp.Origin, "o0", "fd00:91:2::2/64"},
	} {
		steps = append(steps, []string{"ip", "-n", a[0], "addr", "add", a[2], "dev", a[1], "nodad"},
			[]string{"ip", "-n", a[0], "link", "set", a[1], "up"})
	}
	steps = append(steps,
		[]string{"ip", "netns", "exec", tp.Client, "ethtool", "-K", "c0", "tx", "off", "gro", "on"},
		[]string{"ip", "netns", "exec", tp.Origin, "ethtool", "-K", "o0", "tx", "off", "gro", "on"},
		[]string{"ip", "netns", "exec", tp.Proxy, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1", "net.ipv6.conf.all.forwarding=1"})
	if err := run(steps); err != nil {
		tp.Close()
		return nil, err
	}
	return tp, nil
}

// AddDirect joins the client and the origin by a veth pair of their own,
// d0 (client, 10.91.3.2, fd00:91:3::2) and d1 (origin, 10.91.3.1,
// fd00:91:3::1), set up as c0 and o0 are (tx off, GRO on), so that the
// same load can go straight to the origin: what the path costs without
// the proxy. Close removes it with the namespaces.
func (tp *Topology) AddDirect() error {
	p := netip.MustParseAddr
	steps := [][]string{{"ip", "link", "add", "d0", "netns", tp.Client, "type", "veth", "peer", "name", "d1", "netns", tp.Origin}}
	for _, a := range [][3]string{
		{tp.Client, "d0", "10.91.3.2/24"}, {tp.Client, "d0", "fd00:91:3::2/64"},
		{tp.Origin, "d1", "10.91.3.1/24"}, {tp.Origin, "d1", "fd00:91:3::1/64"},
	} {
		steps = append(steps, []string{"ip", "-n", a[0], "addr", "add", a[2], "dev", a[1], "nodad"},
			[]string{"ip", "-n", a[0], "link", "set", a[1], "up"})
	}
	steps = append(steps,
		[]string{"ip", "netns", "exec", tp.Client, "ethtool", "-K", "d0", "tx", "off", "gro", "on"},
		[]string{"ip", "netns", "exec", tp.Origin, "ethtool", "-K", "d1", "tx", "off", "gro", "on"})
	if err := run(steps); err != nil {
		return err
	}
	tp.DirectClientIP = [2]netip.Addr{p("10.91.3.2"), p("fd00:91:3::2")}
	tp.DirectOriginIP = [2]netip.Addr{p("10.91.3.1"), p("fd00:91:3::1")}
	return nil
}

// run runs each command in turn, and stops at the first that fails.
func run(steps [][]string) error {
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %v %s", s, err, out)
		}
	}
	return nil
}

// Close removes the namespaces, and with them their links.
func (tp *Topology) Close() {
	for _, ns := range []string{tp.Client, tp.Proxy, tp.Origin} {
		exec.Command("ip", "netns", "del", ns).Run()
	}
}

// Command is name run in namespace ns.
func Command(ns, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// In runs fn on a thread of its own in namespace ns: the sockets fn makes
// stay there, whatever thread uses them after. The thread ends with fn.
func In(ns string, fn func()) error {
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		f, err := os.Open("/run/netns/" + ns)
		if err == nil {
			err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
			f.Close()
		}
		if err == nil {
			fn()
		}
		done <- err
	}()
	if err := <-done; err != nil {
		return fmt.Errorf("entering %s: %w", ns, err)
	}
	return nil
}
