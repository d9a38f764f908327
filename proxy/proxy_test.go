package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/proxytest"
	"github.com/straitproxy/strait/proxy"
)

// to returns Phases sending every request to addr.
func to(addr string) proxy.Phases {
	peer := &proxy.Peer{Addr: addr}
	return proxy.Phases{UpstreamPeer: func(*proxy.Session) (*proxy.Peer, error) { return peer, nil }}
}

// rawExchange writes raw to addr and returns the connection's reader for
// the responses.
func rawConn(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func readResponse(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp, string(body)
}

// echoHeaders answers with the request's method, target and fields.
func echoHeaders() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		b.WriteString(r.Method + " " + r.RequestURI + "\nHost: " + r.Host + "\n")
		r.Header.Write(&b)
		io.WriteString(w, b.String())
	})
}

func TestForwardingFields(t *testing.T) {
	origin := proxytest.Origin(t, echoHeaders())
	for _, tc := range []struct {
		name    string
		trusted bool
		in      string
		want    []string
		notWant []string
	}{
		{
			name:    "untrusted client: its forwarding fields are replaced",
			in:      "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n",
			want:    []string{"X-Forwarded-For: 127.0.0.1\r\n", "X-Forwarded-Proto: http\r\n", "X-Forwarded-Host: example.com\r\n", "X-Request-Id: "},
			notWant: []string{"1.2.3.4", "evil", "https"},
		},
		{
			name:    "trusted client: earlier hops are kept",
			trusted: true,
			in:      "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nX-Forwarded-Proto: https\r\n",
			want:    []string{"X-Forwarded-For: 1.2.3.4, 5.6.7.8, 127.0.0.1\r\n", "X-Forwarded-Proto: https\r\n"},
		},
		{
			name: "hop-by-hop fields and those Connection names are removed; Host is protected",
			in:   "Connection: keep-alive, X-Secret, Host, X-Forwarded-For\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: close\r\nX-Kept: yes\r\n",
			want: []string{"Host: example.com\n", "X-Kept: yes\r\n", "X-Forwarded-For: 127.0.0.1\r\n"},
			notWant: []string{"X-Secret", "Keep-Alive", "Te:", "Proxy-Connection",
				"Connection:"},
		},
		{
			// The parser's marks name every hop-by-hop field here.
			name:    "hop-by-hop fields without options are removed",
			in:      "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Kept: yes\r\n",
			want:    []string{"X-Kept: yes\r\n"},
			notWant: []string{"Keep-Alive", "Te:", "Connection:"},
		},
		{
			name: "an incoming request ID is kept",
			in:   "X-Request-Id: abc-123\r\n",
			want: []string{"X-Request-Id: abc-123\r\n"},
		},
	} {
		// With no request filter, one that only reads the fields (the
		// parser's marks of hop-by-hop fields are used), and one that
		// removes a field ahead of them (each name is looked at).
		for _, filter := range []string{"none", "reads", "removes"} {
			t.Run(tc.name+"/"+filter, func(t *testing.T) {
				o := proxy.Options{}
				if tc.trusted {
					o.Forwarding.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
				}
				p := to(origin)
				switch filter {
				case "reads":
					p.RequestFilter = func(s *proxy.Session) (bool, error) { s.Request.Header.Get("x-kept"); return false, nil }
				case "removes":
					p.RequestFilter = func(s *proxy.Session) (bool, error) { s.Request.Header.Del("X-Remove-Me"); return false, nil }
				}
				checkForwarding(t, p, o, tc.in, filter == "removes", tc.want, append(tc.notWant, "X-Remove-Me"))
			})
		}
	}
}

// checkForwarding sends a GET with the fields in (and, with removeMe, an
// X-Remove-Me field ahead of them) through p to an echoing origin, and
// checks what the origin received.
func checkForwarding(t *testing.T, p proxy.Phases, o proxy.Options, in string, removeMe bool, want, notWant []string) {
	t.Helper()
	_, addr := proxytest.Proxy(t, p, o)
	c, br := rawConn(t, addr)
	if removeMe {
		in = "X-Remove-Me: 1\r\n" + in
	}
	io.WriteString(c, "GET /p?q=1 HTTP/1.1\r\nHost: example.com\r\n"+in+"\r\n")
	resp, body := readResponse(t, br, "GET")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if !strings.HasPrefix(body, "GET /p?q=1\n") {
		t.Errorf("request line: %q", body)
	}
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("upstream request lacks %q:\n%s", w, body)
		}
	}
	for _, w := range notWant {
		if strings.Contains(body, w) {
			t.Errorf("upstream request has %q:\n%s", w, body)
		}
	}
}

func TestForwardedField(t *testing.T) {
	origin := proxytest.Origin(t, echoHeaders())
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{Forwarding: proxy.Forwarding{Forwarded: true}})
	c, br := rawConn(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n")
	_, body := readResponse(t, br, "GET")
	if want := "Forwarded: for=127.0.0.1;proto=http;host=\"example.com:8080\"\r\n"; !strings.Contains(body, want) {
		t.Errorf("want %q in:\n%s", want, body)
	}
}

func TestAbsoluteFormAuthorityWins(t *testing.T) {
	origin := proxytest.Origin(t, echoHeaders())
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
	c, br := rawConn(t, addr)
	io.WriteString(c, "GET http://right.example/x?y HTTP/1.1\r\nHost: wrong.example\r\n\r\n")
	_, body := readResponse(t, br, "GET")
	if !strings.HasPrefix(body, "GET /x?y\nHost: right.example\n") {
		t.Errorf("upstream saw:\n%s", body)
	}
}

// TestMalformedRequests checks that bad requests get the RFC's status and
// a closed connection, and never reach the upstream.
func TestMalformedRequests(t *testing.T) {
	var reached atomic.Int64
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
	srv, addr := proxytest.Proxy(t, to(origin), proxy.Options{Limits: proxy.Limits{MaxRequestBody: 10}})
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
		{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", 400},
		{"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405},
		{"body over limit", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n01234567890", 413},
		{"long line", "GET /" + strings.Repeat("a", 17<<10) + " HTTP/1.1\r\nHost: a\r\n\r\n", 414},
		{"too many fields", "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X: y\r\n", 101) + "\r\n", 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := rawConn(t, addr)
			io.WriteString(c, tc.req)
			resp, _ := readResponse(t, br, "GET")
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if !resp.Close {
				t.Errorf("response does not say Connection: close")
			}
			if n, err := br.Read(make([]byte, 1)); err == nil {
				t.Errorf("connection still open (read %d bytes)", n)
			}
		})
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("%d malformed requests reached the origin", n)
	}
	if n := srv.Counters().BadRequests.Load(); n < 4 {
		t.Errorf("BadRequests counter = %d", n)
	}
	if srv.Counters().HeadTooLarge.Load() != 1 || srv.Counters().URITooLong.Load() != 1 || srv.Counters().BodyTooLarge.Load() != 1 {
		t.Errorf("limit counters: 431 %d, 414 %d, 413 %d", srv.Counters().HeadTooLarge.Load(), srv.Counters().URITooLong.Load(), srv.Counters().BodyTooLarge.Load())
	}
}

func TestPipelinedAndKeepAlive(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.URL.Path+":"+string(body))
	}))
	srv, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
	c, br := rawConn(t, addr)
	io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"+
		"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"+
		"POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+
		"GET /4 HTTP/1.0\r\n\r\n")
	for _, want := range []string{"/1:", "/2:hello", "/3:abc", "/4:"} {
		_, body := readResponse(t, br, "GET")
		if body != want {
			t.Errorf("got %q, want %q", body, want)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("HTTP/1.0 request without keep-alive: connection not closed (%v)", err)
	}
	if d := srv.Counters().UpstreamDials.Load(); d != 1 {
		t.Errorf("upstream dials = %d, want 1 (the pool reuses one connection)", d)
	}
}

func TestChunkedBodiesAndTrailers(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.Write(body)
		w.(http.Flusher).Flush()
		w.Write([]byte("|trailer-in=" + r.Trailer.Get("X-In")))
		w.Header().Set("X-Sum", "42")
	}))
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
	c, br := rawConn(t, addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-In: t1\r\n\r\n")
	resp, body := readResponse(t, br, "POST")
	if body != "hello world|trailer-in=t1" {
		t.Errorf("body %q", body)
	}
	if resp.ContentLength != -1 || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("response framing: CL %d TE %v", resp.ContentLength, resp.TransferEncoding)
	}
	if got := resp.Trailer.Get("X-Sum"); got != "42" {
		t.Errorf("trailer X-Sum = %q", got)
	}
}

func TestLargeBodiesStream(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, r.Body)
	}))
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
	data := make([]byte, 8<<20)
	rand.Read(data)
	resp, err := proxytest.Client().Post("http://"+addr+"/", "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echo of 8 MiB: %d bytes back, equal %v, err %v", len(got), bytes.Equal(got, data), err)
	}
}

func TestExpectContinue(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Expect") != "" {
			t.Errorf("Expect reached the origin")
		}
		io.Copy(w, r.Body)
	}))
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
	c, br := rawConn(t, addr)
	io.WriteString(c, "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
	line, _ := br.ReadString('\n')
	if line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("first line %q, want 100 Continue before the body is sent", line)
	}
	br.ReadString('\n')
	io.WriteString(c, "data")
	_, body := readResponse(t, br, "PUT")
	if body != "data" {
		t.Errorf("body %q", body)
	}
}

func TestUpstreamErrors(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	slow := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	garbage := rawOrigin(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
	})

	for _, tc := range []struct {
		name   string
		addr   string
		status int
		side   proxy.Side
		kind   proxy.Kind
	}{
		{"refused", closed, 502, proxy.Upstream, proxy.KindConnect},
		{"slow", slow, 504, proxy.Upstream, proxy.KindTimeout},
		{"malformed response", garbage, 502, proxy.Upstream, proxy.KindProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := make(chan *proxy.Error, 1)
			var connectHook atomic.Int64
			p := to(tc.addr)
			p.FailToConnect = func(s *proxy.Session, peer *proxy.Peer, e *proxy.Error) *proxy.Error {
				connectHook.Add(1)
				return e
			}
			p.Logging = func(s *proxy.Session, e *proxy.Error) { logs <- e }
			_, addr := proxytest.Proxy(t, p, proxy.Options{Timeouts: proxy.Timeouts{ResponseHeader: 300 * time.Millisecond}})
			resp, err := proxytest.Client().Get("http://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			// Logging runs after the response has gone out.
			logged := <-logs
			if logged == nil || logged.Side != tc.side || logged.Kind != tc.kind {
				t.Errorf("logged error %v, want side %v kind %v", logged, tc.side, tc.kind)
			}
			if (tc.kind == proxy.KindConnect) != (connectHook.Load() > 0) {
				t.Errorf("FailToConnect called %d times", connectHook.Load())
			}
		})
	}
}

// acceptLoop listens on a free loopback port and runs handle on each
// connection, closing it after; it stops when the test ends.
func acceptLoop(t testing.TB, handle func(c net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// rawOrigin runs serve on each connection after reading one request head.
func rawOrigin(t *testing.T, serve func(net.Conn)) string {
	return acceptLoop(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			l, err := br.ReadString('\n')
			if err != nil || l == "\r\n" {
				break
			}
		}
		serve(c)
	})
}

// TestStalePooledConnection: an origin that closes each connection right
// after answering (without saying so) must not fail the next request. A
// POST is only sent on a pooled connection found open by a peek first; a
// GET skips the peek and is sent again if the connection was closed.
func TestStalePooledConnection(t *testing.T) {
	origin := rawOrigin(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	for _, method := range []string{"POST", "GET"} {
		t.Run(method, func(t *testing.T) {
			var retried atomic.Int64
			p := to(origin)
			p.Logging = func(s *proxy.Session, e *proxy.Error) {
				if s.Stats.Attempts > 1 {
					retried.Add(1)
				}
			}
			srv, addr := proxytest.Proxy(t, p, proxy.Options{})
			client := proxytest.Client()
			for i := range 20 {
				req, _ := http.NewRequest(method, "http://"+addr+"/", nil)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != "ok" {
					t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
				}
				time.Sleep(2 * time.Millisecond) // let the close arrive
			}
			stale := srv.Counters().UpstreamStale.Load()
			if method == "POST" && stale == 0 {
				t.Errorf("no stale connection was detected before reusing it for a POST")
			}
			if method == "GET" && stale+retried.Load() == 0 {
				t.Errorf("GETs never met a closed pooled connection: the test proves nothing")
			}
		})
	}
}

// TestClientGoneCancelsUpstream: a client that hangs up while the upstream
// is slow frees the upstream request.
func TestClientGoneCancelsUpstream(t *testing.T) {
	cancelled := make(chan struct{})
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(10 * time.Second):
		}
	}))
	var logged atomic.Pointer[proxy.Error]
	p := to(origin)
	p.Logging = func(s *proxy.Session, e *proxy.Error) { logged.Store(e) }
	_, addr := proxytest.Proxy(t, p, proxy.Options{})
	c, _ := rawConn(t, addr)
	io.WriteString(c, "GET /long-poll HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(200 * time.Millisecond)
	c.Close()
	select {
	case <-cancelled:
	case <-time.After(3 * time.Second):
		t.Fatal("the upstream request was not cancelled after the client left")
	}
	deadline := time.Now().Add(2 * time.Second)
	for logged.Load() == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if e := logged.Load(); e == nil || e.Kind != proxy.KindDownstreamGone {
		t.Errorf("logged %v, want a downstream_gone error", e)
	}
}

func TestUpgradeNotAccepted(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "upgrade="+r.Header.Get("Upgrade")+" connection="+r.Header.Get("Connection"))
	}))
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
	c, br := rawConn(t, addr)
	// An upgrade the origin declines leaves the connection in HTTP mode.
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	_, body := readResponse(t, br, "GET")
	if body != "upgrade=websocket connection=upgrade" {
		t.Errorf("first: %q", body)
	}
	// h2c upgrades are never tunnelled: the field is dropped.
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
	_, body = readResponse(t, br, "GET")
	if body != "upgrade= connection=" {
		t.Errorf("h2c: %q", body)
	}
}

func TestUpgradeTunnel(t *testing.T) {
	origin := rawOrigin(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhi")
		io.Copy(c, c) // echo until the client half-closes
	})
	// Protocols other than WebSocket are tunnelled only when listed.
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{Upgrades: []string{"echo"}})
	c, br := rawConn(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	io.WriteString(c, "ping")
	c.(*net.TCPConn).CloseWrite()
	rest, _ := io.ReadAll(br)
	if string(rest) != "hiping" {
		t.Errorf("tunnel carried %q, want %q", rest, "hiping")
	}
}

func TestFiltersAndHooks(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Origin", "1")
		io.WriteString(w, "got:"+string(body)+":"+r.Header.Get("X-Added"))
	}))
	var logs []string
	var mu sync.Mutex
	p := to(origin)
	p.NewCtx = func() any { return new(int) }
	p.RequestFilter = func(s *proxy.Session) (bool, error) {
		*s.Ctx.(*int) = 7
		return false, nil
	}
	p.UpstreamRequestFilter = func(s *proxy.Session, r *proxy.Request) error {
		r.Header.Set("X-Added", "yes")
		return nil
	}
	p.RequestBodyFilter = func(s *proxy.Session, data []byte, end bool) ([]byte, error) {
		return bytes.ToUpper(data), nil
	}
	p.ResponseFilter = func(s *proxy.Session, r *proxy.Response) error {
		r.Header.Del("X-Origin")
		r.Header.Set("X-Ctx", "7")
		return nil
	}
	p.ResponseBodyFilter = func(s *proxy.Session, data []byte, end bool) ([]byte, error) {
		if end {
			return append(data, "!"...), nil
		}
		return data, nil
	}
	p.Logging = func(s *proxy.Session, e *proxy.Error) {
		mu.Lock()
		defer mu.Unlock()
		entry := "ok"
		if e != nil {
			entry = e.Error()
		}
		logs = append(logs, entry)
	}
	_, addr := proxytest.Proxy(t, p, proxy.Options{})
	resp, err := proxytest.Client().Post("http://"+addr+"/", "text/plain", strings.NewReader("abc"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "got:ABC:yes!" {
		t.Errorf("body %q", body)
	}
	if resp.Header.Get("X-Origin") != "" || resp.Header.Get("X-Ctx") != "7" {
		t.Errorf("response filter not applied: %v", resp.Header)
	}
	// Logging runs after the response has gone out: wait for it.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		n := len(logs)
		mu.Unlock()
		if n > 0 {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logs) != 1 || logs[0] != "ok" {
		t.Errorf("Logging ran %d times: %v", len(logs), logs)
	}
}

func TestGracefulShutdown(t *testing.T) {
	release := make(chan struct{})
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "done")
	}))
	srv, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
	// An idle keep-alive connection, and one with a request in flight.
	idle, idleBR := rawConn(t, addr)
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	go func() { time.Sleep(100 * time.Millisecond); release <- struct{}{} }()
	readResponse(t, idleBR, "GET")
	busy, busyBR := rawConn(t, addr)
	io.WriteString(busy, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(100 * time.Millisecond)

	done := make(chan error)
	go func() { done <- srv.Shutdown(context.Background()) }()
	if _, err := idleBR.ReadByte(); err == nil {
		t.Errorf("idle connection not closed on shutdown")
	}
	close(release)
	resp, body := readResponse(t, busyBR, "GET")
	if body != "done" || !resp.Close {
		t.Errorf("in-flight request: %q close=%v", body, resp.Close)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

func TestSlowReaderIsCutOff(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 32<<20)
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(big) }))
	logged := make(chan *proxy.Error, 1)
	p := to(origin)
	p.Logging = func(s *proxy.Session, e *proxy.Error) { logged <- e }
	_, addr := proxytest.Proxy(t, p, proxy.Options{Timeouts: proxy.Timeouts{Write: 300 * time.Millisecond}})
	// A connection that just wrote a response and closed returns its
	// request state to the pool with fresh deadline bookkeeping: the next
	// connection to take that state must still set its own deadline.
	warm, warmBR := rawConn(t, addr)
	io.WriteString(warm, "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
	readResponse(t, warmBR, "HEAD")
	<-logged
	warm.Close()
	time.Sleep(50 * time.Millisecond)
	c, _ := rawConn(t, addr)
	c.(*net.TCPConn).SetReadBuffer(4 << 10)
	start := time.Now()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	// Read nothing: strait's writes stall, then time out.
	select {
	case e := <-logged:
		if e == nil || e.Kind != proxy.KindDownstreamGone || !errors.Is(e, os.ErrDeadlineExceeded) {
			t.Errorf("logged %v, want a downstream write timeout", e)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("cut off after %v, want about the 300ms write timeout", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a client that stopped reading was not cut off")
	}
}

func TestMaxRequestsPerConn(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{Limits: proxy.Limits{MaxRequestsPerConn: 2}})
	c, br := rawConn(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if r, _ := readResponse(t, br, "GET"); r.Close {
		t.Errorf("first response closes the connection")
	}
	if r, _ := readResponse(t, br, "GET"); !r.Close {
		t.Errorf("second response does not say Connection: close")
	}
}

// TestGoroutinesReused: one connection after another, each with one
// request, is served on the goroutine the last one left, not a new one.
func TestGoroutinesReused(t *testing.T) {
	// This origin starts no goroutine per request (net/http's does).
	origin := rawOriginKeepAlive(t, "ok")
	start := runtime.NumGoroutine()
	srv, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
	created := func() uint64 {
		m := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
		metrics.Read(m)
		return m[0].Value.Uint64()
	}
	const n = 50
	var before uint64
	for i := range n + 1 {
		if i == 1 {
			before = created() // after the first, which dials the origin
		}
		c, br := rawConn(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		if _, body := readResponse(t, br, "GET"); body != "ok" {
			t.Fatalf("conn %d: %q", i, body)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("conn %d: %v, want EOF", i, err)
		}
		c.Close()
		// The proxy closed its end before its goroutine is free: give it
		// time to be (a few may still be new on a loaded machine).
		time.Sleep(2 * time.Millisecond)
	}
	if got := created() - before; got > n/5 {
		t.Errorf("%d connections started %d goroutines; want most served on reused ones", n, got)
	}

	// Ten at once leave ten idle goroutines, which Close ends.
	conns := make([]*bufio.Reader, 10)
	for i := range conns {
		c, br := rawConn(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		conns[i] = br
	}
	for _, br := range conns {
		readResponse(t, br, "GET")
	}
	srv.Close()
	deadline := time.Now().Add(3 * time.Second)
	// The origin's goroutine for strait's pooled connection may outlive
	// Close by a moment; nothing of strait's may.
	for runtime.NumGoroutine() > start+1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after Close; %d before the proxy started", runtime.NumGoroutine(), start)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestParkedConnections: idle keep-alive connections hold no goroutine,
// serve their next request, and still meet the idle timeout.
func TestParkedConnections(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	// The idle timeout leaves room for a loaded machine to make the first
	// two rounds of requests before it.
	srv, addr := proxytest.Proxy(t, to(origin), proxy.Options{Timeouts: proxy.Timeouts{Idle: 6 * time.Second}})
	// More connections than the idle goroutines kept for new ones (64).
	const n = 200
	before := runtime.NumGoroutine()
	conns := make([]net.Conn, n)
	readers := make([]*bufio.Reader, n)
	ask := func(i int) {
		io.WriteString(conns[i], "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if _, body := readResponse(t, readers[i], "GET"); body != "ok" {
			t.Fatalf("conn %d: %q", i, body)
		}
	}
	for i := range conns {
		conns[i], readers[i] = rawConn(t, addr)
		ask(i)
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
		t.Errorf("%d idle connections hold %d more goroutines; want them parked without one", n, extra)
	}
	for i := range conns {
		ask(i) // a parked connection serves its next request
	}
	if srv.Counters().ConnsOpen.Load() != n {
		t.Fatalf("open connections: %d", srv.Counters().ConnsOpen.Load())
	}
	// After the idle timeout (and a parker sweep), every connection closes.
	for i := range conns {
		conns[i].SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := readers[i].ReadByte(); err != io.EOF {
			t.Fatalf("conn %d: %v, want EOF after the idle timeout", i, err)
		}
	}
}

// TestRequestWhileBusy: a request that arrives while the connection is
// still busy with the previous one is served at once, though it came when
// the connection was not waiting for it.
func TestRequestWhileBusy(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(10 * time.Millisecond)
		}
		io.WriteString(w, r.URL.Path)
	}))
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
	c, br := rawConn(t, addr)
	for i := range 20 {
		// The first request makes the connection wait for the next on the
		// parker.
		io.WriteString(c, "GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
		readResponse(t, br, "GET")
		io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
		time.Sleep(2 * time.Millisecond) // the origin is still sleeping
		io.WriteString(c, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		for _, want := range []string{"/slow", "/next"} {
			if _, body := readResponse(t, br, "GET"); body != want {
				t.Fatalf("round %d: got %q, want %q", i, body, want)
			}
		}
	}
}

// TestCloseEndsConnections: Close ends idle, reading and busy connections
// at once for their clients, and each connection's goroutine then closes
// its socket (Close shuts sockets down rather than closing them under a
// goroutine that may be using them).
func TestCloseEndsConnections(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(300 * time.Millisecond)
		}
		io.WriteString(w, "ok")
	}))
	srv, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
	idle, idleBR := rawConn(t, addr)
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	readResponse(t, idleBR, "GET")
	reading, readingBR := rawConn(t, addr)
	io.WriteString(reading, "GET / HTTP/1.1\r\nHost: a\r\n")
	busy, busyBR := rawConn(t, addr)
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(50 * time.Millisecond) // the head reaches the origin
	if n := srv.Counters().ConnsOpen.Load(); n != 3 {
		t.Fatalf("open connections before Close: %d", n)
	}
	start := time.Now()
	srv.Close()
	for name, br := range map[string]*bufio.Reader{"idle": idleBR, "reading": readingBR, "busy": busyBR} {
		if b, err := br.ReadByte(); err == nil {
			t.Errorf("%s connection: read %q after Close, want it closed", name, b)
		}
	}
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("clients saw the end %v after Close; want at once (before the slow origin answers)", d)
	}
	for srv.Counters().ConnsOpen.Load() != 0 {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%d connections still open 5 s after Close", srv.Counters().ConnsOpen.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestExpectContinueAnsweredEarly: a request expecting 100-continue that a
// hook answers is not waited on for its body: the connection closes.
func TestExpectContinueAnsweredEarly(t *testing.T) {
	p := to("127.0.0.1:1")
	p.RequestFilter = func(s *proxy.Session) (bool, error) {
		return true, s.Respond(401, []byte("no\n"))
	}
	_, addr := proxytest.Proxy(t, p, proxy.Options{})
	c, br := rawConn(t, addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
	start := time.Now()
	resp, _ := readResponse(t, br, "POST")
	if resp.StatusCode != 401 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("connection not closed: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v: strait waited for a body the client was not sending", d)
	}
}

// TestRetryOnlyWhenSafe: the origin closes a reused connection on the
// second request without answering. An idempotent request is sent again on
// a new connection; a POST is not (it may have been acted on).
func TestRetryOnlyWhenSafe(t *testing.T) {
	var received atomic.Int64
	origin := acceptLoop(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for n := 0; ; n++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			received.Add(1)
			if n == 1 {
				return // the second request on a connection: hang up
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	for _, tc := range []struct {
		method   string
		want     int
		requests int64
	}{
		{"GET", 200, 3},
		{"POST", 502, 2},
	} {
		t.Run(tc.method, func(t *testing.T) {
			received.Store(0)
			srv, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
			c, br := rawConn(t, addr)
			for i, want := range []int{200, tc.want} {
				io.WriteString(c, tc.method+" / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
				resp, _ := readResponse(t, br, tc.method)
				if resp.StatusCode != want {
					t.Fatalf("request %d: status %d, want %d", i, resp.StatusCode, want)
				}
				time.Sleep(20 * time.Millisecond) // the pooled connection is idle, not closed
			}
			if n := received.Load(); n != tc.requests {
				t.Errorf("origin received %d requests, want %d", n, tc.requests)
			}
			if n := srv.Counters().UpstreamStale.Load(); n != 0 {
				t.Errorf("%d pooled connections wrongly found closed", n)
			}
		})
	}
}

// TestOptionsAsteriskForwarded: OPTIONS * reaches the origin as is.
func TestOptionsAsteriskForwarded(t *testing.T) {
	lines := make(chan string, 1)
	origin := acceptLoop(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		line, _ := br.ReadString('\n')
		lines <- line
		for {
			if l, err := br.ReadString('\n'); err != nil || l == "\r\n" {
				break
			}
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nAllow: GET, OPTIONS\r\nContent-Length: 0\r\n\r\n")
	})
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
	c, br := rawConn(t, addr)
	io.WriteString(c, "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, _ := readResponse(t, br, "OPTIONS")
	if got := <-lines; got != "OPTIONS * HTTP/1.1\r\n" {
		t.Errorf("origin got request line %q", got)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Allow") != "GET, OPTIONS" {
		t.Errorf("response %d %v", resp.StatusCode, resp.Header)
	}
}

// TestMaxConns: a listener at its connection limit answers new
// connections with 503 and Retry-After, and counts them.
func TestMaxConns(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	srv, addr := proxytest.Proxy(t, to(origin), proxy.Options{Limits: proxy.Limits{MaxConns: 2}})
	for range 2 {
		c, br := rawConn(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if _, body := readResponse(t, br, "GET"); body != "ok" {
			t.Fatalf("within the limit: %q", body)
		}
	}
	c, br := rawConn(t, addr)
	resp, _ := readResponse(t, br, "GET")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !resp.Close {
		t.Errorf("over the limit: %d, Retry-After %q, close %v", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Close)
	}
	c.Close()
	if n := srv.Counters().ConnsRejected.Load(); n != 1 {
		t.Errorf("ConnsRejected = %d, want 1", n)
	}
}

// TestMaxConnsPerClient: a client address at its connection limit gets
// 503 for a new connection, and may connect again once one closes.
func TestMaxConnsPerClient(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	srv, addr := proxytest.Proxy(t, to(origin), proxy.Options{Limits: proxy.Limits{MaxConnsPerClient: 2}})
	get := func() (net.Conn, int) {
		c, br := rawConn(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, _ := readResponse(t, br, "GET")
		return c, resp.StatusCode
	}
	first, s1 := get()
	_, s2 := get()
	if s1 != 200 || s2 != 200 {
		t.Fatalf("within the limit: %d, %d", s1, s2)
	}
	if _, s := get(); s != 503 {
		t.Fatalf("a third connection: %d, want 503", s)
	}
	first.Close()
	if !waitFor(2*time.Second, func() bool { _, s := get(); return s == 200 }) {
		t.Fatal("no connection was taken after one closed")
	}
	if n := srv.Counters().ConnsPerClientRejected.Load(); n < 1 {
		t.Errorf("ConnsPerClientRejected = %d", n)
	}
}

// TestHeadTimeout: a head that stops coming gets 408 after the head
// timeout, counted from its first byte, however it is split.
func TestHeadTimeout(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv, addr := proxytest.Proxy(t, to(origin), proxy.Options{Timeouts: proxy.Timeouts{Header: 300 * time.Millisecond}})
	for _, parts := range [][]string{
		{"GET / HTTP/1.1\r\n"},                          // one read, then nothing
		{"GET / HT", "TP/1.1\r\nHost: a\r\n", "X-Slow"}, // trickled
	} {
		c, br := rawConn(t, addr)
		start := time.Now()
		for _, p := range parts {
			io.WriteString(c, p)
			time.Sleep(50 * time.Millisecond)
		}
		resp, _ := readResponse(t, br, "GET")
		if d := time.Since(start); resp.StatusCode != 408 || d > 2*time.Second {
			t.Errorf("%q: status %d after %v, want 408 after about 300ms", parts, resp.StatusCode, d)
		}
	}
	if n := srv.Counters().HeaderTimeouts.Load(); n != 2 {
		t.Errorf("HeaderTimeouts = %d, want 2", n)
	}
}
