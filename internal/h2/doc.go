// Package h2 is strait's HTTP/2 server connection: frames read and written
// with golang.org/x/net/http2's Framer, header blocks decoded with its
// hpack, and each request served as a stream.Downstream by the same
// forwarding path as HTTP/1. strait owns this engine rather than using
// net/http's server: it allocates per request, runs a goroutine per
// stream beside its own, has no hook to answer floods with GOAWAY, and
// would bring a second request model (DESIGN.md, decision 2).
package h2
