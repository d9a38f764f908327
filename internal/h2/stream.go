package h2

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/internal/sockio"
	istream "github.com/straitproxy/strait/internal/stream"
	"github.com/straitproxy/strait/internal/tunnel"
)

// stream is one request of an HTTP/2 connection, and its response: the
// istream.Downstream its handler serves.
type stream struct {
	// These outlive a request: a timer that fired as the stream was
	// finished may still take mu (wake) while clear resets the rest.
	mu    sync.Mutex
	cond  sync.Cond
	timer *time.Timer
	c     *conn

	streamFields
}

// streamFields is what a stream holds for one request.
type streamFields struct {
	id    uint32
	began time.Duration // mono

	head    istream.RequestHead
	hdr     header.Header
	trailer header.Header
	arena   []byte // the head's pseudo-fields and cookie

	// Set by the connection's reader while the head is read.
	endStream   bool // the head came with END_STREAM
	refused     bool // opened after GOAWAY
	lateHeaders bool // HEADERS after the client ended its side
	tooLarge    bool // its header list is over the limit: 431
	ignore      bool // trailers of a stream strait reset: decoded and dropped
	expect100   bool // the client waits for 100 Continue

	// The request body, under mu.
	buf, spare []byte // received, not yet read; the piece read last
	remoteEnd  bool   // END_STREAM came
	eof        bool   // the body was read to its end
	rst        http2.ErrCode
	isRst      bool // reset, by either side
	dropBody   bool // the handler is done: what comes of the body is not kept
	gone       bool // the connection ended
	got        int64
	expect     int64 // content-length; -1: none
	recvWindow int64 // what the client may still send
	intr       [2]atomic.Bool
	done       atomic.Bool // the response is complete

	// The response: under c.wmu, or the handler's alone.
	sendWindow int64
	consumed   int64 // bytes read, their window not yet given back
	answered   bool
	ended      bool // END_STREAM (or RST_STREAM) sent
	length     int64
	sent       int64
	headReq    bool
	extConnect bool // an extended CONNECT (RFC 8441): a tunnel once answered 2xx
	continued  bool
	hbuf       []byte
	lower      []byte
}

var _ istream.Downstream = (*stream)(nil)

// clear readies a finished stream for reuse, keeping its buffers (the
// request body's only while small).
func (s *stream) clear() {
	if s.timer != nil {
		s.timer.Stop()
	}
	hdr, trailer := s.hdr, s.trailer
	hdr.Reset()
	trailer.Reset()
	buf, spare := s.buf[:0], s.spare[:0]
	if cap(buf) > 4<<10 || cap(spare) > 4<<10 {
		buf, spare = nil, nil
	}
	s.mu.Lock()
	s.streamFields = streamFields{hdr: hdr, trailer: trailer, arena: s.arena[:0], buf: buf, spare: spare,
		hbuf: s.hbuf[:0], lower: s.lower[:0]}
	s.mu.Unlock()
}

// setHead makes the request head from the decoded fields.
func (s *stream) setHead(d *decoded) {
	c := s.c
	// One arena, grown once to its size first, so that no slice taken
	// from it is left in an old array.
	need := len(d.method) + len(d.authority) + len(d.path) + len(d.host) + len(d.protocol)
	if cap(s.arena) < need {
		s.arena = make([]byte, 0, need)
	}
	s.arena = s.arena[:0]
	keep := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		start := len(s.arena)
		s.arena = append(s.arena, b...)
		return s.arena[start:len(s.arena):len(s.arena)]
	}
	h := &s.head
	h.Method, h.Path = keep(d.method), keep(d.path)
	h.Scheme, h.Proto = c.scheme, "HTTP/2.0"
	if d.authority != nil {
		h.Authority, h.AuthorityFirst = keep(d.authority), true
	} else {
		h.Authority = keep(d.host)
	}
	if d.hasCookie {
		s.hdr.AddBytes([]byte("cookie"), d.cookies)
	}
	h.Header = &s.hdr
	h.Upgrade, h.Tunnel = nil, d.protocol != nil
	if d.protocol != nil {
		s.tunnelFor(d)
	}
	s.expect100 = header.EqualFold(s.hdr.Get("expect"), "100-continue")
	s.expect = d.contentLength
	switch {
	case s.endStream, s.extConnect: // a tunnel's bytes are no body
		h.ContentLength = 0
	case d.contentLength >= 0:
		h.ContentLength = d.contentLength
	default:
		h.ContentLength = -1
	}
	h.Began, h.Read = s.began, mono.Now()
	h.Client, h.Local, h.TLS = c.info.Client, c.info.Local, c.info.TLS
	s.headReq = string(h.Method) == "HEAD"
}

type streamTask stream

// Run serves the stream on a worker, then ends it.
func (t *streamTask) Run() {
	s := (*stream)(t)
	var end istream.End
	if s.tooLarge {
		s.c.srv.Handler.Reject(s, &istream.Rejection{Status: 431, Detail: "request header fields too large"})
	} else {
		end = s.c.srv.Handler.Serve(s)
	}
	s.finish(end)
}

// finish ends the response, if the handler left it open, and the stream.
func (s *stream) finish(end istream.End) {
	c := s.c
	c.wmu.Lock()
	s.mu.Lock()
	remoteEnd, reset := s.remoteEnd, s.isRst
	s.mu.Unlock()
	if !s.ended && !reset {
		if end == istream.Done && s.answered {
			c.fr.WriteData(s.id, true, nil)
		} else {
			code := http2.ErrCodeInternal
			if end == istream.Gone {
				code = http2.ErrCodeCancel
			}
			c.fr.WriteRSTStream(s.id, code)
			c.noteResetLocked(s.id)
			reset = true
		}
		s.ended = true
	}
	if !remoteEnd && !reset {
		// The response is whole; the rest of the request body is not
		// wanted (RFC 9113 §8.1).
		c.fr.WriteRSTStream(s.id, http2.ErrCodeNo)
		c.noteResetLocked(s.id)
	}
	c.flushSoon()
	c.wmu.Unlock()
	// Body bytes never read go back to the connection's window, and so
	// do those that come from now on (received).
	s.mu.Lock()
	unread := len(s.buf)
	s.buf, s.dropBody = s.buf[:0], true
	s.mu.Unlock()
	if unread > 0 {
		c.giveBack(nil, int64(unread))
	}
	s.done.Store(true)
	s.mu.Lock()
	if s.timer != nil {
		s.timer.Stop()
	}
	s.mu.Unlock()
	c.mu.Lock()
	if c.streams[s.id] == s {
		delete(c.streams, s.id)
		if len(c.streams) == 0 {
			c.idleFrom = mono.Now()
		}
	}
	c.active--
	c.finished = append(c.finished, s)
	c.drained.Broadcast()
	c.kickLocked()
	c.mu.Unlock()
}

// finished reports whether the response is complete.
func (s *stream) finished() bool { return s.done.Load() }

// received takes DATA from the reader: n bytes of window used (padding
// included), data the body's bytes.
func (s *stream) received(data []byte, n int64, end bool) error {
	s.mu.Lock()
	if s.recvWindow -= n; s.recvWindow < 0 {
		s.mu.Unlock()
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeFlowControl}
	}
	s.got += int64(len(data))
	if s.expect >= 0 && (s.got > s.expect || end && s.got != s.expect) {
		s.mu.Unlock()
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeProtocol}
	}
	if s.isRst || s.dropBody {
		s.mu.Unlock()
		s.c.giveBack(nil, n)
		return nil
	}
	s.buf = append(s.buf, data...)
	if end {
		s.remoteEnd = true
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	if pad := n - int64(len(data)); pad > 0 {
		s.c.giveBack(s, pad)
	}
	return nil
}

// returnWindow gives the stream's receive window back n bytes (under
// c.wmu, which the caller holds).
func (s *stream) returnWindow(n int64) {
	s.mu.Lock()
	s.recvWindow += n
	s.mu.Unlock()
}

// remoteEnded marks the request's end (END_STREAM), and reports false
// if its body is shorter than its content-length said.
func (s *stream) remoteEnded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.remoteEnd = true
	s.cond.Broadcast()
	return s.expect < 0 || s.got == s.expect
}

func (s *stream) remoteDone() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remoteEnd || s.isRst
}

func (s *stream) isReset() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.isRst
}

// peerReset is RST_STREAM from the client; localReset one strait sent.
func (s *stream) peerReset(code http2.ErrCode) { s.reset(code) }

func (s *stream) localReset(code http2.ErrCode) {
	s.reset(code)
	s.c.wmu.Lock()
	s.ended = true
	s.c.wmu.Unlock()
}

func (s *stream) reset(code http2.ErrCode) {
	s.mu.Lock()
	if !s.isRst {
		s.isRst, s.rst = true, code
	}
	s.mu.Unlock()
	s.wake()
}

func (s *stream) connGone() {
	s.mu.Lock()
	s.gone = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

// errStreamReset is what waits on a stream the client reset, or whose
// connection ended, return: the client is gone.
var errStreamReset = fmt.Errorf("http2: stream reset or connection closed: %w", io.ErrUnexpectedEOF)

// waitLocked waits on s.cond until woken or deadline (mono), and reports
// false once the deadline has passed. s.mu is held.
func (s *stream) waitLocked(deadline time.Duration) bool {
	now := mono.Now()
	if now >= deadline {
		return false
	}
	s.armTimerLocked(deadline - now)
	s.cond.Wait()
	return true
}

// armTimerLocked has s.wake called after d, to end a wait at its
// deadline. s.mu is held.
func (s *stream) armTimerLocked(d time.Duration) {
	if s.timer == nil {
		s.timer = time.AfterFunc(d, s.wake)
	} else {
		s.timer.Reset(d)
	}
}

func (s *stream) wake() {
	s.mu.Lock()
	s.cond.Broadcast()
	s.mu.Unlock()
	c := s.c
	c.wmu.Lock()
	c.wcond.Broadcast()
	c.wmu.Unlock()
}

func (s *stream) Head() *istream.RequestHead { return &s.head }

// ReadBody returns what came of the body since the last call, waiting for
// some if none did.
func (s *stream) ReadBody() ([]byte, error) {
	return s.readBody(mono.Now() + s.c.srv.bodyTimeout())
}

// readBody is ReadBody, waiting until deadline (mono) at most.
func (s *stream) readBody(deadline time.Duration) ([]byte, error) {
	s.mu.Lock()
	for len(s.buf) == 0 && !s.remoteEnd && !s.isRst && !s.gone {
		if s.intr[istream.Read].Load() {
			s.mu.Unlock()
			return nil, sockio.ErrInterrupted
		}
		if !s.waitLocked(deadline) {
			s.mu.Unlock()
			return nil, fmt.Errorf("http2: request body: %w", os.ErrDeadlineExceeded)
		}
	}
	if len(s.buf) == 0 && (s.isRst || s.gone) {
		s.mu.Unlock()
		return nil, errStreamReset
	}
	piece := s.buf
	s.buf, s.spare = s.spare[:0], piece
	var err error
	if len(s.buf) == 0 && s.remoteEnd {
		s.eof, err = true, io.EOF
	}
	s.mu.Unlock()
	if len(piece) > 0 {
		s.c.giveBack(s, int64(len(piece)))
	}
	return piece, err
}

func (s *stream) BodyBuffered() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.buf) > 0 || s.remoteEnd
}

func (s *stream) BodyDone() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.eof || s.remoteEnd && len(s.buf) == 0 && s.head.ContentLength == 0
}

func (s *stream) Trailer() *header.Header { return &s.trailer }

func (s *stream) Share()   {}
func (s *stream) Unshare() {}

func (s *stream) Interrupt(d istream.Dir) {
	s.intr[d].Store(true)
	s.wake()
}

func (s *stream) Interrupted(d istream.Dir) bool { return s.intr[d].Load() }
func (s *stream) ClearInterrupt(d istream.Dir)   { s.intr[d].Store(false) }

// Continue sends 100 Continue to a client that waits for it.
func (s *stream) Continue() {
	if s.continued || s.answered || !s.expect100 {
		return
	}
	s.continued = true
	if _, err := s.WriteHead(&istream.ResponseHead{Status: 100}); err == nil {
		s.Flush()
	}
}

func (s *stream) WriteInterim(status int, reason []byte, h *header.Header) error {
	_, err := s.WriteHead(&istream.ResponseHead{Status: status, Reason: reason, Header: h})
	return err
}

var (
	errNoUpgrade    = fmt.Errorf("http2: no protocol switch on an HTTP/2 stream: %w", istream.ErrUnsendable)
	errInvalidField = fmt.Errorf("http2: a response field that HTTP/2 cannot carry: %w", istream.ErrUnsendable)
	errStreamEnded  = errors.New("http2: the stream has ended")
)

// WriteHead writes the response head (or an interim one) and reports
// whether a body follows: not for HEAD, 204 and 304 (RFC 9110 §6.4.1).
func (s *stream) WriteHead(h *istream.ResponseHead) (bool, error) {
	status := h.Status
	if status == 101 {
		if !s.extConnect {
			return false, errNoUpgrade
		}
		// The origin switched: over HTTP/2 that is a 200, and the
		// stream the tunnel (RFC 8441 §5). Its Sec-WebSocket-Accept
		// answers strait's key, not the client's.
		status = 200
		h.Header.Del("sec-websocket-accept")
	}
	b := appendStatus(s.hbuf[:0], status)
	b, s.lower, _ = appendHeaderOK(b, h.Header, s.lower)
	if b == nil {
		return false, errInvalidField
	}
	if h.Status == 101 {
		s.hbuf = b
		c := s.c
		c.wmu.Lock()
		err := s.writeHeadersLocked(b, false)
		s.answered, s.length, s.sent = err == nil, -1, 0
		c.wmu.Unlock()
		return false, err // the tunnel's bytes are no body of the proxy's
	}
	// A body of length 0 is none: END_STREAM goes on the head, as a
	// gRPC trailers-only response must (the gRPC spec's Trailers-Only).
	body := h.Status >= 200 && h.Status != 204 && h.Status != 304 && !s.headReq && h.Length != 0
	if h.Status >= 200 && h.Status != 204 && h.Length >= 0 {
		var num [20]byte
		b = appendField(b, []byte("content-length"), appendUint(num[:0], uint64(h.Length)))
	}
	s.hbuf = b
	final := h.Status >= 200
	end := final && !body
	c := s.c
	c.wmu.Lock()
	err := s.writeHeadersLocked(b, end)
	if err == nil && final {
		s.answered, s.length, s.sent = true, h.Length, 0
		if end {
			s.ended = true
		}
	}
	c.wmu.Unlock()
	if end {
		s.done.Store(true)
	}
	return body, err
}

func appendHeaderOK(b []byte, h *header.Header, lower []byte) ([]byte, []byte, bool) {
	b, lower, ok := appendHeader(b, h, lower, nil)
	if !ok {
		return nil, lower, false
	}
	return b, lower, true
}

func appendUint(b []byte, v uint64) []byte {
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + v%10)
		if v /= 10; v == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}

// writeHeadersLocked writes a header block, in CONTINUATION frames past
// the client's frame size. c.wmu is held.
func (s *stream) writeHeadersLocked(block []byte, end bool) error {
	c := s.c
	if err := s.writableLocked(); err != nil {
		return err
	}
	limit := int(c.peerFrameSize)
	first := block
	if len(first) > limit {
		first = block[:limit]
	}
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: first, EndStream: end, EndHeaders: len(first) == len(block)})
	for rest := block[len(first):]; len(rest) > 0; {
		n := min(len(rest), limit)
		c.fr.WriteContinuation(s.id, n == len(rest), rest[:n])
		rest = rest[n:]
	}
	return c.werr
}

// writableLocked reports why nothing more may be written on the stream.
func (s *stream) writableLocked() error {
	if s.c.werr != nil {
		return s.c.werr
	}
	if s.ended {
		return errStreamEnded
	}
	s.mu.Lock()
	rst := s.isRst
	s.mu.Unlock()
	if rst {
		return errStreamReset
	}
	return nil
}

// WriteBody writes DATA as the flow-control windows allow, waiting for
// them to open, within the write timeout. The frame that completes a body
// of known length ends the stream.
func (s *stream) WriteBody(p []byte) error {
	c := s.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	deadline := mono.Now() + c.srv.writeTimeout()
	for len(p) > 0 {
		if err := s.writableLocked(); err != nil {
			return err
		}
		if s.sendWindow <= 0 || c.sendWindow <= 0 {
			if s.intr[istream.Write].Load() {
				return sockio.ErrInterrupted
			}
			if !s.waitWindowLocked(deadline) {
				return fmt.Errorf("http2: flow-control window: %w", os.ErrDeadlineExceeded)
			}
			continue
		}
		n := int64(len(p))
		n = min(n, s.sendWindow, c.sendWindow, int64(c.peerFrameSize))
		end := s.length >= 0 && s.sent+n == s.length
		c.fr.WriteData(s.id, end, p[:n])
		s.sendWindow -= n
		c.sendWindow -= n
		s.sent += n
		p = p[n:]
		if end {
			s.ended = true
			s.done.Store(true)
		}
	}
	return c.werr
}

// waitWindowLocked waits on c.wcond for a window to open, until deadline
// (mono); false once it has passed. c.wmu is held.
func (s *stream) waitWindowLocked(deadline time.Duration) bool {
	now := mono.Now()
	if now >= deadline {
		return false
	}
	// What was written goes out first: the client opens the window
	// only for what it got.
	s.c.flushLocked()
	s.mu.Lock()
	s.armTimerLocked(deadline - now)
	s.mu.Unlock()
	s.c.wcond.Wait()
	return true
}

// Flush has what was written sent soon (conn.flushSoon).
func (s *stream) Flush() error {
	c := s.c
	c.wmu.Lock()
	c.flushSoon()
	err := c.werr
	c.wmu.Unlock()
	return err
}

// EndBody ends the stream: with the trailer fields as a last HEADERS, or
// an empty DATA frame.
func (s *stream) EndBody(trailer *header.Header) error {
	c := s.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if s.ended {
		return nil
	}
	if trailer != nil && trailer.Len() > 0 {
		b, lower, ok := appendHeader(s.hbuf[:0], trailer, s.lower, nil)
		s.lower = lower
		if !ok {
			return errInvalidField
		}
		s.hbuf = b
		if err := s.writeHeadersLocked(b, true); err != nil {
			return err
		}
	} else {
		if err := s.writableLocked(); err != nil {
			return err
		}
		c.fr.WriteData(s.id, true, nil)
	}
	s.ended = true
	s.done.Store(true)
	return c.werr
}

// CloseAfter does nothing: an HTTP/2 connection goes on after any
// response.
func (s *stream) CloseAfter() {}

func (s *stream) CanWatch() bool { return true }

// Watch waits until the client resets the stream or leaves (and tells
// gone), or the watch is interrupted.
func (s *stream) Watch(gone istream.ClientGoneNotifier) {
	s.mu.Lock()
	for !s.intr[istream.Read].Load() && !s.isRst && !s.gone {
		s.cond.Wait()
	}
	left := s.isRst || s.gone
	s.mu.Unlock()
	if left {
		gone.ClientGone()
	}
}

// Tunnel is never called: an HTTP/2 request carries no Upgrade.
func (s *stream) Tunnel(up istream.Upstream, idle time.Duration) tunnel.Result {
	nc, fromUpstream := up.Detach()
	if !s.extConnect || nc == nil {
		up.Close()
		return tunnel.Result{}
	}
	local, remote := net.TCPAddrFromAddrPort(s.c.info.Local), net.TCPAddrFromAddrPort(s.c.info.Client)
	return tunnel.Relay(&tunnelConn{s: s, local: local, remote: remote}, nc, nil, fromUpstream, idle)
}

// tunnelFor makes an extended CONNECT (RFC 8441) the request an HTTP/1.1
// origin knows for it: a GET asking to upgrade to :protocol, with, for a
// WebSocket, the Sec-WebSocket-Key HTTP/2 does without (RFC 8441 §5).
func (s *stream) tunnelFor(d *decoded) {
	start := len(s.arena)
	s.arena = append(s.arena, d.protocol...)
	s.head.Upgrade = s.arena[start:len(s.arena):len(s.arena)]
	s.head.Method = []byte("GET")
	s.extConnect = true
	if header.EqualFold(d.protocol, "websocket") && len(s.hdr.Get("sec-websocket-key")) == 0 {
		var key [16]byte
		rand.Read(key[:])
		s.hdr.Add("sec-websocket-key", base64.StdEncoding.EncodeToString(key[:]))
	}
}
