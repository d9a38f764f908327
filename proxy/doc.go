// Package proxy is strait's proxy engine and its programmable surface: a
// Server reads requests, takes each through the Phases a program fills in
// (after Cloudflare Pingora's ProxyHttp), and relays it to the peer they
// choose over a process-wide pool of upstream connections.
//
// The HTTP/1.1 data path is written here, over strait's own codec
// (internal/http1), rather than on net/http's server and transport: a proxy
// must relay fields as received, stream bodies both ways with bounded
// buffers, answer malformed input with the exact status, know which side
// failed, and allocate nothing per request, none of which net/http's
// Handler and RoundTripper shapes allow.
//
// A working proxy is a few lines:
//
//	srv, _ := proxy.New(proxy.Phases{
//		UpstreamPeer: func(s *proxy.Session) (*proxy.Peer, error) {
//			return &proxy.Peer{Addr: "127.0.0.1:9000"}, nil
//		},
//	}, proxy.Options{})
//	ln, _ := proxy.Listen(context.Background(), "tcp", ":8080")
//	srv.Serve(ln)
package proxy
