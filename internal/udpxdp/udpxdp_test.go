package udpxdp

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// topology is three network namespaces: a client, strait's (the proxy)
// and an origin, joined by two veth pairs. The proxy's ends are c1 and
// o1, where the program attaches.
type topology struct {
	client, proxy, origin string
	// Addresses, IPv4 then IPv6.
	clientIP, frontIP, backIP, originIP [2]netip.Addr
}

func newTopology(t *testing.T) *topology {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root for network namespaces and XDP (CI=true: not skipping)")
		}
		t.Skip("needs root for network namespaces and XDP")
	}
	id := os.Getpid() % 100000
	tp := &topology{client: fmt.Sprintf("xc%d", id), proxy: fmt.Sprintf("xp%d", id), origin: fmt.Sprintf("xo%d", id)}
	p := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	tp.clientIP = [2]netip.Addr{p("10.91.1.2"), p("fd00:91:1::2")}
	tp.frontIP = [2]netip.Addr{p("10.91.1.1"), p("fd00:91:1::1")}
	tp.backIP = [2]netip.Addr{p("10.91.2.1"), p("fd00:91:2::1")}
	tp.originIP = [2]netip.Addr{p("10.91.2.2"), p("fd00:91:2::2")}
	for _, ns := range []string{tp.client, tp.proxy, tp.origin} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "link", "add", "c0", "netns", tp.client, "type", "veth", "peer", "name", "c1", "netns", tp.proxy)
	run(t, "ip", "link", "add", "o0", "netns", tp.origin, "type", "veth", "peer", "name", "o1", "netns", tp.proxy)
	for _, a := range [][3]string{
		{tp.client, "c0", "10.91.1.2/24"}, {tp.client, "c0", "fd00:91:1::2/64"},
		{tp.proxy, "c1", "10.91.1.1/24"}, {tp.proxy, "c1", "fd00:91:1::1/64"},
		{tp.proxy, "o1", "10.91.2.1/24"}, {tp.proxy, "o1", "fd00:91:2::1/64"},
		{tp.origin, "o0", "10.91.2.2/24"}, {tp.origin, "o0", "fd00:91:2::2/64"},
	} {
		run(t, "ip", "-n", a[0], "addr", "add", a[2], "dev", a[1], "nodad")
		run(t, "ip", "-n", a[0], "link", "set", a[1], "up")
	}
	// The senders' checksums must be whole (XDP drops the skb's note
	// that they are partial), and the veths that receive redirected
	// frames need GRO on (their NAPI) to take them.
	for _, l := range [][2]string{{tp.client, "c0"}, {tp.origin, "o0"}} {
		run(t, "ip", "netns", "exec", l[0], "ethtool", "-K", l[1], "tx", "off", "gro", "on")
	}
	run(t, "ip", "netns", "exec", tp.proxy, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1", "net.ipv6.conf.all.forwarding=1")
	return tp
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v %s", name, args, err, out)
	}
}

// in runs fn on a thread in namespace ns: sockets it makes stay there,
// and the program attaches to ns's interfaces. The thread ends with it.
func in(t *testing.T, ns string, fn func()) {
	t.Helper()
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
		t.Fatalf("entering %s: %v", ns, err)
	}
}

func listen(t *testing.T, ns string, a netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	var err error
	in(t, ns, func() { c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(a)) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// read returns the next datagram c receives within d, and its source.
func read(c *net.UDPConn, d time.Duration) (string, netip.AddrPort, error) {
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(d))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	return string(buf[:n]), from, err
}

func load(t *testing.T, tp *topology, mode Mode) *Path {
	t.Helper()
	p, err := Load(100, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	in(t, tp.proxy, func() {
		for _, ifc := range []string{"c1", "o1"} {
			if err = p.Attach(ifc, mode); err != nil {
				return
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestForward: a flow added to the program goes both ways without
// strait's sockets seeing a datagram: the origin sees it come from
// strait's upstream socket, the client the reply from strait's address;
// the kernels of both ends check the IP and UDP checksums the program
// rewrote. Removed, the flow's datagrams reach strait's sockets again.
func TestForward(t *testing.T) {
	tp := newTopology(t)
	for _, mode := range []Mode{Native, Generic} {
		p := load(t, tp, mode)
		for fam, name := range []string{"IPv4", "IPv6"} {
			t.Run(string(mode)+"/"+name, func(t *testing.T) {
				forward(t, tp, p, fam)
			})
		}
		p.Close()
	}
}

func forward(t *testing.T, tp *topology, p *Path, fam int) {
	front := listen(t, tp.proxy, netip.AddrPortFrom(tp.frontIP[fam], 0))
	back := listen(t, tp.proxy, netip.AddrPortFrom(tp.backIP[fam], 0))
	origin := listen(t, tp.origin, netip.AddrPortFrom(tp.originIP[fam], 0))
	client := listen(t, tp.client, netip.AddrPortFrom(tp.clientIP[fam], 0))
	f := Flow{
		Client: ap(client), Front: ap(front),
		Back: ap(back), Upstream: ap(origin),
	}
	// Resolve the neighbours as a user-space relay's first exchange would.
	if _, err := back.WriteToUDPAddrPort([]byte("hello"), f.Upstream); err != nil {
		t.Fatal(err)
	}
	if _, _, err := read(origin, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	front.WriteToUDPAddrPort([]byte("hello"), f.Client)
	if _, _, err := read(client, 2*time.Second); err != nil {
		t.Fatal(err)
	}

	if err := p.Add(f); err != nil {
		t.Fatal(err)
	}
	before := p.Counters()
	const n = 50
	for i := range n {
		msg := fmt.Sprintf("ping %d", i)
		if _, err := client.WriteToUDPAddrPort([]byte(msg), f.Front); err != nil {
			t.Fatal(err)
		}
		got, from, err := read(origin, 2*time.Second)
		if err != nil || got != msg || from != f.Back {
			t.Fatalf("at the origin: %q from %v, %v; want %q from %v (counters %+v)", got, from, err, msg, f.Back, p.Counters())
		}
		origin.WriteToUDPAddrPort([]byte("pong"+msg), from)
		got, from, err = read(client, 2*time.Second)
		if err != nil || got != "pong"+msg || from != f.Front {
			t.Fatalf("at the client: %q from %v, %v; want from %v (counters %+v)", got, from, err, f.Front, p.Counters())
		}
	}
	for _, c := range []*net.UDPConn{front, back} {
		if got, from, err := read(c, 10*time.Millisecond); err == nil {
			t.Fatalf("strait's socket %v received %q from %v: not forwarded in the kernel", c.LocalAddr(), got, from)
		}
	}
	after := p.Counters()
	if d := after.Forwarded - before.Forwarded; d != 2*n {
		t.Errorf("forwarded %d, want %d", d, 2*n)
	}
	if idle, ok := p.Idle(f); !ok || idle > time.Second {
		t.Errorf("idle %v %v after traffic", idle, ok)
	}
	c := p.Remove(f)
	if c.In != n || c.Out != n || c.InBytes == 0 || c.OutBytes == 0 {
		t.Errorf("flow counts %+v, want %d each way", c, n)
	}
	// Back to the kernel: strait's listening socket gets the next one.
	client.WriteToUDPAddrPort([]byte("after"), f.Front)
	if got, _, err := read(front, 2*time.Second); err != nil || got != "after" {
		t.Errorf("after Remove, strait's socket read %q, %v", got, err)
	}
}

func ap(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// TestRate: a flow's datagrams over its rate are dropped in the program
// and counted; those within it pass.
func TestRate(t *testing.T) {
	tp := newTopology(t)
	p := load(t, tp, Native)
	back := listen(t, tp.proxy, netip.AddrPortFrom(tp.backIP[0], 0))
	front := listen(t, tp.proxy, netip.AddrPortFrom(tp.frontIP[0], 0))
	origin := listen(t, tp.origin, netip.AddrPortFrom(tp.originIP[0], 0))
	client := listen(t, tp.client, netip.AddrPortFrom(tp.clientIP[0], 0))
	f := Flow{Client: ap(client), Front: ap(front), Back: ap(back), Upstream: ap(origin), Rate: 10, Burst: 5}
	back.WriteToUDPAddrPort([]byte("hello"), f.Upstream)
	if _, _, err := read(origin, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(f); err != nil {
		t.Fatal(err)
	}
	const sent = 100
	for range sent {
		client.WriteToUDPAddrPort([]byte("x"), f.Front)
	}
	got := 0
	for {
		if _, _, err := read(origin, 200*time.Millisecond); err != nil {
			break
		}
		got++
	}
	c := p.Counters()
	// The burst of 5, and at 10 a second perhaps one more while they go.
	if got < 5 || got > 7 || c.Dropped < sent-7 || c.Dropped+uint64(got) != sent {
		t.Errorf("the origin got %d of %d at a burst of 5; the program dropped %d", got, sent, c.Dropped)
	}
}
