// Package h1 serves HTTP/1.1 on both sides of strait behind the streams of
// internal/stream: server connections, which read requests from clients
// and write their responses (conn.go, downstream.go, watch.go), and
// upstream connections, which send requests to peers and read their
// responses (upstream.go). Parsing and serializing are internal/http1's;
// the forwarding path between the two sides is package proxy's.
package h1
