package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/straitproxy/strait/internal/proxytest"
	"github.com/straitproxy/strait/proxy"
)

// h2RoundTripper returns a function that sends one GET over an h2c
// connection to strait (prior knowledge) and reads its response, one
// stream at a time, to a raw HTTP/1.1 origin. The client writes frames
// from bytes made once and parses what it reads itself, allocating
// nothing; after the first request, its fields are all indexed in HPACK's
// dynamic table.
//
// literals more fields go as literals never indexed, which the HPACK
// decoder makes a string of each time.
func h2RoundTripper(tb testing.TB, opts proxy.Options, literals int) func() {
	origin := rawOriginKeepAlive(tb, "Hello, World!")
	_, addr := proxytest.Proxy(tb, to(origin), opts)
	return h2RoundTripperTo(tb, addr, literals)
}

// h2RoundTripperTo is h2RoundTripper on a new connection to addr.
func h2RoundTripperTo(tb testing.TB, addr string, literals int) func() {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	br := bufio.NewReaderSize(c, 16<<10)
	io.WriteString(c, http2.ClientPreface)
	c.Write([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0}) // SETTINGS, empty

	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	block := func() []byte {
		hb.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/hello"},
			{":authority", "bench"}, {"user-agent", "bench"}, {"accept", "*/*"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		for i := range literals {
			enc.WriteField(hpack.HeaderField{Name: "x-literal", Value: strconv.Itoa(i), Sensitive: true})
		}
		return append([]byte(nil), hb.Bytes()...)
	}
	first, indexed := block(), block()
	frame := make([]byte, 9+len(first))
	var hdr [9]byte
	payload := make([]byte, 16<<10)
	var id uint32 = 1
	received := 0 // DATA bytes not yet given back to the connection window
	window := []byte{0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	send := func(b []byte) {
		frame = frame[:9+len(b)]
		frame[0], frame[1], frame[2] = 0, byte(len(b)>>8), byte(len(b))
		frame[3], frame[4] = byte(http2.FrameHeaders), byte(http2.FlagHeadersEndStream|http2.FlagHeadersEndHeaders)
		binary.BigEndian.PutUint32(frame[5:9], id)
		copy(frame[9:], b)
		if _, err := c.Write(frame); err != nil {
			tb.Fatal(err)
		}
	}
	// read reads frames until stream id ends, acknowledging SETTINGS.
	read := func() {
		for {
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				tb.Fatal(err)
			}
			n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
			if _, err := io.ReadFull(br, payload[:n]); err != nil {
				tb.Fatal(err)
			}
			typ, flags, sid := http2.FrameType(hdr[3]), http2.Flags(hdr[4]), binary.BigEndian.Uint32(hdr[5:9])&(1<<31-1)
			switch typ {
			case http2.FrameSettings:
				if flags&http2.FlagSettingsAck == 0 {
					c.Write([]byte{0, 0, 0, 4, 1, 0, 0, 0, 0})
				}
			case http2.FrameGoAway, http2.FrameRSTStream:
				tb.Fatalf("%v on stream %d: % x", typ, sid, payload[:min(n, 16)])
			case http2.FrameData:
				if received += n; received > 32<<10 {
					binary.BigEndian.PutUint32(window[9:], uint32(received))
					c.Write(window)
					received = 0
				}
				if sid == id && flags&http2.FlagDataEndStream != 0 {
					return
				}
			case http2.FrameHeaders:
				if sid == id && flags&http2.FlagHeadersEndStream != 0 {
					return
				}
			}
		}
	}
	send(first)
	read()
	return func() {
		id += 2
		send(indexed)
		read()
	}
}

func BenchmarkProxyH2GET(b *testing.B) {
	benchRoundTrips(b, h2RoundTripper(b, proxy.Options{}, 0))
}

// TestProxyH2Allocs pins the steady state of h2c to HTTP/1.1: no
// allocation per request when the fields hit HPACK's tables, and at most
// one per field sent as a literal (x/net's hpack makes it a string).
func TestProxyH2Allocs(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("counts allocations over 2,000 requests; meaningless under -race")
	}
	for _, literals := range []int{0, 3} {
		roundTrip := h2RoundTripper(t, proxy.Options{}, literals)
		for range 200 {
			roundTrip()
		}
		if n := testing.AllocsPerRun(2000, roundTrip); n > float64(literals) {
			t.Errorf("%d literal fields: %v allocations per proxied request, want at most %d", literals, n, literals)
		}
	}
}

// TestH2Parked: idle HTTP/2 connections hold no goroutine, serve their
// next request, and close at the idle timeout.
func TestH2Parked(t *testing.T) {
	origin := rawOriginKeepAlive(t, "ok")
	srv, addr := proxytest.Proxy(t, to(origin), proxy.Options{Timeouts: proxy.Timeouts{Idle: 6 * time.Second}})
	const n = 200
	before := runtime.NumGoroutine()
	conns := make([]func(), n)
	for i := range conns {
		conns[i] = h2RoundTripperTo(t, addr, 0) // one request each
	}
	// Past park.After, and the idle workers' trim to 64 (within two of
	// its one-second periods).
	extra := 0
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if extra = runtime.NumGoroutine() - before; extra <= 64+10 || time.Now().After(deadline) {
			break
		}
	}
	if extra > 64+10 {
		t.Errorf("%d idle HTTP/2 connections hold %d more goroutines; want them parked without one", n, extra)
	}
	for _, roundTrip := range conns {
		roundTrip()
	}
	if got := srv.Counters().ConnsOpen.Load(); got != n {
		t.Errorf("open connections: %d, want %d", got, n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.Counters().ConnsOpen.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if got := srv.Counters().ConnsOpen.Load(); got != 0 {
		t.Errorf("%d connections open after the idle timeout", got)
	}
}

// TestH2IdleWithPings: the idle timeout runs from the last stream's end;
// a client that only sends PINGs meanwhile (every 2 ms, under the frame
// limit) is still closed at it (the attacker review saw it outlive 15 s).
func TestH2IdleWithPings(t *testing.T) {
	origin := rawOriginKeepAlive(t, "ok")
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{Timeouts: proxy.Timeouts{Idle: time.Second}})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, http2.ClientPreface)
	fr := http2.NewFramer(nc, nc)
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "a"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	ended := make(chan time.Time, 1)
	go func() {
		for {
			f, err := fr.ReadFrame()
			if _, ok := f.(*http2.GoAwayFrame); ok || err != nil {
				ended <- time.Now()
				return
			}
		}
	}()
	start := time.Now()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case at := <-ended:
			if d := at.Sub(start); d < 900*time.Millisecond || d > 2500*time.Millisecond {
				t.Errorf("GOAWAY after %v, want about the 1 s idle timeout", d)
			}
			return
		case <-tick.C:
			if time.Since(start) > 6*time.Second {
				t.Fatal("a client that only PINGs is not closed after 6 s with a 1 s idle timeout")
			}
			fr.WritePing(false, [8]byte{})
		}
	}
}

// TestH2ClientLeavesMidResponse: an HTTP/2 client that closes its
// connection while its streams' responses are on their way is logged as
// gone (downstream_gone), not as strait's own failure, whichever step of
// the exchange meets the closed connection.
func TestH2ClientLeavesMidResponse(t *testing.T) {
	arrived := make(chan struct{}, 100)
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		time.Sleep(time.Duration(len(arrived)) * 500 * time.Microsecond)
		io.WriteString(w, "ok")
	}))
	var mu sync.Mutex
	var errs []*proxy.Error
	p := to(origin)
	p.Logging = func(s *proxy.Session, e *proxy.Error) {
		if e != nil {
			mu.Lock()
			errs = append(errs, e)
			mu.Unlock()
		}
	}
	_, addr := proxytest.Proxy(t, p, proxy.Options{})

	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "a"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	const rounds, streams = 20, 10
	for range rounds {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fr := http2.NewFramer(c, c)
		io.WriteString(c, http2.ClientPreface)
		fr.WriteSettings()
		for i := range streams {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
		}
		<-arrived
		c.Close()
		for len(arrived) > 0 {
			<-arrived
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(errs)
		mu.Unlock()
		if n >= rounds || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	gone := 0
	for _, e := range errs {
		if e.Kind == proxy.KindDownstreamGone {
			gone++
		} else {
			t.Errorf("logged %v (side %v, kind %v), want downstream_gone", e, e.Side, e.Kind)
		}
	}
	if gone == 0 {
		t.Fatal("no request was logged as its client's leaving: the test proves nothing")
	}
	t.Logf("%d requests logged as gone", gone)
}
