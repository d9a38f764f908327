package proxy_test

import (
	"bufio"
	"net"
	"strconv"
	"testing"

	"github.com/straitproxy/strait/internal/proxytest"
	"github.com/straitproxy/strait/proxy"
)

// rawOriginKeepAlive answers every request on a connection with a fixed
// small response, as fast as it can: the cost measured is strait's.
func rawOriginKeepAlive(tb testing.TB, body string) string {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	return acceptLoop(tb, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			for {
				l, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(l) == 2 {
					break
				}
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	})
}

// proxyRoundTripper returns a function that sends one GET through strait
// to a raw origin on one keep-alive connection and reads the response.
func proxyRoundTripper(b testing.TB, opts proxy.Options) func() {
	origin := rawOriginKeepAlive(b, "Hello, World!")
	_, addr := proxytest.Proxy(b, to(origin), opts)
	return proxyRoundTripperTo(b, addr)
}

// proxyRoundTripperTo is proxyRoundTripper's client, to strait at addr.
func proxyRoundTripperTo(b testing.TB, addr string) func() {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	req := []byte("GET /hello HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	br := bufio.NewReaderSize(c, 4096)
	return func() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		cl := -1
		for {
			l, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			if len(l) == 2 {
				break
			}
			if len(l) > 16 && string(l[:16]) == "Content-Length: " {
				cl, _ = strconv.Atoi(string(l[16 : len(l)-2]))
			}
		}
		if _, err := br.Discard(cl); err != nil {
			b.Fatal(err)
		}
	}
}

// benchProxy sends b.N GET requests, one at a time on one keep-alive
// connection, through strait to a raw origin. Allocations are counted for
// the whole process: client, strait and origin.
func benchProxy(b *testing.B, opts proxy.Options) {
	benchRoundTrips(b, proxyRoundTripper(b, opts))
}

// benchRoundTrips runs roundTrip b.N times, after warming the pools.
func benchRoundTrips(b *testing.B, roundTrip func()) {
	for range 100 {
		roundTrip()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		roundTrip()
	}
}

func BenchmarkProxyGET(b *testing.B) {
	benchProxy(b, proxy.Options{Limits: proxy.Limits{MaxRequestsPerConn: -1}})
}

// TestProxyAllocs pins the steady state at zero allocations per proxied
// request, counted across the whole process (the raw client and origin
// allocate nothing themselves).
func TestProxyAllocs(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("counts allocations over 2,000 requests; meaningless under -race")
	}
	roundTrip := proxyRoundTripper(t, proxy.Options{Limits: proxy.Limits{MaxRequestsPerConn: -1}})
	for range 200 {
		roundTrip()
	}
	if n := testing.AllocsPerRun(2000, roundTrip); n != 0 {
		t.Errorf("%v allocations per proxied request, want 0", n)
	}
}

// BenchmarkProxyConnClose sends each GET on a connection of its own, as
// clients that close after one request do: what a connection costs.
// Allocations are counted for the whole process, the client's dial
// included.
func BenchmarkProxyConnClose(b *testing.B) {
	origin := rawOriginKeepAlive(b, "Hello, World!")
	_, addr := proxytest.Proxy(b, to(origin), proxy.Options{})
	req := []byte("GET /hello HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
	buf := make([]byte, 4096)
	roundTrip := func() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		for { // until strait closes
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}
	benchRoundTrips(b, roundTrip)
}
