package udpxdp

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/netnstest"
)

// newTopology is netnstest's network, removed when the test ends.
func newTopology(t testing.TB) *netnstest.Topology {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root for network namespaces and XDP (CI=true: not skipping)")
		}
		t.Skip("needs root for network namespaces and XDP")
	}
	tp, err := netnstest.Create(strconv.Itoa(os.Getpid() % 100000))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tp.Close)
	return tp
}

// in is netnstest.In, failing t if it cannot enter ns.
func in(t testing.TB, ns string, fn func()) {
	t.Helper()
	if err := netnstest.In(ns, fn); err != nil {
		t.Fatal(err)
	}
}

func listen(t testing.TB, ns string, a netip.AddrPort) *net.UDPConn {
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

func load(t testing.TB, tp *netnstest.Topology, mode Mode) *Path {
	t.Helper()
	p, err := Load(100, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	in(t, tp.Proxy, func() {
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

func forward(t *testing.T, tp *netnstest.Topology, p *Path, fam int) {
	f, s := newFlow(t, tp, fam)
	front, back, origin, client := s.front, s.back, s.origin, s.client
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
	// Bytes are UDP payload bytes, as user space counts them.
	var inBytes int64
	for i := range n {
		inBytes += int64(len(fmt.Sprintf("ping %d", i)))
	}
	c := p.Remove(f)
	if c.In != n || c.Out != n || c.InBytes != inBytes || c.OutBytes != inBytes+4*n {
		t.Errorf("flow counts %+v, want %d datagrams each way, %d bytes in, %d out", c, n, inBytes, inBytes+4*n)
	}
	if d := p.Counters().ForwardedBytes - before.ForwardedBytes; d != uint64(2*inBytes+4*n) {
		t.Errorf("forwarded bytes %d, want %d", d, 2*inBytes+4*n)
	}
	// Back to the kernel: strait's listening socket gets the next one.
	client.WriteToUDPAddrPort([]byte("after"), f.Front)
	if got, _, err := read(front, 2*time.Second); err != nil || got != "after" {
		t.Errorf("after Remove, strait's socket read %q, %v", got, err)
	}
}

// sockets are a flow's four: strait's listening and upstream ones, the
// origin's and the client's.
type sockets struct {
	front, back, origin, client *net.UDPConn
}

// newFlow makes a flow's sockets in family fam (0 IPv4, 1 IPv6), and
// resolves the proxy's neighbours, as a user-space relay's first
// exchange would: the program's FIB lookups need them.
func newFlow(t testing.TB, tp *netnstest.Topology, fam int) (Flow, sockets) {
	t.Helper()
	s := sockets{
		front:  listen(t, tp.Proxy, netip.AddrPortFrom(tp.FrontIP[fam], 0)),
		back:   listen(t, tp.Proxy, netip.AddrPortFrom(tp.BackIP[fam], 0)),
		origin: listen(t, tp.Origin, netip.AddrPortFrom(tp.OriginIP[fam], 0)),
		client: listen(t, tp.Client, netip.AddrPortFrom(tp.ClientIP[fam], 0)),
	}
	f := Flow{Client: ap(s.client), Front: ap(s.front), Back: ap(s.back), Upstream: ap(s.origin)}
	s.back.WriteToUDPAddrPort([]byte("hello"), f.Upstream)
	s.front.WriteToUDPAddrPort([]byte("hello"), f.Client)
	for _, c := range []*net.UDPConn{s.origin, s.client} {
		if _, _, err := read(c, 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return f, s
}

func ap(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// TestRate: a flow's datagrams over its rate are dropped in the program
// and counted; those within it pass.
func TestRate(t *testing.T) {
	tp := newTopology(t)
	p := load(t, tp, Native)
	f, s := newFlow(t, tp, 0)
	f.Rate, f.Burst = 10, 5
	if err := p.Add(f); err != nil {
		t.Fatal(err)
	}
	client, origin := s.client, s.origin
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

// TestForgedIngress: a datagram with a flow's addresses that arrives on
// another interface than the flow's (the origin's side forging the
// client) is not forwarded: it passes to the kernel, here to strait's
// listening socket.
func TestForgedIngress(t *testing.T) {
	tp := newTopology(t)
	p := load(t, tp, Native)
	f, s := newFlow(t, tp, 0)
	if err := p.Add(f); err != nil {
		t.Fatal(err)
	}
	front, origin, client := s.front, s.origin, s.client
	client.WriteToUDPAddrPort([]byte("real"), f.Front)
	if got, _, err := read(origin, 2*time.Second); err != nil || got != "real" {
		t.Fatalf("the flow's first datagram: %q, %v", got, err)
	}
	// The origin's namespace takes the client's address, and sends from
	// it to strait's, through the proxy.
	run(t, "ip", "-n", tp.Origin, "addr", "add", tp.ClientIP[0].String()+"/32", "dev", "o0")
	run(t, "ip", "-n", tp.Origin, "route", "add", tp.FrontIP[0].String()+"/32", "via", tp.BackIP[0].String(), "src", tp.ClientIP[0].String())
	forger := listen(t, tp.Origin, f.Client)
	before := p.Counters()
	forger.WriteToUDPAddrPort([]byte("forged"), f.Front)
	if got, from, err := read(front, 2*time.Second); err != nil || got != "forged" || from != f.Client {
		t.Fatalf("strait's socket read %q from %v, %v; want the forged datagram passed to the kernel", got, from, err)
	}
	if c := p.Counters(); c.Forwarded != before.Forwarded || c.Fallback != before.Fallback+1 {
		t.Errorf("counters %+v after the forged datagram (before %+v): want it passed, as fallback", c, before)
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v %s", name, args, err, out)
	}
}

// TestAttachRecreated: an interface deleted and made again lost the
// program; the next Attach attaches it again, and keeps count of the
// users from before.
func TestAttachRecreated(t *testing.T) {
	tp := newTopology(t)
	p := load(t, tp, Native) // c1 and o1, one user each
	hasXDP := func() bool {
		out, _ := exec.Command("ip", "-n", tp.Proxy, "link", "show", "c1").CombinedOutput()
		return strings.Contains(string(out), "xdp")
	}
	run(t, "ip", "-n", tp.Proxy, "link", "del", "c1")
	run(t, "ip", "link", "add", "c0", "netns", tp.Client, "type", "veth", "peer", "name", "c1", "netns", tp.Proxy)
	run(t, "ip", "-n", tp.Proxy, "link", "set", "c1", "up")
	if hasXDP() {
		t.Fatal("a new c1 has a program already")
	}
	var err error
	in(t, tp.Proxy, func() { err = p.Attach("c1", Native) })
	if err != nil || !hasXDP() || !p.Attached("c1") {
		t.Fatalf("after Attach on the new c1: %v, attached %v", err, hasXDP())
	}
	p.Detach("c1")
	if !hasXDP() {
		t.Fatal("detached from the new c1 while the first user still has it")
	}
	p.Detach("c1")
	if hasXDP() {
		t.Fatal("still attached after its last user detached")
	}
}

// TestAttachRetry: an interface another program holds (the old process's,
// in an upgrade) is attached once that one goes.
func TestAttachRetry(t *testing.T) {
	tp := newTopology(t)
	old := load(t, tp, Native)
	p, err := Load(100, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	in(t, tp.Proxy, func() { err = p.Attach("c1", Native) })
	if err != nil || p.Attached("c1") {
		t.Fatalf("attach while another program holds c1: %v, attached %v", err, p.Attached("c1"))
	}
	old.Close()
	deadline := time.Now().Add(3 * retryEvery)
	for !p.Attached("c1") {
		if time.Now().After(deadline) {
			t.Fatal("not attached after the other program went")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
