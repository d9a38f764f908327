package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2cOrigin is Go's HTTP/2 server in cleartext (prior knowledge) with
// handler h, and the connections it accepted.
func h2cOrigin(t *testing.T, conf *http.HTTP2Config, h http.Handler) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protos, HTTP2: conf,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	})
	return ln.Addr().String(), &conns
}

// straitToH2c runs strait with one cluster speaking h2c to origin, and
// returns its address and process.
func straitToH2c(t *testing.T, origin string) (string, *proc) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, t.TempDir(), "h2up.yaml", fmt.Sprintf(`listeners:
  - {address: %s, routes: [{cluster: o}]}
clusters: [{name: o, protocol: h2c, endpoints: [%q]}]
`, addr, origin), addr)
	return addr, p
}

// h2cClient is Go's client speaking HTTP/2 in cleartext.
func h2cClient() *http.Client {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &protos}, Timeout: 20 * time.Second}
}

// h2Echo answers with what it got: protocol, method, target, Host, the
// body's length and digest, a request trailer; with a trailer of its own.
func h2Echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	sum := sha256.Sum256(body)
	w.Header().Set("Trailer", "X-Sum")
	fmt.Fprintf(w, "%s %s %s host=%s te=%q len=%d sum=%x req-trailer=%q", r.Proto, r.Method, r.RequestURI, r.Host,
		r.Header.Get("Te"), len(body), sum[:4], r.Trailer.Get("X-Req-T"))
	w.Header().Set("X-Sum", fmt.Sprintf("%x", sum[:4]))
}

// TestHTTP2Upstream: HTTP/1.1 and HTTP/2 clients through strait to Go's
// HTTP/2 server in cleartext (protocol: h2c): bodies past every window
// both ways, trailers both ways (chunked to the HTTP/1.1 client), on few
// upstream connections.
func TestHTTP2Upstream(t *testing.T) {
	origin, conns := h2cOrigin(t, nil, http.HandlerFunc(h2Echo))
	addr, _ := straitToH2c(t, origin)

	r := mustCurl(t, "-sS", "--raw", "-H", "TE: trailers", "http://"+addr+"/a?b=1")
	if got := string(r.Stdout); !strings.Contains(got, "HTTP/2.0 GET /a?b=1 host="+addr+` te="trailers" len=0`) ||
		!strings.Contains(got, "\r\n0\r\nx-sum: e3b0c442\r\n\r\n") {
		t.Errorf("curl HTTP/1.1, raw: %q", got)
	}

	big := bytes.Repeat([]byte("u"), 3<<20)
	sum := sha256.Sum256(big)
	for _, h2 := range []bool{false, true} {
		client := newClient(true)
		if h2 {
			client = h2cClient()
		}
		req, _ := http.NewRequest("POST", "http://"+addr+"/up", io.NopCloser(bytes.NewReader(big)))
		req.Trailer = http.Header{"X-Req-T": nil}
		req.ContentLength = -1
		req.Header.Set("Trailer", "X-Req-T")
		req.Trailer.Set("X-Req-T", "rt")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("h2 client %v: %v", h2, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf(`HTTP/2.0 POST /up host=%s te="trailers" len=%d sum=%x req-trailer="rt"`, addr, len(big), sum[:4])
		if string(body) != want || resp.Trailer.Get("X-Sum") != fmt.Sprintf("%x", sum[:4]) {
			t.Errorf("h2 client %v: %d %q, trailer %v; want %q", h2, resp.StatusCode, body, resp.Trailer, want)
		}
	}

	// Many at once: they share the connection's streams.
	var wg sync.WaitGroup
	client := h2cClient()
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(fmt.Sprintf("http://%s/many/%d", addr, i))
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(body), fmt.Sprintf("GET /many/%d ", i)) {
				t.Errorf("request %d: %q", i, body)
			}
		}()
	}
	wg.Wait()
	if n := conns.Load(); n > 4 {
		t.Errorf("the origin accepted %d connections for 203 requests; HTTP/2 should need one or two", n)
	}
	t.Logf("the origin accepted %d connection(s)", conns.Load())
}

// TestHTTP2UpstreamMaxStreams: an origin that allows 5 streams per
// connection gets at most 5 at once on each, under 10 times as many
// requests, and every request is answered; connections are opened as the
// others fill, not one per request.
func TestHTTP2UpstreamMaxStreams(t *testing.T) {
	var mu sync.Mutex
	active := map[string]int{} // by the origin's view of the connection
	worst := 0
	origin, conns := h2cOrigin(t, &http.HTTP2Config{MaxConcurrentStreams: 5}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		active[r.RemoteAddr]++
		worst = max(worst, active[r.RemoteAddr])
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		active[r.RemoteAddr]--
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	addr, _ := straitToH2c(t, origin)
	client := h2cClient()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get("http://" + addr + "/")
			if err != nil {
				failed.Add(1)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "ok" {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of 50 requests failed", n)
	}
	if worst > 5 {
		t.Errorf("the origin had %d streams at once on a connection; it allows 5", worst)
	}
	if worst < 2 || conns.Load() > 12 {
		t.Errorf("%d connection(s), at most %d streams at once on one: want them shared, 5 each", conns.Load(), worst)
	}
	t.Logf("at most %d streams at once per connection, over %d connection(s)", worst, conns.Load())
}

// goAwayOrigin is an HTTP/2 origin (raw frames, cleartext) that answers
// the first perConn streams of each connection, then sends GOAWAY naming
// the last of them and ignores the streams above it, which it counts. It
// answers "ok PATH" so that each request can be told to have got its own.
func goAwayOrigin(t *testing.T, perConn int) (addr string, answered, ignored *atomic.Int64) {
	answered, ignored = new(atomic.Int64), new(atomic.Int64)
	addr = startRawOrigin(t, func(nc net.Conn) {
		defer nc.Close()
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(nc, preface); err != nil {
			return
		}
		fr := http2.NewFramer(nc, nc)
		var wmu sync.Mutex
		fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1000})
		dec := hpack.NewDecoder(4096, nil)
		var last uint32
		n := 0
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					wmu.Lock()
					fr.WriteSettingsAck()
					wmu.Unlock()
				}
			case *http2.HeadersFrame:
				fields, err := dec.DecodeFull(f.HeaderBlockFragment())
				if err != nil {
					return
				}
				if last != 0 && f.StreamID > last {
					ignored.Add(1)
					continue
				}
				path := ""
				for _, hf := range fields {
					if hf.Name == ":path" {
						path = hf.Value
					}
				}
				var hb bytes.Buffer
				enc := hpack.NewEncoder(&hb)
				enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
				wmu.Lock()
				if n++; n == perConn {
					last = f.StreamID
					fr.WriteGoAway(last, http2.ErrCodeNo, nil)
				}
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: hb.Bytes(), EndHeaders: true})
				fr.WriteData(f.StreamID, true, []byte("ok "+path))
				wmu.Unlock()
				answered.Add(1)
			}
		}
	})
	return addr, answered, ignored
}

// TestHTTP2UpstreamGoAway: an origin that sends GOAWAY after every 30
// streams of a connection, under 300 requests at once: the streams it
// did not process go again on a new connection and every request gets its
// own answer; none is processed twice.
func TestHTTP2UpstreamGoAway(t *testing.T) {
	origin, answered, ignored := goAwayOrigin(t, 30)
	addr, p := straitToH2c(t, origin)
	client := h2cClient()
	const n = 300
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(fmt.Sprintf("http://%s/r%d", addr, i))
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				failed.Add(1)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != fmt.Sprintf("ok /r%d", i) {
				t.Errorf("request %d: %d %q", i, resp.StatusCode, body)
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Logf("strait said: %s", p.stderr.String()[:min(3000, len(p.stderr.String()))])
	}
	t.Logf("%d answered by the origin, %d streams it ignored after GOAWAY (sent again), %d failed", answered.Load(), ignored.Load(), failed.Load())
	if a := answered.Load(); a != n {
		t.Errorf("the origin answered %d requests, want each of the %d once", a, n)
	}
	if ignored.Load() == 0 {
		t.Error("no stream was left unprocessed by a GOAWAY: the test proves nothing")
	}
	_, m := adminDo(t, "GET", "http://"+adminAddrOf(t, p)+"/metrics", nil)
	if n := metricValue(m, "strait_upstream_unprocessed_total"); n < float64(ignored.Load()) {
		t.Errorf("strait_upstream_unprocessed_total %v, want at least the %d streams the origin ignored", n, ignored.Load())
	}
}

// TestHTTP2UpstreamNginx: nginx over TLS with http2 (protocol: h2, ALPN),
// a 1 MiB file to HTTP/1.1 and HTTP/2 clients, 100 requests on nginx's
// HTTP/2 connections, which its log shows.
func TestHTTP2UpstreamNginx(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	cert, key := ca.issue(t, dir, "origin", 22, "origin.test")
	caFile := writeFile(t, dir, "ca.pem", ca.pem)
	file := make([]byte, 1<<20)
	rand.Read(file)
	n := startNginxServer(t, map[string][]byte{"f": file},
		`log_format h2 '$connection $server_protocol $ssl_protocol $request_uri';`,
		" ssl http2", fmt.Sprintf(`ssl_certificate %s;
        ssl_certificate_key %s;
        access_log %s/h2.log h2;`, cert, key, dir))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, dir, "u.yaml", fmt.Sprintf(`listeners:
  - {address: %s, routes: [{cluster: o}]}
clusters:
  - {name: o, protocol: h2, endpoints: [%q], tls: {ca_file: %s, server_name: origin.test}}
`, addr, n.Addr, caFile), addr)
	want := sha256.Sum256(file)
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := h2cClient()
			if i%2 == 0 {
				client = newClient(true)
			}
			resp, err := client.Get(fmt.Sprintf("http://%s/f?%d", addr, i))
			if err != nil {
				t.Error(err)
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || sha256.Sum256(body) != want {
				t.Errorf("request %d: %d, %d bytes, %v", i, resp.StatusCode, len(body), err)
			}
		}()
	}
	wg.Wait()
	var lines []string
	for deadline := time.Now().Add(3 * time.Second); len(lines) < 100 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		log, _ := os.ReadFile(filepath.Join(dir, "h2.log"))
		lines = strings.Split(strings.TrimSpace(string(log)), "\n")
	}
	conns := map[string]bool{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 4 || f[1] != "HTTP/2.0" || !strings.HasPrefix(f[2], "TLSv1.") {
			t.Fatalf("nginx logged %q, want HTTP/2.0 over TLS", l)
		}
		conns[f[0]] = true
	}
	if len(lines) != 100 || len(conns) > 5 {
		t.Errorf("nginx logged %d requests over %d connections, want 100 over a few", len(lines), len(conns))
	}
	t.Logf("nginx served %d requests over %d HTTP/2 connection(s)", len(lines), len(conns))
}

// TestHTTP2UpstreamReset: an origin that resets a stream mid-body cuts
// that response short (an HTTP/1.1 client sees no last chunk, an HTTP/2
// one a reset), and the connection's other streams go on.
func TestHTTP2UpstreamReset(t *testing.T) {
	origin, conns := h2cOrigin(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/reset" {
			w.Write(bytes.Repeat([]byte("x"), 100<<10))
			w.(http.Flusher).Flush()
			time.Sleep(50 * time.Millisecond)
			panic(http.ErrAbortHandler) // RST_STREAM
		}
		io.WriteString(w, "ok")
	}))
	addr, _ := straitToH2c(t, origin)
	for _, client := range []*http.Client{newClient(true), h2cClient()} {
		resp, err := client.Get("http://" + addr + "/reset")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("a response the origin reset: %d bytes, %v; want it cut short", len(body), err)
		}
		getOK(t, client, "http://"+addr+"/after", []byte("ok"))
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the origin accepted %d connections; resets should not cost the connection", n)
	}
}

// TestWebSocketOverHTTP2: a WebSocket opened by extended CONNECT (RFC
// 8441) from an HTTP/2 client, through strait to an HTTP/1.1 WebSocket
// echo origin: messages both ways, then the close handshake. An extended
// CONNECT for a protocol the listener does not allow gets 501, and never
// reaches the origin.
func TestWebSocketOverHTTP2(t *testing.T) {
	origin, upgrades := wsEchoOrigin(t)
	plain, _, _, _ := h2Strait(t, origin, "")
	c := dialH2(t, plain)
	// strait says it takes extended CONNECT.
	if v, ok := c.settings.Value(http2.SettingEnableConnectProtocol); !ok || v != 1 {
		t.Fatalf("SETTINGS without ENABLE_CONNECT_PROTOCOL 1")
	}
	c.headers(1, false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", "/chat",
		":authority", "a.test", "sec-websocket-version", "13")
	readFrame := func() http2.Frame {
		t.Helper()
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	for {
		f := readFrame()
		if h, ok := f.(*http2.HeadersFrame); ok {
			if h.StreamEnded() {
				t.Fatal("the extended CONNECT's response ended its stream")
			}
			status := ""
			hpack.NewDecoder(4096, func(f hpack.HeaderField) {
				if f.Name == ":status" {
					status = f.Value
				}
			}).Write(h.HeaderBlockFragment())
			if status != "200" {
				t.Fatalf("extended CONNECT: status %q, want 200", status)
			}
			break
		}
	}
	// WebSocket frames, the client's masked (RFC 6455 §5.3).
	wsFrame := func(op byte, payload []byte) []byte {
		mask := [4]byte{1, 2, 3, 4}
		b := []byte{0x80 | op, 0x80 | byte(len(payload))}
		b = append(b, mask[:]...)
		for i, p := range payload {
			b = append(b, p^mask[i%4])
		}
		return b
	}
	var got []byte
	readWS := func() (byte, []byte) {
		t.Helper()
		for len(got) < 2 || len(got) < 2+int(got[1]&0x7f) {
			switch f := readFrame().(type) {
			case *http2.DataFrame:
				got = append(got, f.Data()...)
				c.fr.WriteWindowUpdate(0, uint32(len(f.Data())))
				c.fr.WriteWindowUpdate(1, uint32(len(f.Data())))
			case *http2.RSTStreamFrame:
				t.Fatalf("stream reset: %v", f.ErrCode)
			}
		}
		n := 2 + int(got[1]&0x7f)
		op, payload := got[0]&0x0f, append([]byte(nil), got[2:n]...)
		got = got[n:]
		return op, payload
	}
	for _, msg := range []string{"hello", "over HTTP/2", strings.Repeat("x", 100)} {
		c.fr.WriteData(1, false, wsFrame(1, []byte(msg)))
		if op, payload := readWS(); op != 1 || string(payload) != "echo: "+msg {
			t.Fatalf("echo of %q: opcode %d %q", msg, op, payload)
		}
	}
	c.fr.WriteData(1, false, wsFrame(8, []byte{0x03, 0xe8})) // close, 1000
	if op, _ := readWS(); op != 8 {
		t.Fatalf("the close handshake: opcode %d, want 8", op)
	}
	if upgrades.Load() != 1 {
		t.Errorf("the origin saw %d upgrades, want 1", upgrades.Load())
	}

	c.headers(3, false, ":method", "CONNECT", ":protocol", "not-allowed", ":scheme", "http", ":path", "/x", ":authority", "a.test")
	if got := c.outcome(3); got != "status 501" {
		t.Errorf("an extended CONNECT for a protocol not allowed: %s, want status 501", got)
	}
	if upgrades.Load() != 1 {
		t.Errorf("the origin saw %d upgrades, want still 1", upgrades.Load())
	}
}

// TestWebSocketToHTTP2Upstream: a WebSocket from an HTTP/1.1 client
// through strait to an HTTP/2 upstream that takes extended CONNECT:
// another strait (Go's server keeps extended CONNECT behind a GODEBUG),
// in front of an HTTP/1.1 WebSocket echo. The first asks with :protocol
// and answers the client's 101 itself, Sec-WebSocket-Accept included; the
// second turns the extended CONNECT back into an Upgrade.
func TestWebSocketToHTTP2Upstream(t *testing.T) {
	echoOrigin, upgrades := wsEchoOrigin(t)
	origin, _, _, _ := h2Strait(t, echoOrigin, "")
	addr, p := straitToH2c(t, origin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "ws://"+addr+"/chat", &websocket.DialOptions{
		HTTPClient: newClient(false), CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		t.Fatalf("dial through strait: %v\n%s", err, p.stderr.String())
	}
	defer ws.CloseNow()
	if resp.StatusCode != 101 {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	for _, msg := range []string{"hello", "to an HTTP/2 origin"} {
		if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := ws.Read(ctx)
		if err != nil || string(got) != "echo: "+msg {
			t.Fatalf("echo of %q: %q %v", msg, got, err)
		}
	}
	if err := ws.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("the close handshake: %v", err)
	}
	if upgrades.Load() != 1 {
		t.Errorf("the echo origin got %d requests, want the one upgrade", upgrades.Load())
	}
}

// wsEchoOrigin is an HTTP/1.1 WebSocket origin (coder/websocket) that
// answers each message with "echo: " and the message, and counts the
// upgrade requests it gets.
func wsEchoOrigin(t *testing.T) (string, *atomic.Int64) {
	upgrades := new(atomic.Int64)
	addr := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			upgrades.Add(1)
		}
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			return
		}
		defer ws.CloseNow()
		for {
			typ, msg, err := ws.Read(r.Context())
			if err != nil {
				return
			}
			if ws.Write(r.Context(), typ, append([]byte("echo: "), msg...)) != nil {
				return
			}
		}
	}))
	return addr, upgrades
}

// TestHTTP2UpstreamSilentDial: an HTTP/2 origin that accepts connections
// and never speaks: the requests that came together wait on one dial, and
// all get 504 at the connect timeout, not one timeout after another.
func TestHTTP2UpstreamSilentDial(t *testing.T) {
	var accepted atomic.Int64
	origin := startRawOrigin(t, func(nc net.Conn) {
		accepted.Add(1)
		io.Copy(io.Discard, nc)
	})
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, t.TempDir(), "h2up.yaml", fmt.Sprintf(`listeners:
  - {address: %s, routes: [{cluster: o}]}
clusters: [{name: o, protocol: h2c, endpoints: [%q]}]
timeouts: {connect: 500ms}
`, addr, origin), addr)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := newClient(false).Get("http://" + addr + "/")
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 504 {
				t.Errorf("request %d: %d, want 504", i, resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("20 requests waiting on a silent origin took %v; the connect timeout is 500ms", took)
	}
	if n := accepted.Load(); n > 4 {
		t.Errorf("the origin accepted %d connections for 20 requests at once, want them to wait on one dial", n)
	}
	t.Logf("%d connection(s) accepted", accepted.Load())
}
