package proxy_test

import (
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/straitproxy/strait/internal/proxytest"
	"github.com/straitproxy/strait/proxy"
)

// BenchmarkProxyH2Upstream sends GETs one at a time on a keep-alive
// HTTP/1.1 connection through strait to Go's HTTP/2 server in cleartext
// (protocol h2c). Allocations are counted for the whole process, Go's
// server's included: a memory profile tells strait's own.
func BenchmarkProxyH2Upstream(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "Hello, World!")
	})}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	peer := &proxy.Peer{Addr: ln.Addr().String(), Protocol: "h2c"}
	_, addr := proxytest.Proxy(b, proxy.Phases{UpstreamPeer: func(*proxy.Session) (*proxy.Peer, error) { return peer, nil }},
		proxy.Options{Limits: proxy.Limits{MaxRequestsPerConn: -1}})
	benchRoundTrips(b, proxyRoundTripperTo(b, addr))
}
