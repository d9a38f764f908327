// Package proxytest starts real origins and proxies on loopback for tests.
package proxytest

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/straitproxy/strait/proxy"
)

// Origin starts a net/http server on a free loopback port and returns its
// address. It stops when the test ends.
func Origin(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// Proxy starts a proxy.Server with p and o on a free loopback port and
// returns it and its address. It is closed when the test ends.
func Proxy(t testing.TB, p proxy.Phases, o proxy.Options) (*proxy.Server, string) {
	t.Helper()
	srv, err := proxy.New(p, o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := proxy.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return srv, ln.Addr().String()
}

// Client returns an HTTP client that does not use the environment's proxy
// settings and times out.
func Client() *http.Client {
	return &http.Client{
		Transport: &http.Transport{Proxy: nil, DisableCompression: true},
		Timeout:   10 * time.Second,
	}
}
