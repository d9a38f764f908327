package proxy

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/grpcwire"
	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/internal/stream"
)

// gRPC calls go through the forwarding path as any request does; what
// differs is here (docs/grpc.md):
//
//   - strait's own answers to a gRPC call are gRPC statuses in a
//     trailers-only response (grpcCode maps the failure), and a response
//     cut short ends with a status in its trailers rather than a reset;
//   - grpc-timeout is the upstream deadline, capped by the route's;
//   - the request body is never waited for before it is sent (a
//     bidirectional stream's client waits for answers), only taken
//     whole when it is already there, so that the call may be retried;
//   - gRPC-Web calls are translated to gRPC for the origin when a route
//     asks (Override.GRPCWeb), with CORS answered for them.

// GRPCWeb is how a route bridges gRPC-Web to gRPC (Override.GRPCWeb).
type GRPCWeb struct {
	// AllowOrigins are the origins ("https://app.example.com") whose
	// browsers may call: their CORS preflights are answered and their
	// responses name them in Access-Control-Allow-Origin. "*" allows any
	// origin, without credentials. Others get no CORS fields, and their
	// browsers refuse the response.
	AllowOrigins []string
	// AllowCredentials lets the listed origins send cookies and HTTP
	// authentication (Access-Control-Allow-Credentials); never for "*".
	AllowCredentials bool
	// AllowHeaders are request fields a preflight allows beyond those
	// gRPC-Web uses (content-type, x-grpc-web, x-user-agent,
	// grpc-timeout).
	AllowHeaders []string
	// ExposeHeaders are response fields a browser may read beyond
	// grpc-status, grpc-message and grpc-status-details-bin.
	ExposeHeaders []string
	// MaxAge is how long a browser may keep a preflight's answer; default
	// 10 minutes.
	MaxAge time.Duration
}

// allowOrigin returns the Access-Control-Allow-Origin value for origin:
// the allow-list's entry (never the request's own bytes), or "".
func (g *GRPCWeb) allowOrigin(origin []byte) string {
	if len(origin) == 0 {
		return ""
	}
	for _, o := range g.AllowOrigins {
		if o == "*" || strings.EqualFold(o, string(origin)) {
			return o
		}
	}
	return ""
}

// addCORS adds the CORS fields of an actual (not preflight) response to h,
// if the request's Origin is allowed.
func (x *call) addCORS(h *header.Header) {
	g := x.sess.Override.GRPCWeb
	if g == nil {
		return
	}
	o := g.allowOrigin(x.sess.Request.Header.Get("origin"))
	if o == "" {
		return
	}
	h.Add("Access-Control-Allow-Origin", o)
	if o != "*" {
		h.Add("Vary", "Origin")
		if g.AllowCredentials {
			h.Add("Access-Control-Allow-Credentials", "true")
		}
	}
	expose := "grpc-status, grpc-message, grpc-status-details-bin"
	if len(g.ExposeHeaders) > 0 {
		expose += ", " + strings.Join(g.ExposeHeaders, ", ")
	}
	h.Add("Access-Control-Expose-Headers", expose)
}

// gRPC-Web's own request fields, which a preflight always allows.
var webRequestFields = []string{"content-type", "x-grpc-web", "x-user-agent", "grpc-timeout"}

// preflight answers a CORS preflight for a gRPC-Web route: 204 with the
// fields that allow a POST from an allowed origin, and the requested
// headers among those allowed; 403 without them otherwise.
func (x *call) preflight(g *GRPCWeb) *Error {
	s := &x.sess
	r := &s.Request
	o := g.allowOrigin(r.Header.Get("origin"))
	if o == "" || string(r.Header.Get("access-control-request-method")) != "POST" {
		x.srv.counters.CORSRefused.Add(1)
		return &Error{Side: Downstream, Kind: KindRequestRejected, Status: 403, Where: "CORS preflight from an origin or for a method not allowed"}
	}
	var allowed []string
	for _, name := range strings.Split(string(r.Header.Get("access-control-request-headers")), ",") {
		name = strings.ToLower(strings.TrimSpace(name))
		if name != "" && (containsFold(webRequestFields, name) || containsFold(g.AllowHeaders, name)) {
			allowed = append(allowed, name)
		}
	}
	maxAge := g.MaxAge
	if maxAge <= 0 {
		maxAge = 10 * time.Minute
	}
	fields := []string{"Access-Control-Allow-Origin", o, "Access-Control-Allow-Methods", "POST",
		"Access-Control-Max-Age", strconv.Itoa(int(maxAge / time.Second))}
	if len(allowed) > 0 {
		fields = append(fields, "Access-Control-Allow-Headers", strings.Join(allowed, ", "))
	}
	if o != "*" {
		fields = append(fields, "Vary", "Origin")
		if g.AllowCredentials {
			fields = append(fields, "Access-Control-Allow-Credentials", "true")
		}
	}
	if err := x.respond(204, nil, fields); err != nil {
		return asError(err, Internal, KindFilter, 500, "CORS preflight")
	}
	s.answered = true
	return nil
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// startGRPC notes whether the request is a gRPC call, and its deadline.
func (x *call) startGRPC() {
	x.grpc, x.grpcDeadline, x.limit = grpcwire.NotGRPC, 0, 0
	x.web, x.webResp, x.grpcResp = false, false, false
	r := &x.sess.Request
	if r.Method != "POST" {
		return
	}
	if x.grpc = grpcwire.Classify(r.Header.Get("content-type")); x.grpc == grpcwire.NotGRPC {
		return
	}
	x.srv.counters.GRPCCalls.Add(1)
	if d, ok := grpcwire.ParseTimeout(r.Header.Get("grpc-timeout")); ok {
		x.grpcDeadline = x.head.Read + min(d, 100*365*24*time.Hour)
	}
}

// startWeb readies a gRPC-Web call to go upstream as gRPC.
func (x *call) startWeb() {
	x.web = true
	x.srv.counters.GRPCWebTranslated.Add(1)
	h := &x.sess.Request.Header
	h.Set("content-type", grpcwire.UpstreamContentType(h.Get("content-type")))
	h.Del("x-grpc-web")
	x.textIn.Reset()
}

// grpcLimit returns the exchange's deadline (mono; 0: none) given the
// route's limit: the call's own if it is sooner. When the route's is
// sooner, the origin is told so in grpc-timeout.
func (x *call) grpcLimit(limit time.Duration) time.Duration {
	d := x.grpcDeadline
	if d == 0 {
		return limit
	}
	if limit == 0 || d <= limit {
		return d
	}
	if left := limit - mono.Now(); left > 0 {
		x.text = grpcwire.AppendTimeout(x.text[:0], left)
		x.sess.Request.Header.Set("grpc-timeout", string(x.text))
	}
	return limit
}

// retryGRPC reports whether a response of an origin is a trailers-only
// gRPC status chosen for a retry (Override.RetryGRPC), and another try
// may be made.
func (x *call) retryGRPC(resp *stream.Response) bool {
	s := &x.sess
	if x.grpc == grpcwire.NotGRPC || len(s.Override.RetryGRPC) == 0 || resp.Status != 200 || resp.Length != 0 ||
		s.Stats.Attempts >= x.srv.opts.Limits.MaxAttempts {
		return false
	}
	// The whole request must be at hand to send again: buffered before,
	// or kept as it streamed by a body sender that is done (sentAt).
	if x.head.ContentLength != 0 && !(x.body.sentAt.Load() != 0 && x.bufWhole) {
		return false
	}
	code, ok := grpcwire.ParseStatus(resp.Header.Get("grpc-status"))
	if !ok {
		return false
	}
	for _, c := range s.Override.RetryGRPC {
		if c == int(code) {
			return true
		}
	}
	return false
}

// grpcCode is the gRPC status strait answers a failed gRPC call with,
// for an error e that would otherwise get HTTP status status: past the
// exchange's deadline, whatever failed, DEADLINE_EXCEEDED (an origin
// told the deadline may give up first, and reset).
func (x *call) grpcCode(e *Error, status int) (grpcwire.Code, string) {
	if x.limit != 0 && e.Side == Upstream && mono.Now() >= x.limit {
		return grpcwire.DeadlineExceeded, "upstream deadline exceeded (" + e.Where + ")"
	}
	return grpcCode(e, status), e.Where
}

// grpcCode maps a failure to a gRPC status, by the HTTP status it would
// otherwise get, then by what failed.
func grpcCode(e *Error, status int) grpcwire.Code {
	switch status {
	case 401:
		return grpcwire.Unauthenticated
	case 403:
		return grpcwire.PermissionDenied
	case 404, 405, 501:
		return grpcwire.Unimplemented
	case 408, 504:
		return grpcwire.DeadlineExceeded
	case 413, 429, 431:
		return grpcwire.ResourceExhausted
	}
	if errors.Is(e.Err, stream.ErrCanceled) {
		return grpcwire.Canceled
	}
	switch e.Kind {
	case KindTimeout:
		return grpcwire.DeadlineExceeded
	case KindLimit:
		return grpcwire.ResourceExhausted
	case KindConnect, KindNoPeer, KindClosed, KindStatus:
		return grpcwire.Unavailable
	case KindProtocol:
		return grpcwire.Internal
	}
	switch {
	case status == 502 || status == 503:
		return grpcwire.Unavailable
	case status >= 500 || status == 400:
		return grpcwire.Internal
	}
	return grpcwire.Unknown
}

// grpcContentType is the Content-Type of a response to the call.
func (x *call) grpcContentType() string {
	codec := grpcwire.Codec(x.sess.Request.Header.Get("content-type"))
	switch x.grpc {
	case grpcwire.Web:
		return "application/grpc-web" + codec
	case grpcwire.WebText:
		return "application/grpc-web-text" + codec
	}
	return "application/grpc" + codec
}

// writeGRPCStatus answers a gRPC call with a status of strait's own, in a
// trailers-only response: 200, and the status in the head.
func (x *call) writeGRPCStatus(code grpcwire.Code, msg string) {
	h := &x.scratch
	h.Reset()
	h.Add("content-type", x.grpcContentType())
	h.Add("grpc-status", strconv.Itoa(int(code)))
	x.text = grpcwire.AppendMessage(x.text[:0], msg)
	h.AddBytes([]byte("grpc-message"), x.text)
	x.addCORS(h)
	x.answer = stream.ResponseHead{Status: 200, Header: h, Length: 0}
	x.srv.counters.GRPCStatusAnswers.Add(1)
	x.ds.WriteHead(&x.answer)
	x.ds.Flush()
	s := &x.sess
	s.answered = true
	s.Stats.Status = 200
	s.Response.Status = 200
}

// endGRPC ends a gRPC response cut short by a failure with the failure's
// status in its trailers, and reports whether it could: the response
// must be a gRPC one, framed without a length, and cut between two
// messages (a gRPC-Web trailer frame after half a message would be read
// as the rest of it).
func (x *call) endGRPC(e *Error) bool {
	if !x.grpcResp || x.answer.Length >= 0 || !x.msgs.Between() {
		return false
	}
	t := &x.sess.Response.Trailer
	t.Reset()
	code, msg := x.grpcCode(e, e.Status)
	t.Add("grpc-status", strconv.Itoa(int(code)))
	x.text = grpcwire.AppendMessage(x.text[:0], msg)
	t.AddBytes([]byte("grpc-message"), x.text)
	if err := x.endWebBody(t); err != nil {
		return false
	}
	x.srv.counters.GRPCStatusAnswers.Add(1)
	return x.ds.Flush() == nil
}

// grpcResponseHead notes whether an origin's response to a gRPC call is
// gRPC's, and readies a gRPC-Web call's to go back as gRPC-Web.
func (x *call) grpcResponseHead(resp *stream.Response) {
	h := &x.sess.Response.Header
	kind := grpcwire.Classify(h.Get("content-type"))
	x.grpcResp = kind != grpcwire.NotGRPC
	x.msgs.Reset()
	if !x.web {
		return
	}
	x.addCORS(h)
	if kind == grpcwire.GRPC {
		// A trailers-only response keeps its status in the head, which
		// gRPC-Web allows; any other gets its trailers as a last frame.
		x.webResp = resp.Length != 0
		h.Set("content-type", x.grpcContentType())
	}
}

// webBody returns a piece of a gRPC response's body as a gRPC-Web client
// takes it: as it is, or in base64.
func (x *call) webBody(p []byte) []byte {
	if x.grpcResp {
		x.msgs.Advance(p)
	}
	if !x.webResp || x.grpc != grpcwire.WebText || len(p) == 0 {
		return p
	}
	x.webOut = grpcwire.AppendText(x.webOut[:0], p)
	return x.webOut
}

// endWebBody ends a response's body with its trailers: in a gRPC-Web
// response, as the body's last frame.
func (x *call) endWebBody(t *header.Header) error {
	if !x.webResp {
		return x.ds.EndBody(t)
	}
	x.webFrame = grpcwire.AppendTrailerFrame(x.webFrame[:0], t)
	if err := x.ds.WriteBody(x.webBody(x.webFrame)); err != nil {
		return err
	}
	return x.ds.EndBody(nil)
}
