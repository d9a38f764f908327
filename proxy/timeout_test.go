package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/proxytest"
	"github.com/straitproxy/strait/proxy"
)

// Each named timeout that bounds a wait mid-request, reached on purpose.

// TestBodyTimeout: a client that stops sending its body gets 408.
func TestBodyTimeout(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }))
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{Timeouts: proxy.Timeouts{Body: 300 * time.Millisecond}})
	c, br := rawConn(t, addr)
	start := time.Now()
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
	resp, _ := readResponse(t, br, "POST")
	if d := time.Since(start); resp.StatusCode != 408 || d > 3*time.Second {
		t.Errorf("status %d after %v, want 408 after about 300ms", resp.StatusCode, d)
	}
}

// stallingOrigin answers with a head promising 10 bytes, then sends the
// given pieces of body at 100 ms intervals and holds the connection.
func stallingOrigin(t *testing.T, pieces ...string) string {
	return acceptLoop(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if l, err := br.ReadString('\n'); err != nil || l == "\r\n" {
				break
			}
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
		for _, p := range pieces {
			io.WriteString(c, p)
			time.Sleep(100 * time.Millisecond)
		}
		io.Copy(io.Discard, c) // hold until strait gives up
	})
}

// TestUpstreamReadAndTotalTimeouts: an upstream that stalls mid-body is cut
// by the read timeout; one that trickles, by the total timeout. The client
// sees the response cut short, and the log says which side and why.
func TestUpstreamReadAndTotalTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		origin string
		opts   proxy.Timeouts
	}{
		{"read", stallingOrigin(t, "abc"), proxy.Timeouts{UpstreamRead: 300 * time.Millisecond}},
		{"total", stallingOrigin(t, "a", "b", "c", "d", "e", "f", "g", "h", "i"), proxy.Timeouts{UpstreamTotal: 400 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := make(chan *proxy.Error, 1)
			p := to(tc.origin)
			p.Logging = func(s *proxy.Session, e *proxy.Error) { logs <- e }
			_, addr := proxytest.Proxy(t, p, proxy.Options{Timeouts: tc.opts})
			c, br := rawConn(t, addr)
			start := time.Now()
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("head: %v %v", resp, err)
			}
			body, err := io.ReadAll(resp.Body)
			if err == nil || len(body) >= 10 {
				t.Errorf("body %q, %v: want it cut short", body, err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("cut after %v", d)
			}
			if e := <-logs; e == nil || e.Side != proxy.Upstream || e.Kind != proxy.KindTimeout {
				t.Errorf("logged %v, want an upstream timeout", e)
			}
		})
	}
}

// TestTunnelIdleTimeout: an upgraded connection with no traffic either
// way is closed after the tunnel idle timeout; traffic keeps it open.
func TestTunnelIdleTimeout(t *testing.T) {
	origin := rawOrigin(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		io.Copy(c, c)
	})
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{Timeouts: proxy.Timeouts{TunnelIdle: 400 * time.Millisecond}})
	c, br := rawConn(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	// Traffic every 200 ms for a second: longer than the idle timeout.
	for range 5 {
		io.WriteString(c, "x")
		if b, err := br.ReadByte(); err != nil || b != 'x' {
			t.Fatalf("echo: %q %v", b, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	start := time.Now()
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("read a byte from an idle tunnel")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("idle tunnel closed after %v, want about 400ms", d)
	}
}
