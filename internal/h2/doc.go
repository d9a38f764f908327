// Package h2 is strait's HTTP/2 engine, both ways. A server connection
// reads and writes frames with golang.org/x/net/http2's Framer, decodes
// header blocks with its hpack, and serves each request as a
// stream.Downstream by the same forwarding path as HTTP/1. strait owns
// this engine rather than using net/http's server: it allocates per
// request, runs a goroutine per stream beside its own, has no hook to
// answer floods with GOAWAY, and would bring a second request model
// (DESIGN.md, decision 2).
//
// conn.go reads frames and ends connections; frames.go handles each kind,
// with flow control and the limits; idle.go parks idle connections;
// stream.go serves one request; fields.go checks a request's fields and
// hpack.go encodes a response's.
//
// client.go is the other side: ClientConn, an HTTP/2 connection to an
// upstream whose streams the pool shares, each an exchange
// (stream.Upstream) of the same forwarding path. tunnel.go carries an
// extended CONNECT's stream, either side's, as a net.Conn.
package h2
