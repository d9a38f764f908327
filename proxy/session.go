package proxy

import (
	"bytes"
	"context"
	"net/netip"
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

	ClientAddr netip.AddrPort
	LocalAddr  netip.AddrPort
	RequestID  []byte
	// Stats are filled in as the request goes; read them in Logging.
	Stats Stats

	ctx      context.Context
	respond  func(s *Session, status int, body []byte, fields []string) error
	answered bool
	reqIDBuf [32]byte
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

// Context is cancelled when the client goes away or the request ends.
func (s *Session) Context() context.Context { return s.ctx }

// Respond answers the request from a hook instead of the upstream. fields
// are name, value pairs. It may be called once, before any response has
// been sent.
func (s *Session) Respond(status int, body []byte, fields ...string) error {
	if s.answered {
		return errAlreadyAnswered
	}
	s.answered = true
	return s.respond(s, status, body, fields)
}

// Answered reports whether a response has been started.
func (s *Session) Answered() bool { return s.answered }

var errAlreadyAnswered = &Error{Side: Internal, Kind: KindOther, Status: 500, Where: "respond: a response was already started"}
