// Package proxy is strait's proxy engine and its programmable surface: a
// Server reads requests, takes each through the Phases a program fills in
// (after Cloudflare Pingora's ProxyHttp), and relays it to the peer they
// choose over a process-wide pool of upstream connections.
//
// This package is the protocol-neutral part: the Server's lifecycle, the
// Phases, Session, Error and Options, and one forwarding path (handle.go:
// a request through the phases; exchange.go: one attempt with a peer;
// body.go: the request body and the watch on the client; upgrade.go:
// switching protocols; fields.go: the fields strait adds and removes). It
// works on the streams of internal/stream, which each protocol serves:
// HTTP/1.1 in internal/h1, over strait's own codec (internal/http1)
// rather than net/http's server and transport. A proxy must relay fields
// as received, stream bodies both ways with bounded buffers, answer
// malformed input with the exact status, know which side failed, and
// allocate nothing per request, none of which net/http's Handler and
// RoundTripper shapes allow.
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
