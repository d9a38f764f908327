package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/proxytest"
	"github.com/straitproxy/strait/proxy"
)

// The engine under failure: origins that answer early, stop reading, reset,
// close, delay or flood; clients that leave. After each, what the origin
// received is checked, and that the next request is served whole.

// logged collects the errors the Logging phase reports, by request path.
type logged struct {
	mu   sync.Mutex
	errs map[string]*proxy.Error
	ids  map[string]string
	n    int
}

func (l *logged) hook(s *proxy.Session, e *proxy.Error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.errs == nil {
		l.errs, l.ids = make(map[string]*proxy.Error), make(map[string]string)
	}
	p := string(s.Request.Path)
	l.errs[p] = e
	l.ids[p] = string(s.RequestID)
	l.n++
}

func (l *logged) get(path string) (*proxy.Error, bool) {
	var e *proxy.Error
	ok := waitFor(2*time.Second, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		var found bool
		e, found = l.errs[path]
		return found
	})
	return e, ok
}

// TestRequestBodyNotFullySent: a pooled connection goes back to the pool
// only when the whole request went out. An origin answers a POST at once;
// the request body then fails to reach it (its write times out, or a body
// filter fails on the last piece). The next request must not be written
// into that connection behind the unfinished body.
func TestRequestBodyNotFullySent(t *testing.T) {
	big := strings.Repeat("x", 16<<20)
	for _, tc := range []struct {
		name   string
		filter func(s *proxy.Session, data []byte, end bool) ([]byte, error)
		// stopReading: the origin stops reading once it has answered;
		// else it reads on, as net/http's server does.
		stopReading bool
		wantErr     proxy.Kind
	}{
		{
			name: "upstream write times out on the last piece",
			filter: func(s *proxy.Session, data []byte, end bool) ([]byte, error) {
				if end {
					return append(data, big...), nil // more than the socket buffers hold
				}
				return data, nil
			},
			stopReading: true,
		},
		{
			// The filter fails on the last piece once the early response
			// has been read from the origin (see the response body filter
			// below): the response stands, the request failed.
			name: "body filter fails on the last piece",
			filter: func(s *proxy.Session, data []byte, end bool) ([]byte, error) {
				if end {
					g := s.Ctx.(*gates)
					close(g.inFilter)
					<-g.relayed
					return nil, errors.New("filter refuses the end")
				}
				return data, nil
			},
			wantErr: proxy.KindFilter,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOrigin(t, func(oc *originConn, req *http.Request) bool {
				if req.URL.Path != "/early" {
					return serveOK(oc, req)
				}
				oc.recordHead(req)
				oc.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
				if tc.stopReading {
					time.Sleep(10 * time.Second) // neither reads nor closes
					return false
				}
				if s := oc.readBody(req); s.err != nil {
					return false
				}
				return true
			})
			var l logged
			p := to(o.addr)
			p.NewCtx = func() any { return &gates{make(chan struct{}), make(chan struct{})} }
			if tc.wantErr != 0 {
				p.ResponseBodyFilter = func(s *proxy.Session, data []byte, end bool) ([]byte, error) {
					if end && s.Request.PathIs("/early") {
						g := s.Ctx.(*gates)
						<-g.inFilter
						close(g.relayed)
					}
					return data, nil
				}
			}
			p.RequestBodyFilter = tc.filter
			p.Logging = l.hook
			// Streamed (not buffered), so that the head goes first.
			_, addr := proxytest.Proxy(t, p, proxy.Options{Timeouts: proxy.Timeouts{
				UpstreamWrite: 300 * time.Millisecond, ResponseHeader: 3 * time.Second,
			}, Buffering: proxy.Buffering{Max: -1}})
			c, br := rawConn(t, addr)
			io.WriteString(c, "POST /early HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
			time.Sleep(20 * time.Millisecond) // the head goes upstream, and the origin answers
			io.WriteString(c, "0\r\n\r\n")
			if resp, body := readResponse(t, br, "POST"); resp.StatusCode != 200 || body != "early" {
				t.Errorf("POST: %d %q", resp.StatusCode, body)
			}
			e, _ := l.get("/early")
			if tc.wantErr != 0 && (e == nil || e.Kind != tc.wantErr) {
				t.Errorf("POST logged %v, want a %v error", e, tc.wantErr)
			}
			checkNext(t, addr, o, "/early")
		})
	}
}

// gates orders a request body filter and a response body filter.
type gates struct{ inFilter, relayed chan struct{} }

// TestBodyFilterErrorIsImmediate: a request body filter that fails ends the
// request at once with 500, not after the response-head timeout.
func TestBodyFilterErrorIsImmediate(t *testing.T) {
	o := newOrigin(t, nil) // reads the whole body before answering
	p := to(o.addr)
	p.RequestBodyFilter = func(s *proxy.Session, data []byte, end bool) ([]byte, error) {
		return nil, errors.New("no")
	}
	var l logged
	p.Logging = l.hook
	_, addr := proxytest.Proxy(t, p, proxy.Options{Timeouts: proxy.Timeouts{ResponseHeader: 5 * time.Second}})
	c, br := rawConn(t, addr)
	start := time.Now()
	io.WriteString(c, "POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
	resp, _ := readResponse(t, br, "POST")
	if d := time.Since(start); resp.StatusCode != 500 || d > 2*time.Second {
		t.Errorf("status %d after %v, want 500 at once", resp.StatusCode, d)
	}
	if e, _ := l.get("/f"); e == nil || e.Kind != proxy.KindFilter {
		t.Errorf("logged %v, want a filter error", e)
	}
	checkNext(t, addr, o, "/f")
}

// TestClientLeavesAtOnce: a client that sends a request and closes at once
// cancels the upstream request soon after, every time.
func TestClientLeavesAtOnce(t *testing.T) {
	const n = 40
	var cancelled atomic.Int64
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			cancelled.Add(1)
		case <-time.After(5 * time.Second):
		}
	}))
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
	start := time.Now()
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /%d HTTP/1.1\r\nHost: a\r\n\r\n", i)
		c.Close()
	}
	waitFor(3*time.Second, func() bool { return cancelled.Load() == n })
	if got := cancelled.Load(); got != n {
		t.Errorf("%d of %d upstream requests were cancelled within %v of their clients leaving", got, n, time.Since(start))
	}
}

// TestRetryWithLateBody: a PUT whose body comes late, sent on a pooled
// connection the origin has closed, is sent again on a new connection: the
// client is not blamed (408) and the origin gets the whole body.
func TestRetryWithLateBody(t *testing.T) {
	o := newOrigin(t, func(oc *originConn, req *http.Request) bool {
		serveOK(oc, req)
		return false // closes after each answer, without saying so
	})
	var l logged
	p := to(o.addr)
	p.Logging = l.hook
	_, addr := proxytest.Proxy(t, p, proxy.Options{})
	c, br := rawConn(t, addr)
	for i := range 10 {
		io.WriteString(c, "GET /warm HTTP/1.1\r\nHost: a\r\n\r\n")
		readResponse(t, br, "GET")
		time.Sleep(20 * time.Millisecond) // the origin's close arrives
		path := fmt.Sprintf("/put%d", i)
		io.WriteString(c, "PUT "+path+" HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
		time.Sleep(50 * time.Millisecond)
		io.WriteString(c, "hello")
		resp, body := readResponse(t, br, "PUT")
		if resp.StatusCode != 200 || body != path {
			e, _ := l.get(path)
			t.Fatalf("PUT %d: %d %q (logged %v)", i, resp.StatusCode, body, e)
		}
	}
	for _, s := range o.requests() {
		if strings.HasPrefix(s.path, "/put") && (s.err != nil || s.body != "hello") {
			t.Errorf("origin got %s %s with body %q, err %v", s.method, s.path, s.body, s.err)
		}
	}
}

// TestUpgradeLate101KeepsFirstBytes: bytes a client sends before a late
// 101 all reach the origin through the tunnel.
func TestUpgradeLate101KeepsFirstBytes(t *testing.T) {
	origin := rawOrigin(t, func(c net.Conn) {
		time.Sleep(200 * time.Millisecond)
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		io.Copy(c, c)
	})
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
	c, br := rawConn(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
	time.Sleep(80 * time.Millisecond)
	io.WriteString(c, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "hello" {
		t.Errorf("echoed %q (%v), want %q", got, err, "hello")
	}
}

// TestBadRequestAfterHead: a malformed request pipelined behind a HEAD gets
// a 400 whose body matches its Content-Length.
func TestBadRequestAfterHead(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
	c, br := rawConn(t, addr)
	io.WriteString(c, "HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n")
	if resp, _ := readResponse(t, br, "HEAD"); resp.StatusCode != 200 {
		t.Fatalf("HEAD: %d", resp.StatusCode)
	}
	resp, body := readResponse(t, br, "GET")
	if resp.StatusCode != 400 || int64(len(body)) != resp.ContentLength || len(body) == 0 {
		t.Errorf("400 after HEAD: status %d, Content-Length %d, body %q", resp.StatusCode, resp.ContentLength, body)
	}
}

// TestInterimResponses: 1xx responses reach the client without their
// hop-by-hop fields; an origin that floods them is cut off with 502, and
// one that sends them slowly still meets the response-head timeout.
func TestInterimResponses(t *testing.T) {
	t.Run("hop-by-hop fields removed", func(t *testing.T) {
		origin := rawOrigin(t, func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nConnection: X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nLink: </a.css>; rel=preload\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		})
		_, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
		c, br := rawConn(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		var interim strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			interim.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		got := interim.String()
		if !strings.HasPrefix(got, "HTTP/1.1 103") || !strings.Contains(got, "Link: </a.css>") ||
			strings.Contains(got, "X-Secret") || strings.Contains(got, "Connection") || strings.Contains(got, "Keep-Alive") {
			t.Errorf("interim response relayed as:\n%s", got)
		}
		if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != "ok" {
			t.Errorf("final: %d %q", resp.StatusCode, body)
		}
	})
	for _, tc := range []struct {
		name   string
		every  time.Duration
		status int
	}{
		{"flood", 0, 502},
		{"slow", 100 * time.Millisecond, 504},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin := rawOrigin(t, func(c net.Conn) {
				for {
					if _, err := io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"); err != nil {
						return
					}
					if tc.every > 0 {
						time.Sleep(tc.every)
					}
				}
			})
			_, addr := proxytest.Proxy(t, to(origin), proxy.Options{Timeouts: proxy.Timeouts{ResponseHeader: 500 * time.Millisecond}})
			c, br := rawConn(t, addr)
			start := time.Now()
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			var resp *http.Response
			for {
				r, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("after %v: %v", time.Since(start), err)
				}
				io.Copy(io.Discard, r.Body)
				if r.StatusCode >= 200 {
					resp = r
					break
				}
			}
			if d := time.Since(start); resp.StatusCode != tc.status || d > 2*time.Second {
				t.Errorf("status %d after %v, want %d within the 500ms head timeout", resp.StatusCode, d, tc.status)
			}
		})
	}
}

// TestSessionContext: a request's context ends when the request does, and
// when its client goes away while it waits for the upstream.
func TestSessionContext(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	}))
	ctxs := make(chan context.Context, 2)
	p := to(origin)
	p.UpstreamPeer = func(s *proxy.Session) (*proxy.Peer, error) {
		ctxs <- s.Context()
		return &proxy.Peer{Addr: origin}, nil
	}
	_, addr := proxytest.Proxy(t, p, proxy.Options{})

	c, br := rawConn(t, addr)
	io.WriteString(c, "GET /fast HTTP/1.1\r\nHost: a\r\n\r\n")
	readResponse(t, br, "GET")
	ctx := <-ctxs
	if !waitFor(2*time.Second, func() bool { return ctx.Err() != nil }) {
		t.Errorf("the context of a finished request was not cancelled")
	}

	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	ctx = <-ctxs
	time.Sleep(50 * time.Millisecond)
	if ctx.Err() != nil {
		t.Fatalf("the context of a request in flight is done: %v", ctx.Err())
	}
	c.Close()
	select {
	case <-ctx.Done():
		if !errors.Is(context.Cause(ctx), proxy.ErrClientGone) {
			t.Errorf("cause %v, want ErrClientGone", context.Cause(ctx))
		}
	case <-time.After(2 * time.Second):
		t.Errorf("the context was not cancelled when the client left")
	}
}

// TestParkedAfterSlowRequest: connections that made a slow request (which
// starts watching the client) hold no goroutine once they are idle.
func TestParkedAfterSlowRequest(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(40 * time.Millisecond)
		io.WriteString(w, "ok")
	}))
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
	const n = 200
	var wg sync.WaitGroup
	for range n {
		c, br := rawConn(t, addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			if _, err := http.ReadResponse(br, nil); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// Once they park, none of them has a goroutine: no watcher, and none
	// waiting in serve.
	var stacks string
	ok := waitFor(3*time.Second, func() bool {
		buf := make([]byte, 4<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		return strings.Count(stacks, "proxy.(*conn).watch(") == 0 && strings.Count(stacks, "proxy.(*conn).serve(") == 0
	})
	if !ok {
		t.Errorf("%d idle connections hold %d watchers and %d goroutines in serve:\n%s", n,
			strings.Count(stacks, "proxy.(*conn).watch("), strings.Count(stacks, "proxy.(*conn).serve("), stacks)
	}
}

// TestTunnelsEndOnClose: Close ends upgraded tunnels at once, and Shutdown
// ends them when its grace period does, even with an origin that keeps its
// side open.
func TestTunnelsEndOnClose(t *testing.T) {
	for _, how := range []string{"Close", "Shutdown"} {
		t.Run(how, func(t *testing.T) {
			originGone := make(chan struct{})
			var conns atomic.Int32
			origin := rawOrigin(t, func(c net.Conn) {
				if n := conns.Add(1); n > 1 {
					// Not strait's (it sends one request): say so rather
					// than close originGone twice.
					t.Errorf("the origin got connection %d from %v", n, c.RemoteAddr())
					return
				}
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
				io.Copy(io.Discard, c) // ignores the half-close, never closes first
				close(originGone)
			})
			srv, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
			c, br := rawConn(t, addr)
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
			if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
				t.Fatalf("%v %v", resp, err)
			}
			start := time.Now()
			if how == "Close" {
				srv.Close()
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer cancel()
				srv.Shutdown(ctx)
			}
			select {
			case <-originGone:
			case <-time.After(3 * time.Second):
				t.Fatalf("the tunnel's upstream side is still open 3s after %s", how)
			}
			if _, err := br.ReadByte(); err == nil {
				t.Errorf("the client side of the tunnel is still open")
			}
			if !waitFor(2*time.Second, func() bool { return srv.Counters().ConnsOpen.Load() == 0 }) {
				t.Errorf("%d connections open after %s", srv.Counters().ConnsOpen.Load(), how)
			}
			t.Logf("tunnel ended %v after %s", time.Since(start), how)
		})
	}
}

// TestFiltersCannotBreakFraming: framing is strait's. Fields a filter adds
// that frame the message are dropped, and a status a filter sets decides
// whether a body follows.
func TestFiltersCannotBreakFraming(t *testing.T) {
	t.Run("upstream request filter adds Content-Length", func(t *testing.T) {
		o := newOrigin(t, nil)
		p := to(o.addr)
		p.UpstreamRequestFilter = func(s *proxy.Session, r *proxy.Request) error {
			r.Header.Set("Content-Length", "10")
			r.Header.Add("Transfer-Encoding", "chunked")
			return nil
		}
		_, addr := proxytest.Proxy(t, p, proxy.Options{Timeouts: proxy.Timeouts{ResponseHeader: 2 * time.Second}})
		c, br := rawConn(t, addr)
		io.WriteString(c, "GET /get HTTP/1.1\r\nHost: a\r\n\r\nPOST /post HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
		for _, want := range []string{"/get", "/post"} {
			if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != want {
				t.Errorf("%s: %d %q", want, resp.StatusCode, body)
			}
		}
		for _, s := range o.requests() {
			if s.err != nil || (s.path == "/post" && s.body != "hello") {
				t.Errorf("origin got %s %q, err %v", s.path, s.body, s.err)
			}
		}
		checkNext(t, addr, o)
	})
	t.Run("response filter sets 204 and adds Content-Length", func(t *testing.T) {
		o := newOrigin(t, nil)
		p := to(o.addr)
		p.ResponseFilter = func(s *proxy.Session, r *proxy.Response) error {
			if bytes.Equal(s.Request.Path, []byte("/204")) {
				r.Status = 204
			}
			r.Header.Set("Content-Length", "999")
			return nil
		}
		_, addr := proxytest.Proxy(t, p, proxy.Options{Timeouts: proxy.Timeouts{ResponseHeader: 2 * time.Second}})
		c, br := rawConn(t, addr)
		io.WriteString(c, "GET /204 HTTP/1.1\r\nHost: a\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		resp, body := readResponse(t, br, "GET")
		if resp.StatusCode != 204 || body != "" || resp.Header.Get("Content-Length") != "" {
			t.Errorf("204: %d %q %v", resp.StatusCode, body, resp.Header)
		}
		resp, body = readResponse(t, br, "GET")
		if resp.StatusCode != 200 || body != "/after" {
			t.Errorf("after the 204: %d %q", resp.StatusCode, body)
		}
		checkNext(t, addr, o)
	})
	t.Run("HEAD and 304 keep the origin's Content-Length", func(t *testing.T) {
		origin := acceptLoop(t, func(c net.Conn) {
			br := bufio.NewReader(c)
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				if req.URL.Path == "/304" {
					io.WriteString(c, "HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\nETag: \"x\"\r\n\r\n")
				} else {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
				}
			}
		})
		_, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
		c, br := rawConn(t, addr)
		io.WriteString(c, "HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /304 HTTP/1.1\r\nHost: a\r\n\r\n")
		for _, m := range []string{"HEAD", "GET"} {
			resp, _ := readResponse(t, br, m)
			if resp.Header.Get("Content-Length") != "1234" {
				t.Errorf("%s: %d, Content-Length %q", m, resp.StatusCode, resp.Header.Get("Content-Length"))
			}
		}
	})
	t.Run("Respond ignores framing fields", func(t *testing.T) {
		p := to("127.0.0.1:1")
		p.RequestFilter = func(s *proxy.Session) (bool, error) {
			return true, s.Respond(200, []byte("hi"), "Content-Length", "99", "Transfer-Encoding", "chunked", "X-Ok", "1")
		}
		_, addr := proxytest.Proxy(t, p, proxy.Options{})
		c, br := rawConn(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
		for range 2 {
			resp, body := readResponse(t, br, "GET")
			if resp.StatusCode != 200 || body != "hi" || resp.Header.Get("X-Ok") != "1" {
				t.Errorf("%d %q %v", resp.StatusCode, body, resp.Header)
			}
		}
	})
}

// TestFieldsCannotInjectLines: a filter that writes CR LF into a field
// through Header.Fields cannot split the message on the wire.
func TestFieldsCannotInjectLines(t *testing.T) {
	o := newOrigin(t, nil)
	p := to(o.addr)
	p.UpstreamRequestFilter = func(s *proxy.Session, r *proxy.Request) error {
		if bytes.Equal(r.Path, []byte("/inject")) {
			f := r.Header.Fields()
			f[0].Value = []byte("a\r\nX-Injected: 1")
		}
		return nil
	}
	_, addr := proxytest.Proxy(t, p, proxy.Options{})
	c, br := rawConn(t, addr)
	io.WriteString(c, "GET /inject HTTP/1.1\r\nHost: a\r\nX-First: 1\r\n\r\n")
	if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != 500 {
		t.Errorf("status %d, want 500", resp.StatusCode)
	}
	for _, s := range o.requests() {
		if s.header.Get("X-Injected") != "" {
			t.Errorf("the origin got an injected field: %v", s.header)
		}
	}
	checkNext(t, addr, o)
}

// TestProhibitedTrailers: trailer fields that may not be trailers (framing,
// routing, authentication: RFC 9110 §6.5.1) are not relayed either way,
// nor are forwarding fields from a client.
func TestProhibitedTrailers(t *testing.T) {
	o := newOrigin(t, func(oc *originConn, req *http.Request) bool {
		s := oc.readBody(req)
		oc.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nContent-Length: 5\r\nHost: evil\r\nX-Ok: 1\r\n\r\n")
		return s.err == nil
	})
	_, addr := proxytest.Proxy(t, to(o.addr), proxy.Options{})
	c, br := rawConn(t, addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nAuthorization: x\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-In: 1\r\n\r\n")
	resp, body := readResponse(t, br, "POST")
	if body != "ok" || resp.Trailer.Get("X-Ok") != "1" || resp.Trailer.Get("Host") != "" || resp.Trailer.Get("Content-Length") != "" {
		t.Errorf("response %q, trailers %v", body, resp.Trailer)
	}
	for _, s := range o.requests() {
		if s.trailer.Get("X-In") != "1" || s.trailer.Get("Authorization") != "" || s.trailer.Get("X-Forwarded-For") != "" || s.trailer.Get("Forwarded") != "" {
			t.Errorf("origin got trailers %v", s.trailer)
		}
	}
}

// TestUpgradeAllowList: only listed protocols are tunnelled; a 101 must
// switch to a protocol the client asked for.
func TestUpgradeAllowList(t *testing.T) {
	o := newOrigin(t, func(oc *originConn, req *http.Request) bool {
		oc.readBody(req)
		switch req.URL.Path {
		case "/101-anyway":
			oc.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n")
			return false
		case "/other-protocol":
			oc.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
			return false
		}
		return serveOK(oc, req) || true
	})
	_, addr := proxytest.Proxy(t, to(o.addr), proxy.Options{})
	for _, tc := range []struct {
		path, upgrade string
		status        int
	}{
		{"/plain", "foo", 200},
		{"/101-anyway", "foo", 502},
		{"/other-protocol", "websocket", 502},
	} {
		c, br := rawConn(t, addr)
		io.WriteString(c, "GET "+tc.path+" HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: "+tc.upgrade+"\r\n\r\n")
		if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != tc.status {
			t.Errorf("%s with Upgrade: %s: status %d, want %d", tc.path, tc.upgrade, resp.StatusCode, tc.status)
		}
	}
	for _, s := range o.requests() {
		if s.path != "/other-protocol" && (s.header.Get("Upgrade") != "" || s.header.Get("Connection") != "") {
			t.Errorf("%s reached the origin with Upgrade %q, Connection %q", s.path, s.header.Get("Upgrade"), s.header.Get("Connection"))
		}
	}
}

// TestEveryAnswerLogged: requests strait answers itself, malformed ones
// included, each get one log line with an ID of their own.
func TestEveryAnswerLogged(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	var mu sync.Mutex
	type line struct {
		id     string
		status int
		err    *proxy.Error
	}
	var lines []line
	p := to(origin)
	p.Logging = func(s *proxy.Session, e *proxy.Error) {
		mu.Lock()
		lines = append(lines, line{string(s.RequestID), s.Stats.Status, e})
		mu.Unlock()
	}
	_, addr := proxytest.Proxy(t, p, proxy.Options{Limits: proxy.Limits{MaxRequestBody: 10}})
	c, br := rawConn(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: first\r\n\r\n"+
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
	readResponse(t, br, "GET")
	readResponse(t, br, "POST")
	c2, br2 := rawConn(t, addr)
	io.WriteString(c2, "GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: mine\r\n\r\nCONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n")
	readResponse(t, br2, "GET")
	readResponse(t, br2, "CONNECT")
	c3, br3 := rawConn(t, addr)
	io.WriteString(c3, "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n")
	readResponse(t, br3, "GET")

	var got []line
	waitFor(2*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		got = append(got[:0], lines...)
		return len(got) >= 5
	})
	statuses := map[int]int{}
	ids := map[string]bool{}
	for _, l := range got {
		statuses[l.status]++
		if l.id == "" || ids[l.id] {
			t.Errorf("log line with status %d has ID %q (empty or seen before)", l.status, l.id)
		}
		ids[l.id] = true
	}
	if len(got) != 5 || statuses[200] != 2 || statuses[413] != 1 || statuses[405] != 1 || statuses[400] != 1 {
		t.Errorf("log lines: %+v", got)
	}
}

// TestIdleNewConnection: a connection that never sends a byte is closed
// after the header timeout, not the longer keep-alive idle timeout.
func TestIdleNewConnection(t *testing.T) {
	_, addr := proxytest.Proxy(t, to("127.0.0.1:1"), proxy.Options{Timeouts: proxy.Timeouts{Header: 300 * time.Millisecond, Idle: 30 * time.Second}})
	c, br := rawConn(t, addr)
	start := time.Now()
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("read a byte")
	}
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("a silent new connection was closed after %v; want the 300ms header timeout (plus the parker's 1s sweep)", d)
	}
	c.Close()
}

// TestShutdownServesStartedRequests: a request whose bytes reached strait
// before Shutdown is answered, however its head was split; none gets 408
// or a closed connection.
func TestShutdownServesStartedRequests(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	for i := range 30 {
		srv, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
		c, br := rawConn(t, addr)
		split := i % 3
		switch split {
		case 0: // the whole head, Shutdown at once
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		default: // part of it
			io.WriteString(c, "GET / HTTP/1.1\r\nHo")
		}
		if split == 2 {
			time.Sleep(5 * time.Millisecond)
		}
		// A connection not yet accepted is reset when its listener
		// closes, as with any server; one accepted must be served.
		if !waitFor(2*time.Second, func() bool { return srv.Counters().ConnsOpen.Load() == 1 }) {
			t.Fatal("the connection was not accepted")
		}
		done := make(chan struct{})
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
			close(done)
		}()
		if split != 0 {
			time.Sleep(time.Millisecond)
			io.WriteString(c, "st: a\r\n\r\n")
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("round %d (split %d): %v", i, split, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("round %d (split %d): %d %q", i, split, resp.StatusCode, body)
		}
		// Served before Shutdown began, or as it ran: either way the
		// connection ends after it.
		if _, err := br.ReadByte(); err == nil {
			t.Fatalf("round %d (split %d): the connection outlived Shutdown", i, split)
		}
		<-done
	}
}

// TestOriginFailsMidExchange: an origin that resets while reading the
// request body, or mid-response, or a client that leaves mid-body: the
// failure is reported on the right side, and the next request is sound.
func TestOriginFailsMidExchange(t *testing.T) {
	reset := func(c net.Conn) {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	for _, tc := range []struct {
		name    string
		serve   func(oc *originConn, req *http.Request) bool
		request string // sent by the client; "" then closes mid-body
		status  int    // 0: the response is cut short
		side    proxy.Side
	}{
		{
			name: "origin resets mid request body",
			serve: func(oc *originConn, req *http.Request) bool {
				oc.recordHead(req)
				io.ReadFull(req.Body, make([]byte, 10))
				reset(oc.c)
				return false
			},
			request: "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("a", 100000),
			status:  502,
			side:    proxy.Upstream,
		},
		{
			name: "origin resets mid response body",
			serve: func(oc *originConn, req *http.Request) bool {
				oc.readBody(req)
				oc.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
				time.Sleep(20 * time.Millisecond)
				reset(oc.c)
				return false
			},
			request: "GET /x HTTP/1.1\r\nHost: a\r\n\r\n",
			side:    proxy.Upstream,
		},
		{
			name:    "client leaves mid request body",
			serve:   serveOK,
			request: "",
			side:    proxy.Downstream,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOrigin(t, func(oc *originConn, req *http.Request) bool {
				if req.URL.Path != "/x" {
					return serveOK(oc, req)
				}
				return tc.serve(oc, req)
			})
			var l logged
			p := to(o.addr)
			p.Logging = l.hook
			// Streamed (not buffered), so that the body reaches the origin
			// as it comes.
			_, addr := proxytest.Proxy(t, p, proxy.Options{Buffering: proxy.Buffering{Max: -1}})
			c, br := rawConn(t, addr)
			if tc.request == "" {
				io.WriteString(c, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
				time.Sleep(50 * time.Millisecond)
				c.Close()
				if !waitFor(2*time.Second, func() bool {
					for _, s := range o.requests() {
						if s.path == "/x" && s.err != nil {
							return true
						}
					}
					return false
				}) {
					t.Errorf("the origin did not see the request body cut short: %+v", o.requests())
				}
			} else {
				io.WriteString(c, tc.request)
				resp, err := http.ReadResponse(br, nil)
				switch {
				case tc.status != 0 && (err != nil || resp.StatusCode != tc.status):
					t.Errorf("response %v, %v; want %d", resp, err, tc.status)
				case tc.status == 0 && err == nil:
					if _, err := io.ReadAll(resp.Body); err == nil {
						t.Errorf("a response cut short upstream reached the client whole")
					}
				}
			}
			if e, _ := l.get("/x"); e == nil || e.Side != tc.side {
				t.Errorf("logged %v, want a %v error", e, tc.side)
			}
			checkNext(t, addr, o, "/x")
		})
	}
}

// TestAnswerBeforeUnreadBody: strait refuses a request whose body is
// still coming (413 on its Content-Length) and closes the connection; the
// client, still sending, must read the answer rather than a reset.
func TestAnswerBeforeUnreadBody(t *testing.T) {
	_, addr := proxytest.Proxy(t, to("127.0.0.1:1"), proxy.Options{Limits: proxy.Limits{MaxRequestBody: 1 << 10}})
	body := strings.Repeat("x", 4<<20)
	for i := range 10 {
		c, br := rawConn(t, addr)
		go func() {
			io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4194304\r\n\r\n")
			time.Sleep(10 * time.Millisecond) // strait answers as the body starts
			io.WriteString(c, body)
		}()
		time.Sleep(50 * time.Millisecond) // a client busy sending reads late
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if resp.StatusCode != 413 || !resp.Close {
			t.Fatalf("round %d: %d, close %v", i, resp.StatusCode, resp.Close)
		}
		c.Close()
	}
}

// TestStrayBytesInPool: bytes an origin sends after a complete response
// (a second response, a HEAD response's body sent late) are never read as
// the next request's response: a pooled connection holding any is not
// reused, whatever the next request's method.
func TestStrayBytesInPool(t *testing.T) {
	for _, tc := range []struct {
		name, method string
		stray        string
	}{
		{"second response", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nSet-Cookie: stolen=1\r\n\r\nINJECTED!!!"},
		{"second response before a PUT", "PUT", "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nINJECTED!!!"},
		{"late body of a HEAD response", "HEAD", "hello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOrigin(t, func(oc *originConn, req *http.Request) bool {
				s := oc.readBody(req)
				if req.URL.Path != "/first" {
					return serveOK(oc, req)
				}
				oc.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
				if req.Method != "HEAD" {
					oc.write("first")
				}
				time.Sleep(50 * time.Millisecond)
				oc.write(tc.stray)
				return s.err == nil
			})
			_, addr := proxytest.Proxy(t, to(o.addr), proxy.Options{})
			c, br := rawConn(t, addr)
			io.WriteString(c, tc.method+" /first HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
			readResponse(t, br, tc.method)
			time.Sleep(100 * time.Millisecond) // the stray bytes arrive while the connection is idle
			for i := range 3 {
				c, br := rawConn(t, addr) // another client
				path := fmt.Sprintf("/client%d", i)
				io.WriteString(c, tc.method+" "+path+" HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
				resp, body := readResponse(t, br, tc.method)
				want := path
				if tc.method == "HEAD" {
					want = ""
				}
				if resp.StatusCode != 200 || body != want || resp.Header.Get("Set-Cookie") != "" {
					t.Errorf("client %d got %d %q %v, want its own response", i, resp.StatusCode, body, resp.Header)
				}
			}
		})
	}
}

// TestStaleConnectionWithBody: an idempotent request whose body came with
// its head, sent on a pooled connection the origin has closed, is not
// answered 502: the closed connection is found before it is used.
func TestStaleConnectionWithBody(t *testing.T) {
	o := newOrigin(t, func(oc *originConn, req *http.Request) bool {
		serveOK(oc, req)
		time.Sleep(10 * time.Millisecond)
		return false // closes after each answer, without saying so
	})
	_, addr := proxytest.Proxy(t, to(o.addr), proxy.Options{})
	c, br := rawConn(t, addr)
	for i, method := range []string{"PUT", "DELETE", "GET", "PUT", "POST"} {
		path := fmt.Sprintf("/%d", i)
		io.WriteString(c, method+" "+path+" HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
		if resp, body := readResponse(t, br, method); resp.StatusCode != 200 || body != path {
			t.Errorf("%s after the origin closed the pooled connection: %d %q", method, resp.StatusCode, body)
		}
		time.Sleep(50 * time.Millisecond) // the origin's close arrives
	}
}

// TestClientLeavesWhileWatched: a client that leaves is noticed however
// it left: after pipelining a few bytes, or after a request body that took
// longer than the first wait for the response.
func TestClientLeavesWhileWatched(t *testing.T) {
	for _, tc := range []struct {
		name  string
		parts []string // sent 50ms apart, then the client waits 100ms and closes
	}{
		{"pipelined bytes, then gone", []string{"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nG"}},
		{"pipelined head, then gone", []string{"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n"}},
		{"body after 50ms", []string{"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", "hello"}},
		{"body after 300ms", []string{"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", "", "", "", "", "", "hello"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gone := make(chan time.Time, 1)
			origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.ReadAll(r.Body)
				select {
				case <-r.Context().Done():
					gone <- time.Now()
				case <-time.After(5 * time.Second):
				}
			}))
			_, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
			c, _ := rawConn(t, addr)
			for i, p := range tc.parts {
				if i > 0 {
					time.Sleep(50 * time.Millisecond)
				}
				io.WriteString(c, p)
			}
			time.Sleep(100 * time.Millisecond)
			c.Close()
			left := time.Now()
			select {
			case at := <-gone:
				if d := at.Sub(left); d > 500*time.Millisecond {
					t.Errorf("the origin saw the client go %v after it left", d)
				}
			case <-time.After(3 * time.Second):
				t.Errorf("the upstream request was not cancelled when the client left")
			}
		})
	}
}

// TestResponseCutShortIsSent: a response whose body fails mid-way, in the
// same read as its head, reaches the client as far as it went, then ends:
// the client sees it cut short, not nothing.
func TestResponseCutShortIsSent(t *testing.T) {
	origin := rawOrigin(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nZZ\r\nxx\r\n0\r\n\r\n")
	})
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
	c, br := rawConn(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no response head: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "ok" || err == nil {
		t.Errorf("%d %q, %v; want 200 and \"ok\" cut short", resp.StatusCode, body, err)
	}
}

// TestUpgradeHTTP10Ignored: an HTTP/1.0 request's Upgrade is ignored (RFC
// 9110 §7.8): it goes upstream as a plain request.
func TestUpgradeHTTP10Ignored(t *testing.T) {
	o := newOrigin(t, nil)
	_, addr := proxytest.Proxy(t, to(o.addr), proxy.Options{})
	c, br := rawConn(t, addr)
	io.WriteString(c, "GET /old HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != "/old" {
		t.Errorf("%d %q", resp.StatusCode, body)
	}
	for _, s := range o.requests() {
		if s.header.Get("Upgrade") != "" {
			t.Errorf("the origin got Upgrade %q", s.header.Get("Upgrade"))
		}
	}
}

// TestUpgradeWithBodyLate101: an upgrade request with a body, answered
// 101 only after the client has been watched for a while, becomes a
// tunnel (the body sender, watching, is stopped, not waited for).
func TestUpgradeWithBodyLate101(t *testing.T) {
	origin := acceptLoop(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		time.Sleep(100 * time.Millisecond)
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"+string(body))
		io.Copy(c, br)
	})
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{})
	c, br := rawConn(t, addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 5\r\n\r\n")
	time.Sleep(30 * time.Millisecond) // the body comes after the first wait for the response
	io.WriteString(c, "hello")
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	io.WriteString(c, "ping")
	got := make([]byte, 9)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "helloping" {
		t.Errorf("tunnel carried %q (%v), want %q", got, err, "helloping")
	}
}

// TestPipelinedHeadSplit: a pipelined request whose head came partly with
// the previous request, the rest later, is answered once it is whole; one
// that never completes gets 408 after the head timeout, not silence.
func TestPipelinedHeadSplit(t *testing.T) {
	o := newOrigin(t, nil)
	_, addr := proxytest.Proxy(t, to(o.addr), proxy.Options{Timeouts: proxy.Timeouts{Header: 500 * time.Millisecond}})
	c, br := rawConn(t, addr)
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHo")
	if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != "/a" {
		t.Fatalf("/a: %d %q", resp.StatusCode, body)
	}
	time.Sleep(100 * time.Millisecond) // past parkAfter
	io.WriteString(c, "st: x\r\n\r\nGET /third HTTP/1.1\r\nHo")
	if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != "/second" {
		t.Fatalf("/second: %d %q", resp.StatusCode, body)
	}
	start := time.Now()
	resp, _ := readResponse(t, br, "GET")
	if d := time.Since(start); resp.StatusCode != 408 || d > 2*time.Second {
		t.Errorf("a head left unfinished: %d after %v, want 408 after the 500ms head timeout", resp.StatusCode, d)
	}
}

// TestReuseSoonAfterResponse: a connection reused within a millisecond of
// its last response is checked too. The origin closes each connection at
// once after answering (without saying so), or sends stray bytes in a
// write of their own after each response; then the client sends its next
// request at once.
func TestReuseSoonAfterResponse(t *testing.T) {
	for _, tc := range []struct {
		name, method string
		after        func(oc *originConn) bool // once the response is sent; false closes
	}{
		{"origin closes, bodiless POST", "POST", func(oc *originConn) bool { oc.c.Close(); return false }},
		{"stray bytes, GET", "GET", func(oc *originConn) bool {
			oc.write("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")
			return true
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan struct{}, 1) // the origin has closed, or sent its stray bytes
			o := newOrigin(t, func(oc *originConn, req *http.Request) bool {
				ok := serveOK(oc, req) && tc.after(oc)
				done <- struct{}{}
				return ok
			})
			_, addr := proxytest.Proxy(t, to(o.addr), proxy.Options{})
			c, br := rawConn(t, addr)
			for i := range 100 {
				path := fmt.Sprintf("/%d", i)
				io.WriteString(c, tc.method+" "+path+" HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
				if resp, body := readResponse(t, br, tc.method); resp.StatusCode != 200 || body != path {
					t.Fatalf("request %d got %d %q, not its own response", i, resp.StatusCode, body)
				}
				<-done
				// 50 µs for the bytes to cross loopback: a spin, as
				// time.Sleep would take a millisecond or so.
				for start := time.Now(); time.Since(start) < 50*time.Microsecond; {
				}
			}
		})
	}
}
