package tcpproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/straitproxy/strait/cluster"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/internal/proxytest"
)

// origin is proxytest.TCPOrigin.
func origin(t *testing.T, handle func(c *net.TCPConn)) string { return proxytest.TCPOrigin(t, handle) }

// echo sends back what it reads, and closes its half at the end of the
// client's.
func echo(c *net.TCPConn) {
	copyPlain(c, c)
	c.CloseWrite()
}

var copyPlain = proxytest.CopyPlain

type proxyUnderTest struct {
	srv  *Server
	addr string
	logs *bytes.Buffer
	mu   *sync.Mutex
}

// start runs a Server relaying to endpoints with o's settings.
func start(t *testing.T, o Options, endpoints ...string) *proxyUnderTest {
	t.Helper()
	if len(endpoints) > 0 {
		cl, err := cluster.New(&config.Cluster{Name: "c", Endpoints: endpoints}, cluster.Options{MaxAttempts: 3})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Stop)
		o.Cluster = cl
	}
	p := &proxyUnderTest{logs: new(bytes.Buffer), mu: new(sync.Mutex)}
	o.Name = "test"
	o.AccessLog = slog.New(slog.NewJSONHandler(lockedWriter{p.mu, p.logs}, nil))
	o.Logger = slog.New(slog.DiscardHandler)
	p.srv = New(o)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	served := make(chan struct{})
	go func() {
		p.srv.Serve(ln)
		close(served)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p.srv.Shutdown(ctx)
		<-served
	})
	return p
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// lines returns the access log's lines, once n are there.
func (p *proxyUnderTest) lines(t *testing.T, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.mu.Lock()
		text := p.logs.String()
		p.mu.Unlock()
		var out []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
			if l == "" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("%v: %s", err, l)
			}
			out = append(out, m)
		}
		if len(out) >= n {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d access log lines, want %d:\n%s", len(out), n, text)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// TestRelayBothWays: 32 MiB each way, unchanged, with the counts in the
// access log.
func TestRelayBothWays(t *testing.T) {
	p := start(t, Options{}, origin(t, echo))
	c := dial(t, p.addr)
	data := make([]byte, 32<<20)
	rand.Read(data)
	go func() {
		c.Write(data)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes back, not the %d sent", len(got), len(data))
	}
	l := p.lines(t, 1)[0]
	if l["bytes_in"] != float64(len(data)) || l["bytes_out"] != float64(len(data)) || l["closed_first"] != "client" {
		t.Errorf("access log: %v", l)
	}
	if p.srv.Stats.BytesIn.Load() != int64(len(data)) {
		t.Errorf("Stats.BytesIn = %d", p.srv.Stats.BytesIn.Load())
	}
}

// TestHalfClose: the client's FIN reaches the origin, which answers after
// it; the answer still reaches the client.
func TestHalfClose(t *testing.T) {
	got := make(chan string, 1)
	addr := origin(t, func(c *net.TCPConn) {
		b, _ := io.ReadAll(c) // to the client's FIN
		got <- string(b)
		time.Sleep(50 * time.Millisecond)
		io.WriteString(c, "answer after your FIN")
	})
	p := start(t, Options{}, addr)
	c := dial(t, p.addr)
	io.WriteString(c, "question")
	c.CloseWrite()
	if s := <-got; s != "question" {
		t.Fatalf("origin read %q", s)
	}
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "answer after your FIN" {
		t.Fatalf("client read %q, %v", b, err)
	}
	if l := p.lines(t, 1)[0]; l["closed_first"] != "client" {
		t.Errorf("closed_first %v, want client", l["closed_first"])
	}
}

// TestConnectRetry: an endpoint that refuses is passed over for the
// other, for every client.
func TestConnectRetry(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	refusing := ln.Addr().String()
	ln.Close()
	p := start(t, Options{}, refusing, origin(t, echo))
	for i := range 10 {
		c := dial(t, p.addr)
		io.WriteString(c, "ping")
		c.CloseWrite()
		if b, _ := io.ReadAll(c); string(b) != "ping" {
			t.Fatalf("client %d: %q", i, b)
		}
	}
	if n := p.srv.Stats.NoUpstream.Load(); n != 0 {
		t.Errorf("%d clients got no endpoint", n)
	}
}

// TestNoEndpoint: every endpoint refuses: the client is closed, counted
// and logged with the error.
func TestNoEndpoint(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	refusing := ln.Addr().String()
	ln.Close()
	p := start(t, Options{}, refusing)
	c := dial(t, p.addr)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d, %v; want the connection closed", n, err)
	}
	l := p.lines(t, 1)[0]
	if !strings.Contains(l["error"].(string), "refused") || p.srv.Stats.NoUpstream.Load() != 1 {
		t.Errorf("access log %v, NoUpstream %d", l, p.srv.Stats.NoUpstream.Load())
	}
}

// TestResetPassedOn: an origin that resets makes the client's connection
// reset too, not end as if the stream were whole.
func TestResetPassedOn(t *testing.T) {
	addr := origin(t, func(c *net.TCPConn) {
		io.WriteString(c, "partial")
		time.Sleep(50 * time.Millisecond)
		c.SetLinger(0)
	})
	p := start(t, Options{}, addr)
	c := dial(t, p.addr)
	io.WriteString(c, "x")
	b, err := io.ReadAll(c)
	if string(b) != "partial" || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read %q, %v; want partial, then a reset", b, err)
	}
}

// TestIdleTimeout: nothing moving either way ends the relay; bytes one
// way keep it open.
func TestIdleTimeout(t *testing.T) {
	addr := origin(t, func(c *net.TCPConn) { copyPlain(c, c) })
	p := start(t, Options{IdleTimeout: 300 * time.Millisecond}, addr)
	busy, quiet := dial(t, p.addr), dial(t, p.addr)
	startAt := time.Now()
	buf := make([]byte, 4)
	for range 8 { // 800 ms of one byte each way every 100 ms
		io.WriteString(busy, "ping")
		if _, err := io.ReadFull(busy, buf); err != nil {
			t.Fatalf("the busy relay ended: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	quiet.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := quiet.Read(buf); err != io.EOF {
		t.Fatalf("the quiet relay: %v, want it closed", err)
	}
	if d := time.Since(startAt); d < 300*time.Millisecond {
		t.Errorf("closed after %v, before the idle timeout", d)
	}
	if l := p.lines(t, 1)[0]; l["closed_first"] != "idle" {
		t.Errorf("closed_first %v, want idle", l["closed_first"])
	}
}

// TestClientNeverReads: an origin that sends and a client that never
// reads: strait buffers nothing in user space, and ends the relay as
// stalled after the idle timeout.
func TestClientNeverReads(t *testing.T) {
	sent := make(chan int64, 1)
	addr := origin(t, func(c *net.TCPConn) {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		n, _ := io.Copy(c, io.LimitReader(rand.Reader, 1<<30))
		sent <- n
	})
	p := start(t, Options{IdleTimeout: 500 * time.Millisecond}, addr)
	c := dial(t, p.addr)
	c.SetReadBuffer(4096)
	n := <-sent
	if n >= 1<<30 {
		t.Fatal("the origin sent everything to a client that reads nothing")
	}
	if l := p.lines(t, 1)[0]; l["closed_first"] != "stalled" {
		t.Errorf("closed_first %v, want stalled", l["closed_first"])
	}
	t.Logf("the origin could send %d KiB before the relay ended (kernel buffers and one pipe)", n>>10)
}

// TestMaxConns: past MaxConns a client is closed at once and counted;
// one that leaves makes room.
func TestMaxConns(t *testing.T) {
	p := start(t, Options{MaxConns: 2}, origin(t, echo))
	a, b := dial(t, p.addr), dial(t, p.addr)
	for _, c := range []*net.TCPConn{a, b} {
		io.WriteString(c, "x")
		io.ReadFull(c, make([]byte, 1))
	}
	// Refused with a reset, which can come before the dial returns.
	if over, err := net.Dial("tcp", p.addr); err == nil {
		over.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := over.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the third client: %v, want it closed", err)
		}
		over.Close()
	}
	if n := p.srv.Stats.OverLimit.Load(); n != 1 {
		t.Errorf("OverLimit %d, want 1", n)
	}
	a.Close()
	waitActive(t, p, 1)
	c := dial(t, p.addr)
	io.WriteString(c, "y")
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("after one left: %v", err)
	}
}

// TestShutdownDrains: Shutdown stops accepting at once; an open relay goes
// on until the drain time is up, and is closed then.
func TestShutdownDrains(t *testing.T) {
	p := start(t, Options{}, origin(t, func(c *net.TCPConn) { copyPlain(c, c) }))
	c := dial(t, p.addr)
	io.WriteString(c, "a")
	io.ReadFull(c, make([]byte, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.srv.Shutdown(ctx) }()
	time.Sleep(100 * time.Millisecond)
	io.WriteString(c, "b")
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("the relay did not go on while draining: %v", err)
	}
	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after the drain: %v, want the relay closed", err)
	}
	if l := p.lines(t, 1)[0]; l["closed_first"] != "drain" {
		t.Errorf("closed_first %v, want drain", l["closed_first"])
	}
}

// TestIdleRelaysHoldNoPipes: open relays that carry nothing hold their
// sockets and no pipe.
func TestIdleRelaysHoldNoPipes(t *testing.T) {
	p := start(t, Options{}, origin(t, echo))
	relay := func() {
		c := dial(t, p.addr)
		io.WriteString(c, "x") // a pipe was used, and given back
		io.ReadFull(c, make([]byte, 1))
	}
	relay() // Serve runs, with its duplicate of the listener
	before := countFDs(t)
	const n = 200
	for range n {
		relay()
	}
	after := countFDs(t)
	// Each relay: the test's client, strait's two sockets, the origin's.
	if got := after.sockets - before.sockets; got != 4*n {
		t.Errorf("%d more sockets for %d relays, want %d", got, n, 4*n)
	}
	if got := after.pipes - before.pipes; got > 2*2*4 {
		t.Errorf("%d more pipe descriptors for %d idle relays, want only a few spares", got, n)
	}
}

type fds struct{ sockets, pipes int }

func countFDs(t *testing.T) fds {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	var f fds
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		switch {
		case strings.HasPrefix(l, "socket:"):
			f.sockets++
		case strings.HasPrefix(l, "pipe:"):
			f.pipes++
		}
	}
	return f
}

// BenchmarkRelaySmall is a 64-byte round trip through a relay to an echo
// origin (in the same process): what a small message costs, and that
// the relay allocates nothing per message in steady state.
func BenchmarkRelaySmall(b *testing.B) {
	addr := benchRelay(b, func(c *net.TCPConn) { echo(c) })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg, got := make([]byte, 64), make([]byte, 64)
	for range 100 { // warm: the pools fill
		c.Write(msg)
		io.ReadFull(c, got)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatal(err)
		}
	}
}

// TestIdleMeasuredFromLastByte: the idle timeout runs from the relay's
// last byte either way, neither sooner nor much later.
func TestIdleMeasuredFromLastByte(t *testing.T) {
	const idle = 600 * time.Millisecond
	addr := origin(t, func(c *net.TCPConn) { io.Copy(io.Discard, struct{ io.Reader }{c}) }) // never sends
	p := start(t, Options{IdleTimeout: idle}, addr)
	c := dial(t, p.addr)
	time.Sleep(idle * 2 / 3)
	io.WriteString(c, "x") // the client→upstream way moves; the other never does
	last := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("%v, want the relay closed", err)
	}
	if d := time.Since(last); d < idle || d > idle+idle/2 {
		t.Errorf("closed %v after the last byte, want about %v", d, idle)
	}
}

// TestHalfClosedTimeout: a client that connects and closes, to an origin
// that waits for it to speak, holds the relay for the half-closed
// timeout, not the idle one.
func TestHalfClosedTimeout(t *testing.T) {
	addr := origin(t, func(c *net.TCPConn) {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, struct{ io.Reader }{c})
		time.Sleep(2 * time.Second) // answers nothing, closes nothing
	})
	p := start(t, Options{IdleTimeout: time.Hour, HalfClosedTimeout: 300 * time.Millisecond}, addr)
	c := dial(t, p.addr)
	c.CloseWrite()
	startAt := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("%v, want the relay closed", err)
	}
	if d := time.Since(startAt); d < 300*time.Millisecond || d > 2*time.Second {
		t.Errorf("closed after %v, want about 300ms", d)
	}
	if l := p.lines(t, 1)[0]; l["closed_first"] != "client" {
		t.Errorf("closed_first %v", l["closed_first"])
	}
}

// TestUrgentData: TCP urgent data, where splice stops, does not stall the
// relay: the stream goes on as a direct connection gives it (the urgent
// byte out of band), in a small message and in the middle of a bulk one.
func TestUrgentData(t *testing.T) {
	p := start(t, Options{IdleTimeout: 5 * time.Second}, origin(t, echo))
	c := dial(t, p.addr)
	raw, _ := c.SyscallConn()
	urgent := func() {
		raw.Write(func(fd uintptr) bool {
			syscall.Sendto(int(fd), []byte("!"), syscall.MSG_OOB, nil)
			return true
		})
	}
	half := make([]byte, 256<<10)
	rand.Read(half)
	for _, part := range [][]byte{[]byte("abc"), half} {
		want := append(append([]byte{}, part...), part...)
		go func() {
			c.Write(part)
			urgent()
			c.Write(part)
		}()
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		got := make([]byte, len(want))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%d bytes, urgent, %d bytes: %v, read back equal %v", len(part), len(part), err, bytes.Equal(got, want))
		}
	}
}

// TestClusterMaxConns: the cluster's circuit breaker bounds its open
// relays: past max_requests a client waits pending_timeout for a slot,
// and is closed without one.
func TestClusterMaxConns(t *testing.T) {
	cl, err := cluster.New(&config.Cluster{Name: "c", Endpoints: []string{origin(t, echo)},
		Limits: config.ClusterLimits{MaxRequests: 1, MaxPending: 1, PendingTimeout: config.Duration(200 * time.Millisecond)}}, cluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	p := start(t, Options{Cluster: cl})
	first := dial(t, p.addr)
	io.WriteString(first, "a")
	io.ReadFull(first, make([]byte, 1))
	second := dial(t, p.addr)
	second.SetReadDeadline(time.Now().Add(5 * time.Second))
	startAt := time.Now()
	if n, err := second.Read(make([]byte, 1)); n != 0 || err == nil || os.IsTimeout(err) {
		t.Fatalf("the second relay: %d, %v; want it closed", n, err)
	}
	if d := time.Since(startAt); d < 150*time.Millisecond {
		t.Errorf("closed after %v, before the pending timeout", d)
	}
	if n := p.srv.Stats.NoUpstream.Load(); n != 1 {
		t.Errorf("NoUpstream %d, want 1", n)
	}
	first.Close()
	waitActive(t, p, 0)
	third := dial(t, p.addr)
	io.WriteString(third, "c")
	if _, err := io.ReadFull(third, make([]byte, 1)); err != nil {
		t.Fatalf("after the first left: %v", err)
	}
}

func waitActive(t *testing.T, p *proxyUnderTest, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.srv.Stats.Active.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d relays open, want %d", p.srv.Stats.Active.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOutOfFDs: when strait has no descriptor left to connect upstream,
// the client is closed and the endpoint is not blamed: no ejection after
// more failures than outlier detection allows.
func TestOutOfFDs(t *testing.T) {
	p := start(t, Options{}, origin(t, echo))
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	// Ten refusals in a row, more than outlier detection allows. A
	// descriptor the runtime closes late can shift the numbers, and a
	// relay that gets through resets the endpoint's count: start again.
	for attempt, hits := 0, 0; hits < 10; attempt++ {
		if attempt == 60 {
			t.Fatalf("the descriptor limit was reached at most %d times in a row in %d attempts", hits, attempt)
		}
		// The limit is on descriptor numbers: the two lowest free ones
		// (the client's socket, and strait's accepted one) stay under
		// it; strait's upstream socket would be the third.
		var free [3]int
		for i := range free {
			free[i], _ = syscall.Dup(0)
		}
		for _, fd := range free {
			syscall.Close(fd)
		}
		low := lim
		low.Cur = uint64(free[2])
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
			t.Fatal(err)
		}
		refused := false
		if c, err := net.Dial("tcp", p.addr); err == nil {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, err := c.Read(make([]byte, 1))
			refused = err != nil && !os.IsTimeout(err)
			c.Close()
		}
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		waitActive(t, p, 0)
		if refused {
			hits++
		} else {
			hits = 0
		}
	}
	if st := p.srv.o.Cluster.Stats(); st.Ejections != 0 {
		t.Errorf("%d ejections: running out of descriptors was blamed on the endpoint", st.Ejections)
	}
	c := dial(t, p.addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "ok")
	if b := make([]byte, 2); func() error { _, err := io.ReadFull(c, b); return err }() != nil || string(b) != "ok" {
		t.Errorf("after: %q", b)
	}
}

// BenchmarkRelayConnection is a short connection through a relay to an
// origin in the same process: connect, 1 KiB each way, the origin closes,
// then the client. Its allocations are the client's and the origin's as
// well as the relay's (-memprofile tells them apart).
func BenchmarkRelayConnection(b *testing.B) {
	addr := benchRelay(b, func(c *net.TCPConn) {
		buf := make([]byte, 1024)
		io.ReadFull(c, buf)
		c.Write(buf)
		c.Close()
	})
	msg, got := make([]byte, 1024), make([]byte, 1025)
	exchange := func() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if n, err := io.ReadFull(c, got); n != len(msg) || err != io.ErrUnexpectedEOF {
			b.Fatalf("read %d bytes, %v; want %d and the end", n, err, len(msg))
		}
	}
	for range 100 {
		exchange()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		exchange()
	}
}

// benchRelay starts an origin that handles each connection with handle,
// and a relay to it; it returns the relay's address.
func benchRelay(b *testing.B, handle func(c *net.TCPConn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c.(*net.TCPConn))
		}
	}()
	cl, err := cluster.New(&config.Cluster{Name: "c", Endpoints: []string{ln.Addr().String()}}, cluster.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.Stop)
	srv := New(Options{Name: "bench", Cluster: cl, Logger: slog.New(slog.DiscardHandler)})
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(pl)
	b.Cleanup(func() { srv.Shutdown(context.Background()) })
	return pl.Addr().String()
}
