package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/netip"
	"sync"
	"time"

	"github.com/straitproxy/strait/header"
)

// Request is a request head in protocol-neutral form: HTTP/1.1, HTTP/2 and
// HTTP/3 requests all carry method, scheme, authority and path. Byte slices
// refer to connection buffers and are valid while the request is being
// proxied; copy what must outlive it.
type Request struct {
	Method    string // standard methods are interned: no allocation
	Scheme    string // "http" or "https"
	Proto     string // as received: "HTTP/1.1", "HTTP/1.0"; "" for a head that could not be read
	Authority []byte // the target's host[:port]: absolute-form authority, else Host
	Path      []byte // path and query; "*" for OPTIONS *
	Header    header.Header
	// Trailer holds trailer fields of the request body, once it has been
	// read to its end.
	Trailer header.Header
	// ContentLength is the body length when known, -1 when the body is
	// streamed without one (chunked), 0 for no body.
	ContentLength int64
}

// PathIs reports whether the path, without its query, equals p.
func (r *Request) PathIs(p string) bool {
	path, _, _ := bytes.Cut(r.Path, []byte{'?'})
	return string(path) == p
}

// HasPathPrefix reports whether the path starts with prefix.
func (r *Request) HasPathPrefix(prefix string) bool {
	return len(r.Path) >= len(prefix) && string(r.Path[:len(prefix)]) == prefix
}

// Response is a response head.
type Response struct {
	Status int
	Header header.Header
	// Trailer holds trailer fields of the response body, once it has been
	// read to its end.
	Trailer header.Header
}

// Session is one downstream request as it is proxied.
type Session struct {
	// Request is the request. Filters may change it; after
	// UpstreamRequestFilter it is what was sent upstream.
	Request Request
	// Response is the upstream's response head, or the one strait answered
	// with; valid from ResponseFilter on.
	Response Response
	// Ctx is the per-request value from Phases.NewCtx.
	Ctx any

	// Override changes Options for this request only: a hook that runs
	// before the request goes upstream (RequestFilter, UpstreamPeer) sets
	// it, as a route with timeouts of its own does.
	Override Override

	ClientAddr netip.AddrPort
	LocalAddr  netip.AddrPort
	// TLS is the client connection's TLS state, nil for plain text: its
	// PeerCertificates and VerifiedChains say who a client certificate
	// names (mTLS). Read it, do not change it.
	TLS       *tls.ConnectionState
	RequestID []byte
	// Stats are filled in as the request goes; read them in Logging.
	Stats Stats

	call     *call // what the forwarding path keeps of the request; nil for refused connections
	answered bool
	reqIDBuf [32]byte

	// The request's context is made on first use (most requests never ask
	// for it, and making one allocates). ctxMu guards it: the watcher and
	// the body sender end it from their goroutines.
	ctxMu  sync.Mutex
	ctx    context.Context
	cancel context.CancelCauseFunc
	ended  error // why the request's context ended; nil while it runs
}

// Override holds, for one request, values that replace the Server's
// Options. A zero field keeps the Server's value; others mean what the
// Options field of the same name means (a negative UpstreamRead,
// UpstreamTotal or MaxRequestBody: no limit).
type Override struct {
	Connect        time.Duration // Timeouts.Connect
	ResponseHeader time.Duration // Timeouts.ResponseHeader
	UpstreamRead   time.Duration // Timeouts.UpstreamRead
	UpstreamTotal  time.Duration // Timeouts.UpstreamTotal
	MaxRequestBody int64         // Limits.MaxRequestBody, checked after RequestFilter
	BufferMax      int64         // Buffering.Max

	// RetryStatuses are final response statuses (502, 503, 504, say) that
	// send the request to another try instead of to the client, while
	// tries remain and the request may be sent twice (Idempotent). The
	// last try's response goes to the client whatever its status.
	RetryStatuses []int
	// RetryGRPC are gRPC status codes (14 UNAVAILABLE, say) that send a
	// gRPC call to another try when an origin answers with them in a
	// trailers-only response, before anything of the response went
	// downstream, while tries remain and the whole request is at hand to
	// send again (see docs/grpc.md). Whatever its method: the codes are
	// the caller's choice of what a server did not act on.
	RetryGRPC []int
	// GRPCWeb, if set, translates gRPC-Web requests to gRPC for the
	// origin, their responses back, and answers CORS for them.
	GRPCWeb *GRPCWeb
	// IdempotencyKey names a request field (Idempotency-Key) whose
	// presence makes any method safe to send twice.
	IdempotencyKey string
	// StripFields are removed from the request's trailers, as a hook
	// removes them from its head: fields only the proxy may send (a
	// verified client certificate's names, say).
	StripFields []string
}

// Idempotent reports whether the request may be sent upstream twice: its
// method is idempotent (RFC 9110 §9.2.2), or it carries the field
// Override.IdempotencyKey names.
func (s *Session) Idempotent() bool {
	return idempotent(s.Request.Method) || s.Override.IdempotencyKey != "" && s.Request.Header.Has(s.Override.IdempotencyKey)
}

// Stats describe one request, for logs.
type Stats struct {
	Start          time.Time
	RequestRead    time.Duration // reading the request head
	UpstreamDial   time.Duration // connecting to the peer (0 when reused)
	UpstreamHeader time.Duration // from sending the request to the response head
	Total          time.Duration
	Peer           string // address of the peer, if one was chosen
	Reused         bool   // the upstream connection was reused from the pool
	Attempts       int    // upstream attempts made
	BytesIn        int64  // request body bytes read from the client
	BytesOut       int64  // response body bytes written to the client
	Status         int    // status sent downstream; 0 if none
}

// Context returns the request's context. It is cancelled when the request
// ends (after Logging), or earlier, with ErrClientGone as its cause
// (context.Cause), when strait finds the client gone: while its request
// body is read, while the response is awaited (the client is watched once
// the wait passes 20 ms), or when the response cannot be written. Hooks
// may hand it to work they start for the request.
func (s *Session) Context() context.Context {
	s.ctxMu.Lock()
	defer s.ctxMu.Unlock()
	if s.ctx == nil {
		s.ctx, s.cancel = context.WithCancelCause(context.Background())
		if s.ended != nil {
			s.cancel(s.ended)
		}
	}
	return s.ctx
}

// end cancels the request's context with cause, if it has not ended yet.
// Safe for concurrent use.
func (s *Session) end(cause error) {
	s.ctxMu.Lock()
	if s.ended == nil {
		s.ended = cause
		if s.cancel != nil {
			s.cancel(cause)
		}
	}
	s.ctxMu.Unlock()
}

// begin readies the session's context for a new request: the last
// request's, if it was made, stays with whoever holds it (cancelled).
func (s *Session) begin() {
	s.ctx, s.cancel, s.ended = nil, nil, nil
}

// Respond answers the request from a hook instead of the upstream. fields
// are name, value pairs. It may be called once, before any response has
// been sent.
func (s *Session) Respond(status int, body []byte, fields ...string) error {
	if s.answered {
		return errAlreadyAnswered
	}
	s.answered = true
	return s.call.respond(status, body, fields)
}

// Answered reports whether a response has been started.
func (s *Session) Answered() bool { return s.answered }

var errAlreadyAnswered = &Error{Side: Internal, Kind: KindOther, Status: 500, Where: "respond: a response was already started"}
