// Package http1 is strait's HTTP/1.1 codec: a strict parser and serializer
// for requests and responses that works in place over pooled buffers.
//
// It is written here rather than taken from net/http because a proxy needs
// what net/http does not give: header fields relayed in their received case
// and order, no allocation per message (net/http builds maps and strings for
// every request), and rejection of every message whose framing a peer could
// read differently (RFC 9112 §6.3, §11.2). The rules it enforces, and the
// choices it makes where the RFC leaves room, are listed in docs/http1.md.
//
// A Reader parses message heads out of a connection and hands out Body
// readers that stream the body with bounded memory; the append functions in
// write.go and the ChunkedWriter serialize messages for forwarding.
package http1
