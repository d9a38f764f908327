//go:build linux

package udpproxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/straitproxy/strait/cluster"
	"github.com/straitproxy/strait/config"
)

// echo runs a UDP origin that answers each datagram with itself (or
// not at all with silent), and returns its address.
func echo(t testing.TB, silent bool) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 1<<16)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if !silent {
				c.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	return c.LocalAddr().String()
}

// start runs a Server with o on a socket of its own, relaying to
// endpoints, and returns it and its address.
func start(t testing.TB, o Options, endpoints ...string) (*Server, string) {
	return startOn(t, o, "127.0.0.1:0", 1, endpoints...)
}

// startOn is start on sockets sockets sharing addr (SO_REUSEPORT).
func startOn(t testing.TB, o Options, addr string, sockets int, endpoints ...string) (*Server, string) {
	t.Helper()
	cl, err := cluster.New(&config.Cluster{Name: "u", Endpoints: endpoints, Balance: "maglev"}, cluster.Options{Logger: slog.Default()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	var conns []*net.UDPConn
	for range sockets {
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		addr = pc.LocalAddr().String()
		conns = append(conns, pc.(*net.UDPConn))
	}
	o.Cluster = cl
	o.Logger = slog.Default()
	feat, err := Probe()
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(o, conns, feat)
	if err != nil {
		t.Fatal(err)
	}
	// The server reads its own descriptors: these may go at once.
	for _, c := range conns {
		c.Close()
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, addr
}

func dial(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UDPConn)
}

// roundTrip sends p on c and returns the answer, or nil after a timeout.
func roundTrip(t testing.TB, c *net.UDPConn, p []byte, timeout time.Duration) []byte {
	t.Helper()
	if _, err := c.Write(p); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<16)
	c.SetReadDeadline(time.Now().Add(timeout))
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func TestRelay(t *testing.T) {
	s, addr := start(t, Options{}, echo(t, false))
	clients := []*net.UDPConn{dial(t, addr), dial(t, addr), dial(t, addr)}
	var want int64
	for _, size := range []int{0, 1, 64, 1200, 9000, MaxDatagram} {
		for i, c := range clients {
			p := bytes.Repeat([]byte{byte('a' + i)}, size)
			got := roundTrip(t, c, p, 2*time.Second)
			if got == nil || !bytes.Equal(got, p) {
				t.Fatalf("client %d, %d bytes: got %d bytes back, want the same datagram", i, size, len(got))
			}
			want++
		}
	}
	waitFor(t, func() bool { return s.Stats.DatagramsOut.Load() == want })
	if in, flows := s.Stats.DatagramsIn.Load(), s.Stats.Flows.Load(); in != want || flows != 3 {
		t.Errorf("datagrams in %d, flows %d; want %d and 3", in, flows, want)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestIdleTimeout: a flow idle for the timeout ends, and the client's next
// datagram opens a new one to the same endpoint (maglev on its address).
func TestIdleTimeout(t *testing.T) {
	s, addr := start(t, Options{IdleTimeout: 200 * time.Millisecond}, echo(t, false), echo(t, false))
	c := dial(t, addr)
	if roundTrip(t, c, []byte("one"), time.Second) == nil {
		t.Fatal("no answer")
	}
	waitFor(t, func() bool { return s.Stats.FlowsExpired.Load() == 1 && s.Stats.FlowsActive.Load() == 0 })
	if roundTrip(t, c, []byte("two"), time.Second) == nil {
		t.Fatal("no answer after the flow expired")
	}
	if n := s.Stats.Flows.Load(); n != 2 {
		t.Errorf("flows opened: %d, want 2", n)
	}
}

// TestFullTable: a full table evicts a flow its endpoint never answered,
// never an answered one; with only answered flows, a new client's
// datagrams are dropped and counted.
func TestFullTable(t *testing.T) {
	silent, answering := echo(t, true), echo(t, false)
	// Two listeners' worth: one whose endpoint answers, one whose does not.
	s, addr := start(t, Options{MaxFlows: 2}, answering)
	a, b := dial(t, addr), dial(t, addr)
	for _, c := range []*net.UDPConn{a, b} {
		if roundTrip(t, c, []byte("hi"), time.Second) == nil {
			t.Fatal("no answer")
		}
	}
	spoofed := dial(t, addr)
	if got := roundTrip(t, spoofed, []byte("hi"), 200*time.Millisecond); got != nil {
		t.Fatal("a third flow was relayed past max_flows 2")
	}
	if s.Stats.FullDrops.Load() != 1 || s.Stats.FlowsEvicted.Load() != 0 {
		t.Errorf("full drops %d, evicted %d; want 1 and 0", s.Stats.FullDrops.Load(), s.Stats.FlowsEvicted.Load())
	}
	for _, c := range []*net.UDPConn{a, b} {
		if roundTrip(t, c, []byte("still"), time.Second) == nil {
			t.Fatal("an answered flow lost its place")
		}
	}

	s2, addr2 := start(t, Options{MaxFlows: 2}, silent)
	for range 5 {
		roundTrip(t, dial(t, addr2), []byte("x"), 10*time.Millisecond)
	}
	waitFor(t, func() bool { return s2.Stats.FlowsEvicted.Load() == 3 })
	if n := s2.Stats.FlowsActive.Load(); n != 2 {
		t.Errorf("active flows %d, want 2", n)
	}
}

func TestPrefixRate(t *testing.T) {
	s, addr := start(t, Options{NewFlowsPerPrefix: 2}, echo(t, false))
	var clients []*net.UDPConn
	for range 6 { // all at once: no allowance refills meanwhile
		c := dial(t, addr)
		c.Write([]byte("x"))
		clients = append(clients, c)
	}
	answered := 0
	buf := make([]byte, 10)
	for _, c := range clients {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(buf); err == nil {
			answered++
		}
	}
	if answered != 2 || s.Stats.RateDrops.Load() != 4 {
		t.Errorf("answered %d, dropped over the rate %d; want 2 and 4", answered, s.Stats.RateDrops.Load())
	}
}

// TestRefused: an endpoint with nothing listening answers ICMP port
// unreachable; the flow ends and the endpoint is counted as failing.
func TestRefused(t *testing.T) {
	c, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	closed := c.LocalAddr().String()
	c.Close()
	s, addr := start(t, Options{}, closed)
	cl := dial(t, addr)
	for range 3 {
		roundTrip(t, cl, []byte("x"), 50*time.Millisecond)
	}
	waitFor(t, func() bool { return s.Stats.FlowsRefused.Load() >= 1 })
}

// TestShutdownDrains: after Shutdown starts, the listener's datagrams are
// no longer read, but a reply to one sent before still reaches its
// client; the flow, quiet a second after, ends, and with it the drain,
// before its deadline.
func TestShutdownDrains(t *testing.T) {
	slow, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer slow.Close()
	s, addr := start(t, Options{}, slow.LocalAddr().String())
	c := dial(t, addr)
	c.Write([]byte("question"))
	buf := make([]byte, 100)
	n, from, err := slow.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	time.Sleep(50 * time.Millisecond)
	slow.WriteToUDPAddrPort(buf[:n], from)
	c.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "question" {
		t.Fatalf("the reply during the drain: %q, %v", buf[:n], err)
	}
	c.Write([]byte("late")) // not read any more
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v; want the drain over once the flow was quiet", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("the drain took %v with a flow quiet after 50ms", d)
	}
	if s.Stats.DatagramsIn.Load() != 1 {
		t.Errorf("datagrams relayed in: %d, want 1 (none after the drain began)", s.Stats.DatagramsIn.Load())
	}
}

// TestNoAllocs: relaying a datagram each way allocates nothing in steady
// state (the client and origin here use calls that allocate nothing).
func TestNoAllocs(t *testing.T) {
	_, addr := start(t, Options{}, echo(t, false))
	c := dial(t, addr)
	p, buf := make([]byte, 100), make([]byte, 200)
	trip := func() {
		c.Write(p)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	for range 100 {
		trip()
	}
	// What the client and the echo cost alone, measured the same way.
	direct := dial(t, echo(t, false))
	base := testing.AllocsPerRun(2000, func() {
		direct.Write(p)
		direct.SetReadDeadline(time.Now().Add(2 * time.Second))
		direct.Read(buf)
	})
	if a := testing.AllocsPerRun(2000, trip) - base; a > 0.05 {
		t.Errorf("%.2f allocations per round trip through the relay (%.2f without it), want 0", a+base, base)
	}
}

// TestSockaddr: addresses round-trip through the kernel's form.
func TestSockaddr(t *testing.T) {
	for _, s := range []string{"127.0.0.1:53", "[::1]:443", "[::ffff:10.0.0.1]:9"} {
		ap := netip.MustParseAddrPort(s)
		for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
			if fam == unix.AF_INET && !ap.Addr().Unmap().Is4() {
				continue
			}
			var sa unix.RawSockaddrInet6
			toSockaddr(ap, fam, &sa)
			if got := fromSockaddr(&sa); got.Addr().Unmap() != ap.Addr().Unmap() || got.Port() != ap.Port() {
				t.Errorf("%s in family %d: got %s", s, fam, got)
			}
		}
	}
}

// TestGSOBurst: a client sends runs of datagrams with GSO (one send, one
// buffer through loopback); strait takes each run whole (GRO) and sends
// it on whole, and every datagram comes back intact, in order.
func TestGSOBurst(t *testing.T) {
	feat, _ := Probe()
	if !feat.GSO || !feat.GRO {
		t.Skip("the kernel has no UDP GSO or GRO")
	}
	s, addr := start(t, Options{}, echo(t, false))
	c := dial(t, addr)
	for _, tc := range []struct{ seg, n, last int }{{1000, 20, 1000}, {1200, 40, 300}, {100, 64, 100}} {
		var run []byte
		for i := range tc.n {
			size := tc.seg
			if i == tc.n-1 {
				size = tc.last
			}
			run = append(run, bytes.Repeat([]byte{byte(i)}, size)...)
		}
		sendGSO(t, c, run, tc.seg)
		buf := make([]byte, 2000)
		for i := range tc.n {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("run of %d×%d: datagram %d: %v", tc.n, tc.seg, i, err)
			}
			want := tc.seg
			if i == tc.n-1 {
				want = tc.last
			}
			if n != want || buf[0] != byte(i) || buf[n-1] != byte(i) {
				t.Fatalf("run of %d×%d: datagram %d: %d bytes of %d, want %d of %d", tc.n, tc.seg, i, n, buf[0], want, i)
			}
		}
		t.Logf("run %d×%d: GRO %d GSO %d in %d", tc.n, tc.seg, s.Stats.GROReceives.Load(), s.Stats.GSOSends.Load(), s.Stats.DatagramsIn.Load())
	}
	// The kernel has delivered a first run split, once, on a socket
	// whose GRO was just turned on; the later ones come whole.
	if s.Stats.GROReceives.Load() < 1 || s.Stats.GSOSends.Load() < 3 {
		t.Errorf("GRO receives %d, GSO sends %d; want runs taken whole, and the echoed datagrams joined", s.Stats.GROReceives.Load(), s.Stats.GSOSends.Load())
	}
	if in := s.Stats.DatagramsIn.Load(); in != 20+40+64 {
		t.Errorf("datagrams in: %d, want %d", in, 20+40+64)
	}
}

// TestWildcardReplySource: on a wildcard listener, a reply comes from the
// address its client sent to, and follows the client when it sends to
// another of the host's addresses.
func TestWildcardReplySource(t *testing.T) {
	_, addr := startOn(t, Options{}, "0.0.0.0:0", 1, echo(t, false))
	port := netip.MustParseAddrPort(addr).Port()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 100)
	for _, to := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.2"} {
		dst := netip.AddrPortFrom(netip.MustParseAddr(to), port)
		if _, err := c.WriteToUDPAddrPort([]byte(to), dst); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("sent to %s: %v", dst, err)
		}
		if from.Addr().Unmap() != dst.Addr() || string(buf[:n]) != to {
			t.Errorf("sent %q to %s: the reply %q came from %s", to, dst, buf[:n], from)
		}
	}
}

// TestFullTableShards: with two sockets, a full table evicts within the
// shard the new client reaches, which holds its share of max_flows: no
// new client is dropped while unanswered flows can make room.
func TestFullTableShards(t *testing.T) {
	s, addr := startOn(t, Options{MaxFlows: 4}, "127.0.0.1:0", 2, echo(t, true))
	for range 12 {
		roundTrip(t, dial(t, addr), []byte("x"), 5*time.Millisecond)
	}
	waitFor(t, func() bool { return s.Stats.Flows.Load()+s.Stats.FullDrops.Load() == 12 })
	if d, a := s.Stats.FullDrops.Load(), s.Stats.FlowsActive.Load(); d != 0 || a > 4 {
		t.Errorf("dropped as table full %d, active %d; want 0 dropped (unanswered flows evicted) and at most 4 active", d, a)
	}
}

// sendGSO sends run, datagrams of seg bytes (the last may be shorter),
// on c in one GSO send.
func sendGSO(t testing.TB, c *net.UDPConn, run []byte, seg int) {
	t.Helper()
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(seg))
	rc, _ := c.SyscallConn()
	var serr error
	rc.Write(func(fd uintptr) bool {
		_, serr = unix.SendmsgN(int(fd), run, oob, nil, 0)
		return true
	})
	if serr != nil {
		t.Fatalf("sending a GSO run: %v", serr)
	}
}

// TestGSOPastMTU: strait in one network namespace, its endpoint in
// another past a veth of MTU 1500. Runs of 3000-byte datagrams (which IP
// fragments one by one, but which a GSO send with segments past the MTU
// would lose) arrive, each of them, both ways. The test binary runs
// again in each namespace: every thread of the relay must be in it.
func TestGSOPastMTU(t *testing.T) {
	switch os.Getenv("UDPPROXY_NETNS_ROLE") {
	case "origin":
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(10, 77, 0, 2), Port: 9000})
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1<<16)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	case "relay":
		gsoPastMTU(t)
		return
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root for network namespaces (CI=true: not skipping)")
		}
		t.Skip("needs root for network namespaces")
	}
	nsA, nsB := fmt.Sprintf("udpmtuA%d", os.Getpid()), fmt.Sprintf("udpmtuB%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	run("netns", "add", nsA)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", nsA).Run() })
	run("netns", "add", nsB)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", nsB).Run() })
	run("link", "add", "mtuA", "netns", nsA, "type", "veth", "peer", "name", "mtuB", "netns", nsB)
	run("-n", nsA, "addr", "add", "10.77.0.1/24", "dev", "mtuA")
	run("-n", nsB, "addr", "add", "10.77.0.2/24", "dev", "mtuB")
	for _, l := range [][]string{{nsA, "mtuA"}, {nsA, "lo"}, {nsB, "mtuB"}, {nsB, "lo"}} {
		run("-n", l[0], "link", "set", l[1], "up")
	}
	origin := exec.Command("ip", "netns", "exec", nsB, os.Args[0], "-test.run=^TestGSOPastMTU$")
	origin.Env = append(os.Environ(), "UDPPROXY_NETNS_ROLE=origin")
	if err := origin.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { origin.Process.Kill(); origin.Wait() }()
	relay := exec.Command("ip", "netns", "exec", nsA, os.Args[0], "-test.run=^TestGSOPastMTU$", "-test.v")
	relay.Env = append(os.Environ(), "UDPPROXY_NETNS_ROLE=relay")
	out, err := relay.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestGSOPastMTU")) {
		t.Fatalf("in the namespaces: %v\n%s", err, out)
	}
	if i := bytes.Index(out, []byte("GRO receives")); i >= 0 {
		t.Log(string(bytes.SplitN(out[i:], []byte("\n"), 2)[0]))
	}
}

// gsoPastMTU is TestGSOPastMTU in strait's namespace.
func gsoPastMTU(t *testing.T) {
	const origin = "10.77.0.2:9000"
	d := dial(t, origin)
	for try := 0; ; try++ { // the origin may take a moment to start
		if got := roundTrip(t, d, make([]byte, 3000), 200*time.Millisecond); len(got) == 3000 {
			break
		}
		if try == 25 {
			t.Fatal("direct, 3000 bytes: no answer")
		}
	}
	s, addr := startOn(t, Options{}, "10.77.0.1:0", 1, origin)
	c := dial(t, addr)
	const n, size = 10, 3000
	for round := range 3 {
		// One GSO send from the client (its path, loopback, takes it
		// whole): strait receives the run whole (GRO), and must not send
		// it on whole past the veth.
		var run []byte
		for i := range n {
			run = append(run, bytes.Repeat([]byte{byte(i)}, size)...)
		}
		sendGSO(t, c, run, size)
		buf := make([]byte, 4096)
		for i := range n {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			got, err := c.Read(buf)
			if err != nil {
				t.Fatalf("round %d, datagram %d of %d: %v (in %d, out %d, send drops %d, GSO sends %d)", round, i, n, err,
					s.Stats.DatagramsIn.Load(), s.Stats.DatagramsOut.Load(), s.Stats.SendDrops.Load(), s.Stats.GSOSends.Load())
			}
			if got != size || buf[0] != byte(i) {
				t.Fatalf("round %d, datagram %d: %d bytes of %d", round, i, got, buf[0])
			}
		}
	}
	t.Logf("GRO receives %d, GSO sends %d", s.Stats.GROReceives.Load(), s.Stats.GSOSends.Load())
}

// TestFlowRate: a flow's datagrams past its rate's burst are dropped and
// counted, each way; within it they pass.
func TestFlowRate(t *testing.T) {
	s, addr := start(t, Options{FlowRate: 10, FlowBurst: 5}, echo(t, false))
	c := dial(t, addr)
	const sent = 50
	for range sent {
		c.Write([]byte("x"))
	}
	got := 0
	buf := make([]byte, 16)
	for {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(buf); err != nil {
			break
		}
		got++
	}
	// The burst of 5 each way, perhaps one more at 10 a second.
	drops := s.Stats.FlowRateDrops.Load()
	if got < 5 || got > 7 || drops < sent-7 || int(drops)+got != sent {
		t.Errorf("%d of %d answered at a burst of 5, %d dropped", got, sent, drops)
	}
}
