// Package stream is the boundary between strait's protocol connections
// and its forwarding path (package proxy), after the split of Envoy's
// codecs and connection manager: a Downstream is one client request and
// its response, an Upstream one exchange with a peer. The forwarding path
// is written once, over these; each protocol (internal/h1 today) serves
// them.
package stream

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/hop"
	"github.com/straitproxy/strait/internal/tunnel"
)

// Handler is the forwarding path, as a protocol connection calls it.
type Handler interface {
	// Serve proxies the request ds carries, answering it one way or
	// another, and says how the stream ended.
	Serve(ds Downstream) End
	// Reject answers and logs a request the connection refused before
	// it could be proxied.
	Reject(ds Downstream, r *Rejection)
}

// End is how the forwarding path left a downstream stream.
type End uint8

const (
	Done End = iota // the response is complete (or the answer given)
	Cut             // the response was cut short: send what was written, then end the connection
	Gone            // the client went away: end the connection
)

// Rejection is a request a connection refused before proxying it: a
// malformed head, or one that was not read in time.
type Rejection struct {
	Status  int    // 400, 408, 414, 431, 501 or 505
	Detail  string // the rule a malformed head broke, for the client; "" for a timeout
	Timeout bool
	Err     error
}

// ErrUnsendable is what a Downstream's WriteHead error wraps when the
// head is at fault (a field value the protocol refuses, a 101 on HTTP/2),
// not the client's connection.
var ErrUnsendable = errors.New("stream: a response head the protocol cannot carry")

// ErrUnprocessed is what an Upstream's errors wrap when the peer did not
// process the request (an HTTP/2 GOAWAY above its stream, REFUSED_STREAM,
// or no stream could be opened): it may be sent again, whatever its
// method (RFC 9113 §8.7).
var ErrUnprocessed = errors.New("the upstream did not process the request")

// ErrCanceled is what an Upstream's errors wrap when the peer cancelled
// the exchange (HTTP/2 RST_STREAM CANCEL): a gRPC client is told so.
var ErrCanceled = errors.New("the upstream cancelled the stream")

// ProtocolError is a message that broke its protocol. HTTPStatus is the
// status the RFCs name for a request that does (400, 413, 414, 431, 501,
// 505); a proxy answers a response that does with 502.
type ProtocolError interface {
	error
	HTTPStatus() int
}

// RequestHead is a request head as a downstream received it. Its byte
// slices and Header belong to the stream: valid until the request ends.
type RequestHead struct {
	Method    []byte
	Scheme    string // "http" or "https"
	Proto     string // "HTTP/1.1", "HTTP/1.0"; "" when the head could not be read
	Authority []byte // the target's authority if it had one, else Host
	// AuthorityFirst says the authority came with the target (HTTP/1.1
	// absolute-form), and overrides a Host field.
	AuthorityFirst bool
	Path           []byte // path and query; "*" for OPTIONS *
	Header         *header.Header
	Conn           hop.Marks // the connection's own fields in Header
	// ContentLength is the body's length: 0 for none, -1 if unknown
	// (streamed).
	ContentLength int64
	// Upgrade lists the protocols the client asks to switch to; nil if
	// none.
	Upgrade []byte
	// Tunnel says the request is an HTTP/2 extended CONNECT (RFC 8441)
	// for the protocol in Upgrade: only a switch of protocols (101 from
	// an HTTP/1.1 origin) answers it with success.
	Tunnel bool
	// Began and Read are when the head began to arrive and when it was
	// read whole (mono).
	Began, Read time.Duration
	// Client and Local are the connection's addresses.
	Client, Local netip.AddrPort
	// TLS is the connection's TLS state; nil for plain text.
	TLS *tls.ConnectionState
}

// ResponseHead is a response head to write downstream.
type ResponseHead struct {
	Status int
	Reason []byte         // empty: the standard one
	Header *header.Header // end-to-end fields only; nil for none
	// Length is the body's length, or -1 if unknown. For a response to
	// HEAD and a 304 it is the length of the representation, sent if
	// known, and no body follows.
	Length int64
	// Upgrade is, for a 101, the protocol the connection switches to.
	Upgrade []byte
}

// Response is a response head as an upstream received it. Its byte
// slices and Header belong to the stream: valid until the exchange ends.
type Response struct {
	Status int
	Reason []byte
	Header *header.Header
	Conn   hop.Marks // the connection's own fields in Header
	// Length is the body's length: 0 for none, -1 if unknown (streamed).
	// A response to HEAD, a 204 and a 304 have none, whatever their
	// fields say.
	Length int64
}

// Dir is a direction of a stream's waits.
type Dir uint8

const (
	Read Dir = iota
	Write
)

// Shared is what goroutines beside a stream's own may do to it: the body
// sender and the watcher run beside the exchange.
type Shared interface {
	// Share tells the stream that another goroutine uses it, or may
	// interrupt its waits, until the matching Unshare. Calls nest.
	Share()
	Unshare()
	// Interrupt ends the stream's current and later waits in direction d
	// until ClearInterrupt. Any goroutine may call it; a wait it ends
	// consumes nothing.
	Interrupt(d Dir)
	Interrupted(d Dir) bool
	// ClearInterrupt ends an interrupt, once the goroutine it stopped is
	// done.
	ClearInterrupt(d Dir)
}

// Body is a message body being read, one piece at a time.
type Body interface {
	// ReadBody returns the next piece of the body: io.EOF with the last
	// (perhaps empty) piece; a ProtocolError for a body that breaks its
	// framing; a deadline error for one too slow.
	ReadBody() ([]byte, error)
	// BodyBuffered reports whether more of the body is there to be read
	// without waiting.
	BodyBuffered() bool
	// BodyDone reports whether the body was read to its end.
	BodyDone() bool
	// Trailer holds the body's trailer fields, once it is read to its end.
	Trailer() *header.Header
}

// Downstream is one request from a client, and its response.
type Downstream interface {
	Shared
	Body

	// Head is the request head.
	Head() *RequestHead
	// Continue sends 100 Continue if the client waits for it before
	// sending its body, once.
	Continue()

	// WriteInterim relays an interim (1xx) response, where the client can
	// take it.
	WriteInterim(status int, reason []byte, h *header.Header) error
	// WriteHead buffers the response head and reports whether a body
	// follows. The stream decides the framing and whether the connection
	// goes on; h.Header must hold no framing or connection fields. Its
	// error wraps ErrUnsendable for a head the protocol cannot carry;
	// any other is the client's connection failing.
	WriteHead(h *ResponseHead) (body bool, err error)
	WriteBody(p []byte) error
	Flush() error
	// EndBody ends the body, with trailer fields where the framing can
	// carry them.
	EndBody(trailer *header.Header) error
	// CloseAfter ends the connection after this response (HTTP/1:
	// Connection: close).
	CloseAfter()

	// CanWatch reports whether Watch would watch now, rather than return
	// at once (the client sent plenty already: it is there).
	CanWatch() bool
	// Watch watches the client, on the calling goroutine, while the
	// request waits for its response: until the stream is interrupted
	// for reading, or the client leaves, when it calls gone.ClientGone.
	// Whatever the client sends meanwhile is kept for later. CanWatch and
	// Watch are called by the goroutine that reads the request body, or
	// once none does.
	Watch(gone ClientGoneNotifier)

	// Tunnel relays bytes between the client (a) and the connection of
	// up (b), whose 101 response was written, until both are done or idle
	// for idle.
	Tunnel(up Upstream, idle time.Duration) tunnel.Result
}

// ClientGoneNotifier is told when a watched client goes away.
type ClientGoneNotifier interface{ ClientGone() }

// Upstream is one exchange with a peer, on a connection that may carry
// others before or after it.
type Upstream interface {
	Shared
	Body

	// Begin readies the connection for an exchange: limit is its total
	// deadline (mono; 0: none), write bounds each write, and read each
	// read of the response body.
	Begin(limit, write, read time.Duration)
	// WriteHead buffers the request head; host is the Host field of a
	// request without one. body says how the body goes: -1 streamed, 0
	// none, else its length. upgrade is the Upgrade field to offer, nil
	// for none.
	WriteHead(method string, path []byte, h *header.Header, host string, body int64, upgrade []byte) error
	WriteBody(p []byte) error
	Flush() error
	EndBody(trailer *header.Header) error
	// Written is how many bytes the exchange has written; LastWrite is
	// when its last write began (mono).
	Written() int64
	LastWrite() time.Duration

	// ReadHead reads a response head, interim or final, waiting until
	// from+wait at most, for a request whose method was method.
	ReadHead(method string, from, wait time.Duration) (*Response, error)

	// Finish ends the exchange, and reports whether the connection may
	// carry another: the whole request went and the whole response came.
	Finish(sentWhole bool) (reusable bool)
	// Detach hands the connection to a tunnel, with the bytes read ahead
	// of it; the stream is done.
	Detach() (net.Conn, []byte)
	// Streams is how many exchanges the connection carries at once.
	Streams() int
	// Close closes the connection.
	Close() error
}
