package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/straitproxy/strait/internal/fdlimit"
	"github.com/straitproxy/strait/internal/grpcwire"
	"github.com/straitproxy/strait/internal/h1"
	"github.com/straitproxy/strait/internal/h2"
	"github.com/straitproxy/strait/internal/hop"
	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/internal/sockio"
	"github.com/straitproxy/strait/internal/stream"
)

// upstreamConn is a connection to a peer as the pool keeps it.
type upstreamConn interface {
	Close() error
	Streams() int
	Multiplexed() bool
	// Quiet reports whether the connection may take an exchange: open,
	// and (HTTP/1.1) holding no bytes its peer sent after its last
	// response, or (HTTP/2) not going away.
	Quiet() bool
	// Exchange returns the exchange to run on the connection: itself for
	// HTTP/1.1, a new stream for HTTP/2.
	Exchange() stream.Upstream
}

// h2Conn is an HTTP/2 connection to a peer, as the pool keeps it.
type h2Conn struct {
	*h2.ClientConn
	closed atomic.Bool
}

func (c *h2Conn) Quiet() bool               { return c.Usable() }
func (c *h2Conn) Multiplexed() bool         { return true }
func (c *h2Conn) Exchange() stream.Upstream { return c.NewStream() }

func (c *h2Conn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		fdlimit.ReleaseSocket()
	}
	return c.ClientConn.Close()
}

// idempotent reports whether a request with this method may be sent twice
// (RFC 9110 §9.2.2).
func idempotent(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// forward sends the request upstream, retrying where that is safe, and
// relays the response.
func (x *call) forward() *Error {
	srv := x.srv
	s := &x.sess
	ph := &srv.phases
	attempts := srv.opts.Limits.MaxAttempts
	for {
		s.Stats.Attempts++
		peer, err := ph.UpstreamPeer(s)
		if err != nil || peer == nil {
			if err == nil {
				err = errors.New("no peer chosen")
			}
			return asError(err, Internal, KindNoPeer, 503, "choosing a peer")
		}
		s.Stats.Peer = peer.Addr
		now := x.head.Read // read the clock again only for a retry
		if s.Stats.Attempts > 1 {
			now = mono.Now()
		}
		up, created, e := srv.connect(s, peer, now)
		if e != nil {
			if ph.FailToConnect != nil {
				e = ph.FailToConnect(s, peer, e)
			}
			if e.Retry && s.Stats.Attempts < attempts {
				continue
			}
			return e
		}
		e = x.exchange(up, poolKey(peer), created)
		if e == nil {
			return nil
		}
		if ph.ErrorWhileProxy != nil {
			e = ph.ErrorWhileProxy(s, peer, e)
		}
		if e.Retry && !s.answered && !x.bodyStarted() && (s.Stats.Attempts < attempts ||
			errors.Is(e.Err, stream.ErrUnprocessed) && s.Stats.Attempts < attempts+maxUnprocessedRetries) {
			continue
		}
		return e
	}
}

// maxUnprocessedRetries is how many tries a request gets beyond
// Limits.MaxAttempts when the peer said it did not process it (HTTP/2
// GOAWAY, REFUSED_STREAM): it cost the origin nothing, and an origin that
// restarts sends GOAWAY on every connection.
const maxUnprocessedRetries = 3

// connect returns a pooled connection to peer, or dials a new one, and
// when it was made. now is a recent clock reading, for the pool's idle
// ages.
//
// A pooled connection is looked at first (upstreamConn.Quiet: one system
// call, about 0.5 us): one the peer has closed, or that holds bytes it
// sent after its last response, is not used. Those bytes would otherwise
// be read as the next request's response: one client's answer given to
// another (nginx and Envoy close such connections as their event loops see
// the bytes). Only bytes that arrive after the look cannot be told from
// the response. A request the peer closes on unanswered is sent again
// where that is safe (see exchangeFailed).
//
// An HTTP/2 peer's connection is shared: while one is being dialled,
// exchanges for the peer wait for it rather than dial their own (a burst
// of requests would otherwise open a connection each), and take its
// streams; those it cannot take dial the next.
func (srv *Server) connect(s *Session, peer *Peer, now time.Duration) (upstreamConn, time.Duration, *Error) {
	key := poolKey(peer)
	waitUntil := time.Duration(0) // for a connection being dialled (mono)
	for {
		if u, created, ok := srv.acquire(s, key, now); ok {
			return u, created, nil
		}
		if peer.Protocol != "h2c" && peer.Protocol != "h2" {
			return srv.dial(s, peer)
		}
		d, mine := srv.pool.startDial(key)
		if mine {
			u, created, e := srv.dial(s, peer)
			srv.pool.endDial(key, d, e)
			return u, created, e
		}
		// One connect timeout in all, however many dials are waited for
		// (a peer that allows one stream serializes them).
		if waitUntil == 0 {
			waitUntil = mono.Now() + timeout(s.Override.Connect, srv.opts.Timeouts.Connect)
		}
		t := time.NewTimer(waitUntil - mono.Now())
		select {
		case <-d.done:
			t.Stop()
		case <-t.C:
			return nil, 0, &Error{Side: Upstream, Kind: KindTimeout, Status: 504, Where: "upstream connect timeout (waiting for a connection being dialled)"}
		}
		if d.err != nil {
			e := *d.err
			return nil, 0, &e
		}
		now = mono.Now()
	}
}

// acquire returns a pooled connection to key that may take an exchange.
func (srv *Server) acquire(s *Session, key string, now time.Duration) (upstreamConn, time.Duration, bool) {
	for {
		u, created, ok := srv.pool.p.Acquire(key, now)
		if !ok {
			return nil, 0, false
		}
		if u.Quiet() {
			s.Stats.Reused = true
			return u, created, true
		}
		srv.counters.UpstreamStale.Add(1)
		srv.pool.p.Release(key, u, false, created, now)
	}
}

// dial makes a new connection to peer.
func (srv *Server) dial(s *Session, peer *Peer) (upstreamConn, time.Duration, *Error) {
	s.Stats.Reused = false
	if !fdlimit.TakeSocket() {
		// Out of sockets: idle upstream connections are the ones to
		// give up.
		srv.pool.p.CloseIdle()
		if !fdlimit.TakeSocket() {
			srv.counters.ConnsOverFDLimit.Add(1)
			return nil, 0, &Error{Side: Internal, Kind: KindLimit, Status: 503, Where: "upstream connect: out of file descriptors"}
		}
	}
	start := mono.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout(s.Override.Connect, srv.opts.Timeouts.Connect))
	nc, err := srv.dialer.DialContext(ctx, "tcp", peer.Addr)
	if err != nil && fdlimit.Exhausted(err) && srv.pool.p.Len() > 0 {
		// Descriptors the sockets' count does not see ran out: idle
		// upstream connections go here too.
		srv.pool.p.CloseIdle()
		nc, err = srv.dialer.DialContext(ctx, "tcp", peer.Addr)
	}
	var tc *tls.Conn
	var under *sockio.Underlay
	if err == nil && peer.TLS != nil {
		under = sockio.NewUnderlay(nc)
		tc = tls.Client(under, peer.TLS)
		if err = tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			err = fmt.Errorf("tls: %w", err)
		}
	}
	var c2 *h2.ClientConn
	if err == nil && (peer.Protocol == "h2c" || tc != nil && tc.ConnectionState().NegotiatedProtocol == "h2") {
		o := h2.ClientOptions{Scheme: "http", Write: srv.opts.Timeouts.UpstreamWrite}
		conn := nc
		if tc != nil {
			o.Scheme, conn = "https", tc
		}
		if c2, err = h2.NewClientConn(ctx, conn, o); err != nil {
			nc.Close()
		}
	}
	cancel()
	s.Stats.UpstreamDial = mono.Now() - start
	if err != nil {
		fdlimit.ReleaseSocket()
		e := &Error{Side: Upstream, Kind: KindConnect, Status: 502, Where: "upstream connect", Err: err}
		switch {
		case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
			e.Kind, e.Status, e.Where = KindTimeout, 504, "upstream connect timeout"
		case fdlimit.Exhausted(err):
			srv.counters.ConnsOverFDLimit.Add(1)
			e.Side, e.Kind, e.Status, e.Where = Internal, KindLimit, 503, "upstream connect: out of file descriptors"
		}
		return nil, 0, e
	}
	srv.counters.UpstreamDials.Add(1)
	if c2 != nil {
		u := &h2Conn{ClientConn: c2}
		// Shared at once: exchanges that come meanwhile take its streams.
		srv.pool.p.Add(poolKey(peer), u, start)
		return u, start, nil
	}
	if tc != nil {
		return h1.NewUpstreamWrapped(tc, under, srv.opts.Limits.UpstreamHead), start, nil
	}
	return h1.NewUpstream(nc, srv.opts.Limits.UpstreamHead), start, nil
}

// poolKey names the pooled connections peer may take.
func poolKey(peer *Peer) string {
	if peer.Key != "" {
		return peer.Key
	}
	return peer.Addr
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// exchange sends the request on up and relays the response. On return up
// is back in the pool or closed, and nothing else runs on either stream.
func (x *call) exchange(conn upstreamConn, key string, created time.Duration) *Error {
	srv := x.srv
	s := &x.sess
	ds := x.ds
	t := &srv.opts.Timeouts
	up := conn.Exchange()
	x.up = up
	sentWhole := false
	defer func() {
		srv.pool.p.Release(key, conn, up.Finish(sentWhole), created, mono.Now())
	}()
	limit := time.Duration(0)
	if total := timeout(s.Override.UpstreamTotal, t.UpstreamTotal); total > 0 {
		limit = mono.Now() + total
	}
	limit = x.grpcLimit(limit)
	x.limit = limit
	up.Begin(limit, t.UpstreamWrite, timeout(s.Override.UpstreamRead, t.UpstreamRead))
	x.body.err = nil

	upgrade := x.upgradeOffer()
	if x.head.Tunnel && upgrade == nil {
		// An HTTP/2 extended CONNECT for a protocol not allowed: as a
		// plain request its 2xx would open a tunnel the origin never
		// opened.
		return &Error{Side: Internal, Kind: KindRequestRejected, Status: 501, Where: "extended CONNECT for a protocol not in the listener's upgrades"}
	}
	if ph := srv.phases.UpstreamRequestFilter; ph != nil {
		if err := ph(s, &s.Request); err != nil {
			return asError(err, Internal, KindFilter, 500, "upstream request filter")
		}
		// Framing and connection fields are strait's to write.
		hop.Strip(&s.Request.Header)
	}
	// The body goes with its length if that is known (a buffered body's
	// is, filtered or not, unless it has trailers to send), else streamed.
	body := x.head.ContentLength
	switch {
	case x.bufWhole && s.Request.Trailer.Len() == 0:
		body = int64(len(x.buffered))
	case body != 0 && (srv.phases.RequestBodyFilter != nil || x.web && x.grpc == grpcwire.WebText):
		body = -1 // its length may change (base64 decoded)
	}
	if err := up.WriteHead(s.Request.Method, s.Request.Path, &s.Request.Header, s.Stats.Peer, body, upgrade); err != nil {
		switch {
		case errors.Is(err, stream.ErrUnprocessed):
			// An HTTP/2 connection that could not open the stream.
			srv.counters.UpstreamUnprocessed.Add(1)
			return &Error{Side: Upstream, Kind: KindClosed, Status: 502, Where: "upstream stream", Err: err, Retry: true}
		case errors.Is(err, h2.ErrNoUpgrade):
			return &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "protocol switch to an HTTP/2 upstream", Err: err}
		}
		// Only a field or path a filter set can be refused here.
		return &Error{Side: Internal, Kind: KindFilter, Status: 500, Where: "upstream request head", Err: err}
	}
	var sent time.Duration // when the head went (mono)
	if body != 0 {
		ds.Continue()
		sent = mono.Now()
		x.startBody(up)
		defer x.abortBody(up) // on every early return; a no-op after the last
	} else {
		if err := up.Flush(); err != nil {
			e := &Error{Side: Upstream, Kind: KindClosed, Status: 502, Where: "upstream write", Err: err}
			e.Retry = s.Stats.Reused && (s.Idempotent() || up.Written() == 0)
			return e
		}
		sent = up.LastWrite()
	}

	// The response head. It is seldom there yet: let other connections
	// run first, so that it usually is by the time this one reads. That
	// saves a read that would fail (EAGAIN) and a park on the netpoller:
	// one system call in five per request under load. (Yielding before
	// the client's next request too starved the netpoller: p99 10 ms.)
	runtime.Gosched()
	resp, e := x.readResponseHead(up, sent, limit, body != 0)
	if e != nil {
		return x.exchangeFailed(up, e)
	}
	s.Stats.UpstreamHeader = mono.Now() - sent

	if x.head.Tunnel && resp.Status != 101 && resp.Status < 300 {
		// Only a switch opens the client's tunnel; a 2xx would seem to.
		return x.exchangeFailed(up, &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "upstream did not switch protocols for an extended CONNECT"})
	}
	if resp.Status == 101 {
		proto, e := switchedTo(resp, upgrade)
		if e != nil {
			return e
		}
		if be := x.finishBody(up); be != nil {
			return be
		}
		return x.tunnel(up, resp, proto)
	}

	if x.retryStatus(resp.Status) || x.retryGRPC(resp) {
		// Another try may answer better: this response is dropped (with
		// its connection), the request body stops.
		if be := x.abortBody(up); be != nil && be != errBodyAborted && be.Side != Upstream {
			return be
		}
		return &Error{Side: Upstream, Kind: KindStatus, Status: resp.Status, Where: "upstream answered " + statusText(resp.Status), Retry: true}
	}

	// The response head downstream.
	s.Response.Status = resp.Status
	s.Response.Header, *resp.Header = *resp.Header, s.Response.Header
	defer func() { s.Response.Header, *resp.Header = *resp.Header, s.Response.Header }()
	// What a HEAD or 304 response says of the representation's length,
	// before the framing fields go with the hop-by-hop ones.
	represented := int64(-1)
	if resp.Length > 0 {
		represented = resp.Length
	} else if resp.Length == 0 && (x.headReq || resp.Status == 304) {
		if n, err := strconv.ParseInt(string(s.Response.Header.Get("content-length")), 10, 64); err == nil && n >= 0 {
			represented = n
		}
	}
	hop.StripMarked(&s.Response.Header, resp.Conn)
	if x.grpc != grpcwire.NotGRPC {
		x.grpcResponseHead(resp)
	}
	if ph := srv.phases.ResponseFilter; ph != nil {
		if err := ph(s, &s.Response); err != nil {
			return asError(err, Internal, KindFilter, 502, "response filter")
		}
		if st := s.Response.Status; st < 200 || st > 999 {
			return &Error{Side: Internal, Kind: KindFilter, Status: 502, Where: "response filter set status " + strconv.Itoa(st)}
		}
		hop.Strip(&s.Response.Header)
	}
	// Framing downstream follows the final status and the body strait
	// will send, whatever filters did (stream.Downstream.WriteHead).
	length := int64(-1)
	switch st := s.Response.Status; {
	case x.headReq || st == 304:
		length = represented
	case resp.Length == 0:
		length = 0
	case resp.Length > 0 && srv.phases.ResponseBodyFilter == nil && len(s.Response.Header.Get("trailer")) == 0 && !x.webResp:
		// (A response that declares trailers goes chunked to an HTTP/1.1
		// client, which could not get them with a length.)
		length = resp.Length
	}
	reason := resp.Reason
	if s.Response.Status != resp.Status {
		reason = nil // the origin's no longer fits
	}
	x.answer = stream.ResponseHead{Status: s.Response.Status, Reason: reason, Header: &s.Response.Header, Length: length}
	hasBody, err := ds.WriteHead(&x.answer)
	if err != nil {
		return x.exchangeFailed(up, writeHeadError(err, 502, "response head"))
	}
	s.answered = true
	s.Stats.Status = s.Response.Status

	// The response body. One the client is not to get (HEAD, 204, 304) is
	// left unread, and the connection with it.
	if hasBody && resp.Length != 0 {
		if e := x.relayResponseBody(up); e != nil {
			return x.exchangeFailed(up, e)
		}
	}
	if err := ds.Flush(); err != nil {
		return x.exchangeFailed(up, downstreamWriteError(err))
	}

	// The response is complete, so a request body still going is no
	// longer wanted (nginx stops sending it too). The connection is
	// reused only if the whole request went out and the whole response
	// came in.
	be := x.abortBody(up)
	switch {
	case be == nil, be == errBodyAborted, be.Side == Upstream:
		// Done; or the origin answered before it had the whole body.
	case be.Side == Downstream:
		// The client broke its body after the response went out: the
		// response stands, the connection ends.
		ds.CloseAfter()
	default:
		return be // a body filter failed: the request failed
	}
	sentWhole = be == nil
	return nil
}

// retryStatus reports whether a final response of this status goes to
// another try rather than to the client (Override.RetryStatuses).
func (x *call) retryStatus(status int) bool {
	s := &x.sess
	if len(s.Override.RetryStatuses) == 0 || s.Stats.Attempts >= x.srv.opts.Limits.MaxAttempts || !s.Idempotent() {
		return false
	}
	if x.head.ContentLength != 0 && !x.bufWhole {
		return false // a streamed body cannot be sent again
	}
	for _, st := range s.Override.RetryStatuses {
		if st == status {
			return true
		}
	}
	return false
}

func statusText(status int) string {
	if t := http.StatusText(status); t != "" {
		return strconv.Itoa(status) + " " + t
	}
	return strconv.Itoa(status)
}

// exchangeFailed stops the body sender and returns the error the exchange
// ends with: when another goroutine interrupted it, the cause that one
// found. A request the origin closed on without answering is marked for a
// retry where sending it again is safe.
func (x *call) exchangeFailed(up stream.Upstream, e *Error) *Error {
	s := &x.sess
	be := x.abortBody(up)
	switch {
	case x.clientGone:
		return &Error{Side: Downstream, Kind: KindDownstreamGone, Where: "client closed while waiting for the upstream"}
	case be != nil && be != errBodyAborted && be.Side != Upstream:
		return be // the client's body broke, or a body filter failed
	}
	if !s.answered && errors.Is(e.Err, stream.ErrUnprocessed) {
		// The peer said it did not process the request (HTTP/2): it may
		// go again, whatever its method.
		x.srv.counters.UpstreamUnprocessed.Add(1)
		e.Retry = true
		return e
	}
	if e.Side == Upstream && e.Kind == KindClosed && !s.answered && (e.Err == io.EOF || isReset(e.Err)) {
		// A reused connection the origin closed as we sent, with nothing
		// of a response back: the request may go again if that cannot do
		// harm twice (an idempotent method) or it never left (nothing
		// written).
		e.Retry = s.Stats.Reused && (s.Idempotent() || up.Written() == 0)
	}
	return e
}

// maxInterim bounds the interim (1xx) responses read before a final one:
// real origins send one or two (a 100, a 103). net/http's client stops at
// 5; past this many, the origin is cut off with 502.
const maxInterim = 10

// readResponseHead reads the final response head, relaying interim (1xx)
// responses other than 100 and 101. Interim responses count against the
// response-head timeout, and at most maxInterim are read. limit is the
// exchange's total deadline (mono; 0: none).
func (x *call) readResponseHead(up stream.Upstream, sent, limit time.Duration, hasBody bool) (*stream.Response, *Error) {
	headTimeout := timeout(x.sess.Override.ResponseHeader, x.srv.opts.Timeouts.ResponseHeader)
	// Wait a short while first; if the upstream is slow, start watching
	// the client so that a client that gives up cancels the request.
	waitShort := true
	watching := false
	defer func() {
		if watching {
			x.stopWatch(up)
		}
	}()
	for interim := 0; ; {
		from := x.headFrom(sent, hasBody)
		wait := headTimeout
		if waitShort && wait > watchAfter {
			wait = watchAfter
		}
		resp, err := up.ReadHead(x.sess.Request.Method, from, wait)
		if err != nil && up.Interrupted(stream.Read) {
			// The watcher or the body sender ended the exchange: the
			// cause is theirs (exchangeFailed).
			return nil, &Error{Side: Internal, Kind: KindOther, Status: 502, Where: "upstream wait interrupted", Err: err}
		}
		// A timeout before the head's own: the short wait, or one counted
		// from before the body was sent.
		now := mono.Now()
		early := err != nil && isTimeout(err) && now < x.headFrom(sent, hasBody)+headTimeout && (limit == 0 || now < limit)
		if early && !waitShort && hasBody {
			continue // the body was still being sent: the wait began later
		}
		if early && waitShort {
			waitShort = false
			// The client is watched once its body, if any, is sent (while
			// it sends one, it is there): by the body sender, if it is
			// still sending; else here.
			switch {
			case hasBody && x.body.state.CompareAndSwap(sending, watchWanted):
				// The body sender watches once it has sent the body. (It
				// may still be reading the client: only it may touch the
				// watch buffer meanwhile.)
			case hasBody:
				// The body sender has finished.
				if be := x.waitBody(up); be != nil && be.Side != Upstream {
					return nil, be
				}
				watching = x.startWatch(up)
			default:
				watching = x.startWatch(up)
			}
			continue
		}
		if err != nil {
			return nil, x.upstreamReadError(err)
		}
		st := resp.Status
		if st >= 200 || st == 101 {
			return resp, nil
		}
		// An origin that sends interim responses without end is cut off:
		// by number, and by the head timeout, which the reads alone would
		// not meet while bytes keep coming (raw reads see no deadline).
		if interim++; interim > maxInterim {
			x.srv.counters.UpstreamProtocol.Add(1)
			return nil, &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "upstream sent too many interim responses"}
		}
		if mono.Now() >= from+headTimeout {
			return nil, &Error{Side: Upstream, Kind: KindTimeout, Status: 504, Where: "upstream response header timeout"}
		}
		if st != 100 {
			// 103 Early Hints and others go to the client as they come.
			hop.StripMarked(resp.Header, resp.Conn)
			if err := x.ds.WriteInterim(st, resp.Reason, resp.Header); err != nil {
				return nil, &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "interim response head", Err: err}
			}
			if err := x.ds.Flush(); err != nil {
				return nil, downstreamWriteError(err)
			}
		}
	}
}

// headFrom is when the upstream's wait for the response head began: when
// the request was sent, or, for a request with a body, when the whole
// body was, and now while it is still being sent. A client that sends its
// body slowly then makes no upstream look late.
func (x *call) headFrom(sent time.Duration, hasBody bool) time.Duration {
	if !hasBody {
		return sent
	}
	if t := time.Duration(x.body.sentAt.Load()); t > 0 {
		return max(sent, t)
	}
	if x.body.running && !x.body.done.Load() && x.body.state.Load() != watching {
		return mono.Now() // still sending
	}
	return sent
}

func (x *call) upstreamReadError(err error) *Error {
	var pe stream.ProtocolError
	switch {
	case errors.As(err, &pe):
		x.srv.counters.UpstreamProtocol.Add(1)
		return &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "upstream response head", Err: err}
	case isTimeout(err):
		return &Error{Side: Upstream, Kind: KindTimeout, Status: 504, Where: "upstream response header timeout", Err: err}
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || isReset(err):
		return &Error{Side: Upstream, Kind: KindClosed, Status: 502, Where: "upstream closed before responding", Err: err}
	}
	return &Error{Side: Upstream, Kind: KindOther, Status: 502, Where: "upstream read", Err: err}
}

// relayResponseBody streams the response body downstream as it arrives,
// flushing each piece so that streams (SSE, long polls) are not held back.
func (x *call) relayResponseBody(up stream.Upstream) *Error {
	s := &x.sess
	ds := x.ds
	filter := x.srv.phases.ResponseBodyFilter
	for {
		data, rerr := up.ReadBody()
		if len(data) > 0 || (rerr == io.EOF && filter != nil) {
			if filter != nil {
				var err error
				if data, err = filter(s, data, rerr == io.EOF); err != nil {
					return asError(err, Internal, KindFilter, 502, "response body filter")
				}
			}
			data = x.webBody(data)
			if len(data) > 0 {
				if err := ds.WriteBody(data); err != nil {
					return downstreamWriteError(err)
				}
				s.Stats.BytesOut += int64(len(data))
			}
			if rerr == nil && !up.BodyBuffered() {
				if err := ds.Flush(); err != nil {
					return downstreamWriteError(err)
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return upstreamBodyError(rerr)
		}
	}
	if t := up.Trailer(); t.Len() > 0 {
		hop.CopyTrailers(&s.Response.Trailer, t)
	}
	if err := x.endWebBody(&s.Response.Trailer); err != nil {
		return downstreamWriteError(err)
	}
	return nil
}

func upstreamBodyError(err error) *Error {
	var pe stream.ProtocolError
	switch {
	case errors.As(err, &pe):
		return &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "upstream response body", Err: err}
	case isTimeout(err):
		return &Error{Side: Upstream, Kind: KindTimeout, Status: 504, Where: "upstream read timeout", Err: err}
	}
	return &Error{Side: Upstream, Kind: KindClosed, Status: 502, Where: "upstream response body", Err: err}
}
