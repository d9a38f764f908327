package proxy_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/proxytest"
	"github.com/straitproxy/strait/proxy"
)

// TestBufferedBody: a body within Buffering.Max, sent slowly, reaches the
// origin whole and with its length, a chunked one included (but for one
// with trailers, which goes chunked to keep them).
func TestBufferedBody(t *testing.T) {
	o := newOrigin(t, func(oc *originConn, req *http.Request) bool {
		s := oc.readBody(req)
		return s.err == nil && oc.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") == nil
	})
	var l logged
	p := to(o.addr)
	p.Logging = l.hook
	srv, addr := proxytest.Proxy(t, p, proxy.Options{})
	for _, tc := range []struct {
		name, head string
		parts      []string
		wantCL     string // "": chunked
		wantTrail  string
	}{
		{"length", "POST /len HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", []string{"hello ", "world"}, "11", ""},
		{"chunked", "POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", []string{"6\r\nhello \r\n", "5\r\nworld\r\n0\r\n\r\n"}, "11", ""},
		{"trailers", "POST /trailers HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", []string{"6\r\nhello \r\n", "5\r\nworld\r\n0\r\nX-Sum: 7\r\n\r\n"}, "", "7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := rawConn(t, addr)
			io.WriteString(c, tc.head+tc.parts[0])
			time.Sleep(50 * time.Millisecond) // the client is slow
			dials := srv.Counters().UpstreamDials.Load()
			io.WriteString(c, tc.parts[1])
			if resp, body := readResponse(t, br, "POST"); resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
			reqs := o.requests()
			got := reqs[len(reqs)-1]
			if got.body != "hello world" || got.header.Get("Content-Length") != tc.wantCL || got.trailer.Get("X-Sum") != tc.wantTrail {
				t.Errorf("the origin got body %q, Content-Length %q, trailer %v", got.body, got.header.Get("Content-Length"), got.trailer)
			}
			if d := srv.Counters().UpstreamDials.Load() - dials; d > 1 {
				t.Errorf("%d dials for one request", d)
			}
		})
	}
	if n := srv.Counters().BodiesBuffered.Load(); n != 3 {
		t.Errorf("BodiesBuffered = %d, want 3", n)
	}
}

// TestBufferedBodyHoldsNoConnection: while a client sends its body
// slowly, the origin has no connection from strait.
func TestBufferedBodyHoldsNoConnection(t *testing.T) {
	o := newOrigin(t, nil)
	srv, addr := proxytest.Proxy(t, to(o.addr), proxy.Options{})
	c, br := rawConn(t, addr)
	io.WriteString(c, "POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
	time.Sleep(150 * time.Millisecond)
	o.mu.Lock()
	conns := o.conns
	o.mu.Unlock()
	if conns != 0 || srv.Counters().UpstreamDials.Load() != 0 {
		t.Fatalf("the origin has %d connections while the body is half sent", conns)
	}
	io.WriteString(c, "cd")
	if resp, _ := readResponse(t, br, "POST"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if r := o.requests(); len(r) != 1 || r[0].body != "abcd" {
		t.Fatalf("the origin got %+v", r)
	}
}

// TestBufferOverflow: a chunked body past Buffering.Max, or one that does
// not fit the budget, streams whole, its buffered start first; with
// RefuseOverBudget one that does not fit gets 503 instead.
func TestBufferOverflow(t *testing.T) {
	o := newOrigin(t, nil)
	big := strings.Repeat("x", 3000)
	chunked := func(body string) string {
		var b strings.Builder
		b.WriteString("POST /big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
		for i := 0; i < len(body); i += 1000 {
			b.WriteString("3e8\r\n" + body[i:i+1000] + "\r\n")
		}
		b.WriteString("0\r\n\r\n")
		return b.String()
	}
	for _, tc := range []struct {
		name   string
		opts   proxy.Buffering
		status int
	}{
		{"past Max", proxy.Buffering{Max: 1500}, 200},
		{"over budget", proxy.Buffering{Budget: proxy.NewBudget(1500)}, 200},
		{"over budget, refused", proxy.Buffering{Budget: proxy.NewBudget(1500), RefuseOverBudget: true}, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, addr := proxytest.Proxy(t, to(o.addr), proxy.Options{Buffering: tc.opts})
			before := len(o.requests())
			c, br := rawConn(t, addr)
			req := chunked(big)
			// Piece by piece, so that the body arrives over several reads.
			for i := 0; i < len(req); i += 700 {
				io.WriteString(c, req[i:min(i+700, len(req))])
				time.Sleep(5 * time.Millisecond)
			}
			resp, _ := readResponse(t, br, "POST")
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status != 200 {
				if srv.Counters().BufferOverBudget.Load() != 1 || len(o.requests()) != before {
					t.Errorf("refused body: counted %d, origin saw %d", srv.Counters().BufferOverBudget.Load(), len(o.requests())-before)
				}
				return
			}
			r := o.requests()
			if len(r) != before+1 || r[len(r)-1].body != big || r[len(r)-1].err != nil {
				t.Fatalf("the origin got %d requests; last %q %v", len(r)-before, trunc(r[len(r)-1].body), r[len(r)-1].err)
			}
			if b := tc.opts.Budget; b != nil && b.Used() != 0 {
				t.Errorf("the budget holds %d bytes after the request", b.Used())
			}
		})
	}
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// TestBufferedBodyRetried: a buffered body is sent again whole when
// ErrorWhileProxy asks for another attempt; a streamed one, consumed, is
// not.
func TestBufferedBodyRetried(t *testing.T) {
	// The first origin reads the whole request and hangs up unanswered.
	bad := newOrigin(t, func(oc *originConn, req *http.Request) bool {
		oc.readBody(req)
		return false
	})
	good := newOrigin(t, nil)
	for _, tc := range []struct {
		name   string
		max    int64
		status int
	}{{"buffered", 0, 200}, {"streamed", -1, 502}} {
		t.Run(tc.name, func(t *testing.T) {
			p := proxy.Phases{
				UpstreamPeer: func(s *proxy.Session) (*proxy.Peer, error) {
					if s.Stats.Attempts == 1 {
						return &proxy.Peer{Addr: bad.addr}, nil
					}
					return &proxy.Peer{Addr: good.addr}, nil
				},
				ErrorWhileProxy: func(s *proxy.Session, _ *proxy.Peer, e *proxy.Error) *proxy.Error {
					e.Retry = true
					return e
				},
			}
			_, addr := proxytest.Proxy(t, p, proxy.Options{Buffering: proxy.Buffering{Max: tc.max}})
			before := len(good.requests())
			c, br := rawConn(t, addr)
			io.WriteString(c, "POST /r HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nonce only")
			resp, _ := readResponse(t, br, "POST")
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			got := good.requests()[before:]
			if tc.status == 200 && (len(got) != 1 || got[0].body != "once only") {
				t.Errorf("the second origin got %+v", got)
			}
			if tc.status != 200 && len(got) != 0 {
				t.Errorf("a consumed body was sent again: %+v", got)
			}
		})
	}
}

// TestRetryStatuses: a status chosen for a retry sends an idempotent
// request (or one with the idempotency key) to another try; the last
// try's answer goes to the client whatever it is; a POST without the key
// gets the first answer.
func TestRetryStatuses(t *testing.T) {
	busy := newOrigin(t, func(oc *originConn, req *http.Request) bool {
		oc.readBody(req)
		return oc.write("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy") == nil
	})
	good := newOrigin(t, nil)
	for _, tc := range []struct {
		name, request string
		attempts      int
		wantStatus    int
		wantGood      int // requests the good origin gets
	}{
		{"GET retried", "GET /r HTTP/1.1\r\nHost: a\r\n\r\n", 2, 200, 1},
		{"POST answered", "POST /r HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx", 2, 503, 0},
		{"POST with key retried", "POST /r HTTP/1.1\r\nHost: a\r\nIdempotency-Key: 7\r\nContent-Length: 1\r\n\r\nx", 2, 200, 1},
		{"last try relayed", "GET /r HTTP/1.1\r\nHost: a\r\n\r\n", 1, 503, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := proxy.Phases{
				RequestFilter: func(s *proxy.Session) (bool, error) {
					s.Override.RetryStatuses = []int{502, 503, 504}
					s.Override.IdempotencyKey = "Idempotency-Key"
					return false, nil
				},
				UpstreamPeer: func(s *proxy.Session) (*proxy.Peer, error) {
					if s.Stats.Attempts == 1 {
						return &proxy.Peer{Addr: busy.addr}, nil
					}
					return &proxy.Peer{Addr: good.addr}, nil
				},
			}
			_, addr := proxytest.Proxy(t, p, proxy.Options{Limits: proxy.Limits{MaxAttempts: tc.attempts}})
			before := len(good.requests())
			c, br := rawConn(t, addr)
			io.WriteString(c, tc.request)
			resp, body := readResponse(t, br, "GET")
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, body, tc.wantStatus)
			}
			if tc.wantStatus == 503 && body != "busy" {
				t.Errorf("the origin's 503 was not relayed: %q", body)
			}
			if n := len(good.requests()) - before; n != tc.wantGood {
				t.Errorf("the good origin got %d requests, want %d", n, tc.wantGood)
			}
		})
	}
}

// TestSlowBodyNotUpstreamTimeout: the response-head timeout counts from
// when the whole body went upstream: a client that sends its body slowly
// makes no origin look late.
func TestSlowBodyNotUpstreamTimeout(t *testing.T) {
	o := newOrigin(t, nil) // reads the body, then answers
	var l logged
	p := to(o.addr)
	p.Logging = l.hook
	_, addr := proxytest.Proxy(t, p, proxy.Options{
		Timeouts:  proxy.Timeouts{ResponseHeader: 300 * time.Millisecond},
		Buffering: proxy.Buffering{Max: -1}, // streamed
	})
	c, br := rawConn(t, addr)
	io.WriteString(c, "POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n")
	for _, b := range "abcd" {
		time.Sleep(200 * time.Millisecond) // 800 ms in all
		io.WriteString(c, string(b))
	}
	if resp, body := readResponse(t, br, "POST"); resp.StatusCode != 200 {
		t.Fatalf("status %d %q, want 200", resp.StatusCode, body)
	}
	if r := o.requests(); len(r) != 1 || r[0].body != "abcd" {
		t.Fatalf("the origin got %+v", r)
	}
}
