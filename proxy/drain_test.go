package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/straitproxy/strait/internal/proxytest"
	"github.com/straitproxy/strait/proxy"
)

// shutdownAsync runs srv.Shutdown with a context of ctxTimeout and sends
// its error and how long it took.
func shutdownAsync(srv *proxy.Server, ctxTimeout time.Duration) <-chan shutdownResult {
	done := make(chan shutdownResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ctxTimeout)
		defer cancel()
		start := time.Now()
		err := srv.Shutdown(ctx)
		done <- shutdownResult{err, time.Since(start)}
	}()
	return done
}

type shutdownResult struct {
	err  error
	took time.Duration
}

func okOrigin(t *testing.T) string {
	return proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
}

// TestShutdownIdleCarriesOneMore: a keep-alive connection idle (parked)
// when Shutdown begins may still send a request: it is answered 200 with
// Connection: close rather than met with a closed connection (RFC 9112
// §9.5), the connection then closes, and Shutdown returns at once, not at
// the end of DrainIdle or ctx.
func TestShutdownIdleCarriesOneMore(t *testing.T) {
	const drainIdle = 3 * time.Second
	srv, addr := proxytest.Proxy(t, to(okOrigin(t)), proxy.Options{Timeouts: proxy.Timeouts{DrainIdle: drainIdle}})
	c, br := rawConn(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, body := readResponse(t, br, "GET"); resp.Close || body != "ok" {
		t.Fatalf("before the shutdown: %q, close %v", body, resp.Close)
	}
	time.Sleep(100 * time.Millisecond) // parked

	done := shutdownAsync(srv, 10*time.Second)
	time.Sleep(100 * time.Millisecond)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, body := readResponse(t, br, "GET")
	if resp.StatusCode != 200 || body != "ok" || !resp.Close {
		t.Errorf("within DrainIdle: %d %q, close %v; want 200 ok with Connection: close", resp.StatusCode, body, resp.Close)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("the connection outlived its response")
	}
	select {
	case r := <-done:
		if r.err != nil || r.took > time.Second {
			t.Errorf("Shutdown: %v after %v; want nil soon after the last connection closed", r.err, r.took)
		}
	case <-time.After(drainIdle):
		t.Fatal("Shutdown waited for DrainIdle with no connection left")
	}
}

// TestShutdownClosesIdleAfterDrainIdle: an idle connection that sends
// nothing is closed once DrainIdle has passed, not at once and not at the
// end of ctx; with DrainIdle negative, at once.
func TestShutdownClosesIdleAfterDrainIdle(t *testing.T) {
	for _, tc := range []struct {
		name   string
		drain  time.Duration
		lo, hi time.Duration // when it closes
	}{
		{"300ms", 300 * time.Millisecond, 280 * time.Millisecond, 800 * time.Millisecond},
		{"negative", -1, 0, 150 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, addr := proxytest.Proxy(t, to(okOrigin(t)), proxy.Options{Timeouts: proxy.Timeouts{DrainIdle: tc.drain}})
			c, br := rawConn(t, addr)
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			readResponse(t, br, "GET")
			time.Sleep(50 * time.Millisecond)

			start := time.Now()
			done := shutdownAsync(srv, 10*time.Second)
			_, err := br.ReadByte()
			closed := time.Since(start)
			if err == nil {
				t.Fatal("the idle connection got bytes")
			}
			if closed < tc.lo || closed > tc.hi {
				t.Errorf("the idle connection closed after %v, want %v-%v", closed, tc.lo, tc.hi)
			}
			if r := <-done; r.err != nil || r.took > tc.hi+100*time.Millisecond {
				t.Errorf("Shutdown: %v after %v", r.err, r.took)
			}
		})
	}
}

// TestShutdownFinishesInFlight: a request waiting for a slow origin when
// Shutdown begins is answered whole, with Connection: close, and Shutdown
// returns after it.
func TestShutdownFinishesInFlight(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(500 * time.Millisecond)
		io.WriteString(w, "late")
	}))
	srv, addr := proxytest.Proxy(t, to(origin), proxy.Options{Timeouts: proxy.Timeouts{DrainIdle: 100 * time.Millisecond}})
	c, br := rawConn(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(100 * time.Millisecond)
	done := shutdownAsync(srv, 10*time.Second)
	resp, body := readResponse(t, br, "GET")
	if resp.StatusCode != 200 || body != "late" || !resp.Close {
		t.Errorf("in flight: %d %q, close %v; want 200 late with Connection: close", resp.StatusCode, body, resp.Close)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("the connection outlived its response")
	}
	if r := <-done; r.err != nil || r.took < 300*time.Millisecond || r.took > 2*time.Second {
		t.Errorf("Shutdown: %v after %v; want nil once the request was done", r.err, r.took)
	}
}

// TestShutdownH2TwoStepGoAway: HTTP/2 clients are told in two steps (RFC
// 9113 §6.8): GOAWAY with the last stream id 2^31-1 and a PING; a stream
// the client opens before it acknowledges the PING is served, not
// refused; then a GOAWAY with the real last stream id, and the connection
// closes. Shutdown returns then, not at the end of DrainIdle.
func TestShutdownH2TwoStepGoAway(t *testing.T) {
	const drainIdle = 3 * time.Second
	srv, addr := proxytest.Proxy(t, to(okOrigin(t)), proxy.Options{Timeouts: proxy.Timeouts{DrainIdle: drainIdle}})
	nc, fr := dialH2Raw(t, addr)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	request := func(id uint32) {
		hb.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "a"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	}
	// What the client has read, frame by frame.
	status := map[uint32]string{}
	body := map[uint32]string{}
	ended := map[uint32]bool{}
	var goAways []http2.GoAwayFrame
	var ping *[8]byte
	var headersFor uint32
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == ":status" {
			status[headersFor] = f.Value
		}
	})
	// readUntil reads frames until cond holds; it reports false if the
	// connection ended first.
	readUntil := func(cond func() bool) bool {
		for !cond() {
			f, err := fr.ReadFrame()
			if err != nil {
				return false
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck()
				}
			case *http2.HeadersFrame:
				headersFor = f.StreamID
				dec.Write(f.HeaderBlockFragment())
				ended[f.StreamID] = ended[f.StreamID] || f.StreamEnded()
			case *http2.DataFrame:
				body[f.StreamID] += string(f.Data())
				ended[f.StreamID] = ended[f.StreamID] || f.StreamEnded()
			case *http2.RSTStreamFrame:
				t.Errorf("stream %d reset: %v", f.StreamID, f.ErrCode)
				ended[f.StreamID] = true
			case *http2.GoAwayFrame:
				goAways = append(goAways, *f)
			case *http2.PingFrame:
				if !f.IsAck() {
					data := f.Data
					ping = &data
				}
			}
		}
		return true
	}
	request(1)
	if !readUntil(func() bool { return ended[1] }) || status[1] != "200" {
		t.Fatalf("stream 1 before the shutdown: %q", status[1])
	}
	time.Sleep(100 * time.Millisecond) // parked

	done := shutdownAsync(srv, 10*time.Second)
	if !readUntil(func() bool { return len(goAways) > 0 && ping != nil }) {
		t.Fatalf("the connection ended before GOAWAY and PING: %+v", goAways)
	}
	if g := goAways[0]; g.LastStreamID != 1<<31-1 || g.ErrCode != http2.ErrCodeNo {
		t.Errorf("first GOAWAY: last stream %d, %v; want 2^31-1, NO_ERROR", g.LastStreamID, g.ErrCode)
	}
	// A stream the client opened before it read the GOAWAY, as far as
	// strait can tell: the PING is not acknowledged yet.
	request(3)
	time.Sleep(20 * time.Millisecond)
	fr.WritePing(true, *ping)
	if !readUntil(func() bool { return ended[3] && len(goAways) > 1 }) {
		t.Fatalf("the connection ended early: stream 3 ended %v, GOAWAYs %+v", ended[3], goAways)
	}
	if status[3] != "200" || body[3] != "ok" {
		t.Errorf("stream 3, opened after the first GOAWAY: %q %q; want 200 ok", status[3], body[3])
	}
	if g := goAways[1]; g.LastStreamID != 3 || g.ErrCode != http2.ErrCodeNo {
		t.Errorf("second GOAWAY: last stream %d, %v; want 3, NO_ERROR", g.LastStreamID, g.ErrCode)
	}
	if readUntil(func() bool { return false }) {
		t.Error("unreachable")
	}
	nc.Close()
	select {
	case r := <-done:
		if r.err != nil || r.took > 1500*time.Millisecond {
			t.Errorf("Shutdown: %v after %v", r.err, r.took)
		}
	case <-time.After(drainIdle + time.Second):
		t.Fatal("Shutdown did not return")
	}
}

// TestShutdownH2NoAck: a client that never acknowledges the PING still
// gets the second GOAWAY about a second after the first, while its stream
// runs; the stream finishes, and one it opens after that GOAWAY is
// refused.
func TestShutdownH2NoAck(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(1500 * time.Millisecond)
		io.WriteString(w, "late")
	}))
	srv, addr := proxytest.Proxy(t, to(origin), proxy.Options{Timeouts: proxy.Timeouts{DrainIdle: 5 * time.Second}})
	nc, fr := dialH2Raw(t, addr)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "a"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	time.Sleep(100 * time.Millisecond) // the stream reached the origin
	done := shutdownAsync(srv, 10*time.Second)
	start := time.Now()
	var goAways []uint32
	var secondAt time.Duration
	refused, ended := false, false
	for !ended || !refused {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %v, with GOAWAYs %v, stream 1 ended %v, stream 3 refused %v: %v",
				time.Since(start), goAways, ended, refused, err)
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			if goAways = append(goAways, f.LastStreamID); len(goAways) == 2 {
				secondAt = time.Since(start)
				// Known to be after the second GOAWAY: refused.
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
			}
		case *http2.DataFrame:
			ended = ended || f.StreamID == 1 && f.StreamEnded()
		case *http2.RSTStreamFrame:
			if f.StreamID != 3 || f.ErrCode != http2.ErrCodeRefusedStream {
				t.Fatalf("RST_STREAM %d %v", f.StreamID, f.ErrCode)
			}
			refused = true
		}
	}
	if len(goAways) != 2 || goAways[0] != 1<<31-1 || goAways[1] != 1 {
		t.Errorf("GOAWAYs %v, want 2^31-1 then 1", goAways)
	}
	if secondAt < 900*time.Millisecond || secondAt > 1400*time.Millisecond {
		t.Errorf("the second GOAWAY came %v after the shutdown began, want about 1 s", secondAt)
	}
	nc.Close()
	if r := <-done; r.err != nil || r.took > 3*time.Second {
		t.Errorf("Shutdown: %v after %v", r.err, r.took)
	}
}

// TestPoolCloseIdleMatching: CloseIdleMatching closes the idle upstream
// connections of the keys it matches, and only those.
func TestPoolCloseIdleMatching(t *testing.T) {
	countingOrigin := func() (string, *atomic.Int32) {
		var closed atomic.Int32
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
			ConnState: func(_ net.Conn, s http.ConnState) {
				if s == http.StateClosed {
					closed.Add(1)
				}
			},
		}
		go hs.Serve(ln)
		t.Cleanup(func() { hs.Close() })
		return ln.Addr().String(), &closed
	}
	oldAddr, oldClosed := countingOrigin()
	newAddr, newClosed := countingOrigin()
	peers := map[string]*proxy.Peer{
		"/old": {Addr: oldAddr, Key: oldAddr + " gen1"},
		"/new": {Addr: newAddr, Key: newAddr + " gen2"},
	}
	pool := proxy.NewPool(proxy.PoolLimits{})
	_, addr := proxytest.Proxy(t, proxy.Phases{UpstreamPeer: func(s *proxy.Session) (*proxy.Peer, error) {
		if p := peers[string(s.Request.Path)]; p != nil {
			return p, nil
		}
		return nil, errors.New("no peer")
	}}, proxy.Options{Pool: pool})
	client := proxytest.Client()
	for _, path := range []string{"/old", "/new"} {
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if !waitFor(2*time.Second, func() bool { return pool.Idle() == 2 }) {
		t.Fatalf("%d idle upstream connections, want 2", pool.Idle())
	}
	pool.CloseIdleMatching(func(key string) bool { return strings.HasSuffix(key, " gen1") })
	if n := pool.Idle(); n != 1 {
		t.Errorf("%d idle upstream connections after CloseIdleMatching, want 1", n)
	}
	if !waitFor(2*time.Second, func() bool { return oldClosed.Load() == 1 }) {
		t.Error("the matching key's connection is still open at its origin")
	}
	time.Sleep(50 * time.Millisecond)
	if n := newClosed.Load(); n != 0 {
		t.Errorf("%d connections of the other key closed", n)
	}
	client.CloseIdleConnections()
}

// TestShutdownH2GoClient: an idle connection of Go's HTTP/2 client, which
// acknowledges PINGs, is closed within a round trip of the shutdown, and
// Shutdown returns then, not at the end of DrainIdle.
func TestShutdownH2GoClient(t *testing.T) {
	const drainIdle = 3 * time.Second
	srv, addr := proxytest.Proxy(t, to(okOrigin(t)), proxy.Options{Timeouts: proxy.Timeouts{DrainIdle: drainIdle}})
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	tr := &http.Transport{Protocols: &protos}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("served as %s", resp.Proto)
	}
	time.Sleep(100 * time.Millisecond) // parked
	select {
	case r := <-shutdownAsync(srv, 10*time.Second):
		if r.err != nil || r.took > time.Second {
			t.Errorf("Shutdown: %v after %v; want nil within a second", r.err, r.took)
		}
	case <-time.After(drainIdle + time.Second):
		t.Fatal("Shutdown did not return")
	}
}

// dialH2Raw opens an HTTP/2 connection with prior knowledge to addr, its
// preface and SETTINGS sent, for frames written and read by hand; it is
// closed when the test ends.
func dialH2Raw(t *testing.T, addr string) (net.Conn, *http2.Framer) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(nc, http2.ClientPreface)
	fr := http2.NewFramer(nc, nc)
	fr.WriteSettings()
	return nc, fr
}
