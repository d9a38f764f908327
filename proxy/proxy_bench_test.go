package proxy_test

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/proxytest"
	"github.com/straitproxy/strait/proxy"
)

// rawOriginKeepAlive answers every request on a connection with a fixed
// small response, as fast as it can: the cost measured is strait's.
func rawOriginKeepAlive(tb testing.TB, body string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
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
			}()
		}
	}()
	return ln.Addr().String()
}

// benchProxy sends b.N GET requests, one at a time on one keep-alive
// connection, through strait to a raw origin.
func benchProxy(b *testing.B, opts proxy.Options) {
	origin := rawOriginKeepAlive(b, "Hello, World!")
	_, addr := proxytest.Proxy(b, to(origin), opts)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET /hello HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	br := bufio.NewReaderSize(c, 4096)
	roundTrip := func() {
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
	for range 100 { // warm the pools
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

var _ = time.Second
var _ = io.EOF
