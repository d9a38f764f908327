package proxy

import "crypto/tls"

// Phases are the steps of proxying one request that a program can fill in,
// after Cloudflare Pingora's ProxyHttp. Every field is optional, but a
// program sets UpstreamPeer, or a RequestFilter that answers requests
// itself, or both (New refuses neither). They run in this order:
//
//	RequestFilter         may answer the request itself
//	UpstreamPeer          chooses where the request goes
//	UpstreamRequestFilter may change the request head sent upstream
//	RequestBodyFilter     sees the request body as it streams upstream
//	ResponseFilter        may change the response head sent downstream
//	ResponseBodyFilter    sees the response body as it streams downstream
//	Logging               always runs, last
//
// and, when something fails: FailToConnect (the upstream could not be
// reached), ErrorWhileProxy (it failed after being reached), FailToProxy
// (the request failed: choose the status to answer with).
//
// Hooks run on the request's goroutine, one request at a time per
// connection, except RequestBodyFilter: it runs on a goroutine that sends
// the body while the response is awaited, and may run at the same time as
// ResponseFilter and ResponseBodyFilter when the upstream answers before
// it has the whole body. A Phases value is shared by every connection, so
// hooks must be safe for concurrent use.
type Phases struct {
	// NewCtx returns the per-request value stored in Session.Ctx before
	// RequestFilter runs.
	NewCtx func() any

	// RequestFilter runs once the request head has been read. It may answer
	// the request with Session.Respond and return true: nothing is sent
	// upstream. An error fails the request.
	RequestFilter func(s *Session) (answered bool, err error)

	// UpstreamPeer chooses the peer to send the request to. Returning an
	// error fails the request (with Status 503 unless the error is an
	// *Error that says otherwise). Without it, a request RequestFilter
	// does not answer gets 502.
	UpstreamPeer func(s *Session) (*Peer, error)

	// UpstreamRequestFilter may change s.Request before its head is sent.
	// Hop-by-hop fields have been removed and forwarding fields added.
	UpstreamRequestFilter func(s *Session, req *Request) error

	// RequestBodyFilter is given each piece of the request body and returns
	// what to send upstream in its place; end is true for the last call
	// (data may be empty then). With this hook set the body goes upstream
	// chunked, since its length may change.
	RequestBodyFilter func(s *Session, data []byte, end bool) ([]byte, error)

	// ResponseFilter may change the response head before it is sent
	// downstream. Hop-by-hop fields have been removed.
	ResponseFilter func(s *Session, resp *Response) error

	// ResponseBodyFilter is the response-side twin of RequestBodyFilter.
	ResponseBodyFilter func(s *Session, data []byte, end bool) ([]byte, error)

	// FailToConnect is called when connecting to peer failed. It returns the
	// error to go on with; setting its Retry asks for another attempt, with
	// UpstreamPeer called again.
	FailToConnect func(s *Session, peer *Peer, err *Error) *Error

	// ErrorWhileProxy is called when the exchange with a reached peer
	// failed. As with FailToConnect, Retry asks for another attempt; strait
	// honours it only while nothing of the response was sent, and nothing
	// of the request body was consumed that it cannot send again (a
	// buffered body is sent again whole; see Options.Buffering).
	ErrorWhileProxy func(s *Session, peer *Peer, err *Error) *Error

	// FailToProxy is called once the request has failed, and returns the
	// status to answer with if no response has been started. Without it,
	// the status is err.Status.
	FailToProxy func(s *Session, err *Error) int

	// Logging runs after every request, answered or failed; err is nil on
	// success. It runs too for what strait answers without a parsed
	// request (malformed heads, heads too slow, connections refused over
	// a limit), with an empty Session.Request.
	Logging func(s *Session, err *Error)
}

// Peer is an upstream server.
type Peer struct {
	// Addr is "host:port" (an IP literal for IPv6: "[::1]:80").
	Addr string
	// Name identifies the peer in logs; Addr if empty.
	Name string
	// TLS, if set, makes connections to the peer TLS (its ServerName,
	// roots, client certificate, ALPN).
	TLS *tls.Config
	// Key names the connections to the peer that the pool may reuse for
	// it: peers whose connections differ (TLS identity, protocol) need
	// keys of their own. Addr if empty.
	Key string
	// Protocol is how strait speaks to the peer: "" or "h1" HTTP/1.1;
	// "h2c" HTTP/2 in cleartext with prior knowledge; "h2" HTTP/2 over
	// TLS (TLS must be set), by ALPN, falling back to HTTP/1.1 if the peer
	// picks that.
	Protocol string
}
