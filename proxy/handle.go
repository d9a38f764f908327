package proxy

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/grpcwire"
	"github.com/straitproxy/strait/internal/hop"
	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/internal/stream"
)

// call is one request on its way through the phases: the Session the
// hooks see, and what the forwarding path keeps beside it. Calls are
// pooled: a request allocates none.
type call struct {
	srv     *Server
	ds      stream.Downstream
	head    *stream.RequestHead
	headReq bool // the client's request is HEAD (whatever filters make of it)
	// fieldsAsParsed: RequestFilter left the request's fields as parsed,
	// so the parser's marks of the connection's own fields still hold.
	fieldsAsParsed bool
	sess           Session
	body           bodySender
	up             stream.Upstream // the exchange's, while one runs

	// The request body read before the exchange (bufferBody): all of it
	// if bufWhole, else its start, with pending the piece read after that.
	buffered []byte
	pending  []byte
	bufWhole bool
	bufTaken int64   // bytes taken from the budget
	bufp     *[]byte // buffered's memory, from bodyBufPool

	// A watcher on a goroutine of its own signals watchDone when it ends;
	// clientGone is set by the watcher (ClientGone) and read once it is
	// done.
	watchDone  chan struct{}
	clientGone bool

	// A gRPC call (grpc.go): its protocol, its deadline (mono; 0: none),
	// whether it is gRPC-Web translated to gRPC (web) and its response
	// one to translate back (webResp), whether the response is gRPC's
	// (grpcResp), and the buffers of the translation.
	grpc                   grpcwire.Kind
	grpcDeadline, limit    time.Duration // limit: the last exchange's deadline (mono; 0: none)
	web, webResp, grpcResp bool
	textIn                 grpcwire.TextDecoder
	msgs                   grpcwire.Messages // the response's, to end it with a status only between two
	webIn, webOut          []byte
	webFrame               []byte

	// For the answers strait makes itself.
	answer  stream.ResponseHead
	scratch header.Header
	text    []byte
}

var callPool = sync.Pool{New: func() any {
	x := &call{body: bodySender{result: make(chan *Error, 1)}, watchDone: make(chan struct{}, 1)}
	x.sess.call = x
	return x
}}

// handler is the Server as its protocol connections see it.
type handler Server

var _ stream.Handler = (*handler)(nil)

// Serve takes one request through the phases (stream.Handler).
func (h *handler) Serve(ds stream.Downstream) stream.End {
	srv := (*Server)(h)
	x := srv.startCall(ds)
	srv.counters.Requests.Add(1)
	srv.counters.RequestsActive.Add(1)
	defer srv.counters.RequestsActive.Add(-1)
	e := x.run()
	end := x.finish(e)
	x.end(e)
	return end
}

// Reject answers and logs a request head the connection could not read
// (stream.Handler).
func (h *handler) Reject(ds stream.Downstream, r *stream.Rejection) {
	srv := (*Server)(h)
	x := srv.startCall(ds)
	e := &Error{Side: Downstream, Kind: KindProtocol, Status: r.Status, Where: "request head", Err: r.Err}
	if r.Timeout {
		srv.counters.HeaderTimeouts.Add(1)
		e.Kind, e.Where = KindTimeout, "request head timeout"
	} else {
		srv.counters.rejected(r.Status)
	}
	ds.CloseAfter()
	x.writeError(r.Status, r.Detail)
	x.end(e)
}

// startCall readies a call for the request ds carries.
func (srv *Server) startCall(ds stream.Downstream) *call {
	x := callPool.Get().(*call)
	h := ds.Head()
	x.srv, x.ds, x.head, x.up, x.clientGone = srv, ds, h, nil, false
	x.headReq = string(h.Method) == "HEAD"
	s := &x.sess
	s.Stats = Stats{Start: mono.Wall(h.Began), RequestRead: h.Read - h.Began}
	s.Ctx = nil
	s.Override = Override{}
	s.answered = false
	s.ClientAddr, s.LocalAddr, s.TLS = h.Client, h.Local, h.TLS
	s.begin()

	r := &s.Request
	r.Method = internMethod(h.Method)
	r.Scheme, r.Proto = h.Scheme, h.Proto
	r.Authority, r.Path = h.Authority, h.Path
	// The session's header takes over the parsed fields (no copy); they are
	// handed back in end so their memory is reused.
	r.Header, *h.Header = *h.Header, r.Header
	r.Trailer.Reset()
	r.ContentLength = h.ContentLength
	s.Response.Status = 0
	s.Response.Header.Reset()
	s.Response.Trailer.Reset()
	// The first well-formed X-Request-Id the client sent names the request;
	// else strait makes one. Every answer, strait's own included, is
	// logged with it.
	if id := r.Header.Get("x-request-id"); validRequestID(id) {
		s.RequestID = id
	} else {
		s.RequestID = srv.ids.next(s.reqIDBuf[:0])
	}
	x.startGRPC()
	return x
}

// run takes the request through the phases.
func (x *call) run() *Error {
	srv := x.srv
	s := &x.sess
	ph := &srv.phases
	if string(x.head.Method) == "CONNECT" {
		return &Error{Side: Downstream, Kind: KindRequestRejected, Status: 405, Where: "CONNECT is not served"}
	}
	if ph.NewCtx != nil {
		s.Ctx = ph.NewCtx()
	}
	x.fieldsAsParsed = true
	if ph.RequestFilter != nil {
		changes := s.Request.Header.Changes()
		answered, err := ph.RequestFilter(s)
		x.fieldsAsParsed = s.Request.Header.Changes() == changes
		if err != nil {
			return asError(err, Internal, KindFilter, 500, "request filter")
		}
		if answered || s.answered {
			return nil
		}
	}
	if g := s.Override.GRPCWeb; g != nil {
		switch {
		case x.grpc == grpcwire.Web || x.grpc == grpcwire.WebText:
			x.startWeb()
		case s.Request.Method == "OPTIONS" && s.Request.Header.Has("access-control-request-method"):
			return x.preflight(g)
		}
	}
	// After RequestFilter, which may have set the request's own limit.
	if limit := x.bodyLimit(); limit > 0 && x.head.ContentLength > limit {
		srv.counters.BodyTooLarge.Add(1)
		return &Error{Side: Downstream, Kind: KindLimit, Status: 413, Where: "request body over the limit"}
	}
	if e := x.bufferBody(); e != nil {
		return e
	}
	x.prepareUpstreamRequest()
	return x.forward()
}

// bodyLimit is the request's body-size limit: its own, or the Server's.
func (x *call) bodyLimit() int64 {
	if l := x.sess.Override.MaxRequestBody; l != 0 {
		return l
	}
	return x.srv.opts.Limits.MaxRequestBody
}

// timeout returns the request's own value of a timeout, if it has one,
// else the Server's.
func timeout(own, server time.Duration) time.Duration {
	if own != 0 {
		return own
	}
	return server
}

// finish answers a failed request if nothing was sent yet, and says how
// the stream ends.
func (x *call) finish(e *Error) stream.End {
	if e == nil {
		return stream.Done
	}
	s := &x.sess
	x.srv.counters.failed(e)
	if e.Kind == KindDownstreamGone || x.clientGone {
		s.end(ErrClientGone)
		return stream.Gone
	}
	if s.answered {
		// The response was cut short: a gRPC one ends with the failure's
		// status, as a reset would not say (grpc.go).
		if x.grpc != grpcwire.NotGRPC && x.endGRPC(e) {
			return stream.Done
		}
		return stream.Cut
	}
	status := e.Status
	if x.srv.phases.FailToProxy != nil {
		status = x.srv.phases.FailToProxy(s, e)
	}
	if status < 200 || status > 999 {
		status = 502
	}
	// The request body may be unread: the connection cannot go on unless
	// there was none. Nor after a CONNECT, whose client may already be
	// sending tunnel bytes; nor after a failure of strait's or the
	// upstream's.
	if !x.ds.BodyDone() || status >= 500 || string(x.head.Method) == "CONNECT" {
		x.ds.CloseAfter()
	}
	if x.grpc != grpcwire.NotGRPC {
		x.writeGRPCStatus(x.grpcCode(e, status))
		return stream.Done
	}
	x.writeError(status, "")
	return stream.Done
}

// end logs a request strait answered, by proxying it or itself, ends its
// context, and gives the call back.
func (x *call) end(e *Error) {
	s := &x.sess
	s.Stats.Total = mono.Now() - x.head.Began
	x.srv.logRequest(s, e)
	s.end(context.Canceled)
	r := &s.Request
	r.Header, *x.head.Header = *x.head.Header, r.Header
	r.Header.Reset()
	r.Authority, r.Path = nil, nil
	s.Ctx = nil
	x.dropBuffer()
	x.ds, x.head, x.up = nil, nil, nil
	callPool.Put(x)
}

// writeError answers with a short plain-text response of strait's own, and
// flushes it. detail, if any, follows the status text in the body: it names
// the rule a malformed request broke, which helps whoever wrote the client.
func (x *call) writeError(status int, detail string) {
	h := &x.scratch
	h.Reset()
	h.Add("Content-Type", "text/plain; charset=utf-8")
	switch status {
	case 503:
		h.Add("Retry-After", "1")
	case 405:
		h.Add("Allow", "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE")
	}
	text := http.StatusText(status)
	if text == "" {
		text = "Status " + strconv.Itoa(status)
	}
	x.text = append(x.text[:0], text...)
	if detail != "" {
		x.text = append(append(x.text, ": "...), detail...)
	}
	x.text = append(x.text, '\n')
	x.answer = stream.ResponseHead{Status: status, Header: h, Length: int64(len(x.text))}
	if body, err := x.ds.WriteHead(&x.answer); err == nil && body {
		x.ds.WriteBody(x.text)
	}
	x.ds.Flush()
	s := &x.sess
	s.answered = true
	s.Stats.Status = status
	s.Response.Status = status
}

// respond is Session.Respond. Framing and connection fields among fields
// are dropped: strait frames the response itself. Upgrade is kept, for a
// 426 (RFC 9110 §15.5.22).
func (x *call) respond(status int, body []byte, fields []string) error {
	if status < 200 || status > 999 {
		return &Error{Side: Internal, Kind: KindFilter, Status: 500, Where: "respond: status out of range"}
	}
	h := &x.scratch
	h.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		if name := []byte(fields[i]); !hop.IsConnField(name) || header.EqualFold(name, "upgrade") {
			h.Add(fields[i], fields[i+1])
		}
	}
	x.answer = stream.ResponseHead{Status: status, Header: h, Length: int64(len(body))}
	hasBody, err := x.ds.WriteHead(&x.answer)
	if err != nil {
		return writeHeadError(err, 500, "respond: invalid field")
	}
	s := &x.sess
	if hasBody {
		if err := x.ds.WriteBody(body); err != nil {
			return downstreamWriteError(err)
		}
		s.Stats.BytesOut += int64(len(body))
	}
	if err := x.ds.Flush(); err != nil {
		return downstreamWriteError(err)
	}
	s.Stats.Status = status
	s.Response.Status = status
	return nil
}

func downstreamWriteError(err error) *Error {
	return &Error{Side: Downstream, Kind: KindDownstreamGone, Where: "downstream write", Err: err}
}

// writeHeadError is the error a failed Downstream.WriteHead ends the
// request with: a head the protocol cannot carry is strait's (status,
// where), anything else the client's connection failing.
func writeHeadError(err error, status int, where string) *Error {
	if errors.Is(err, stream.ErrUnsendable) {
		return &Error{Side: Internal, Kind: KindFilter, Status: status, Where: where, Err: err}
	}
	return downstreamWriteError(err)
}

func internMethod(m []byte) string {
	switch string(m) {
	case "GET":
		return "GET"
	case "HEAD":
		return "HEAD"
	case "POST":
		return "POST"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "OPTIONS":
		return "OPTIONS"
	case "PATCH":
		return "PATCH"
	case "CONNECT":
		return "CONNECT"
	case "TRACE":
		return "TRACE"
	}
	return string(m)
}
