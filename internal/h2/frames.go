package h2

import (
	"encoding/binary"
	"errors"
	"slices"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/straitproxy/strait/internal/mono"
)

// handle handles one frame.
func (c *conn) handle(f http2.Frame) error {
	if c.headersFor != nil {
		return connError{http2.ErrCodeProtocol, "a header block interrupted"}
	}
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.data(f)
	case *http2.SettingsFrame:
		return c.settings(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		if !c.frames.take(mono.Now()) {
			return c.flood("PING")
		}
		c.wmu.Lock()
		c.fr.WritePing(true, f.Data)
		c.flushLocked()
		c.wmu.Unlock()
	case *http2.WindowUpdateFrame:
		return c.windowUpdate(f)
	case *http2.RSTStreamFrame:
		return c.rstStream(f)
	case *http2.PriorityFrame:
		if !c.frames.take(mono.Now()) {
			return c.flood("PRIORITY")
		}
		if f.StreamDep == f.StreamID {
			c.resetStream(f.StreamID, http2.ErrCodeProtocol)
		}
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.closing = true
		c.mu.Unlock()
	case *http2.PushPromiseFrame:
		return connError{http2.ErrCodeProtocol, "PUSH_PROMISE from a client"}
	}
	// Unknown frame types are ignored (RFC 9113 §4.1).
	return nil
}

func (c *conn) flood(what string) error {
	c.ctr.FrameFloods.Add(1)
	return connError{http2.ErrCodeEnhanceYourCalm, "too many " + what + " frames"}
}

func (c *conn) settings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		c.settingsAt = 0
		return nil
	}
	if !c.frames.take(mono.Now()) {
		return c.flood("SETTINGS")
	}
	var err error
	c.wmu.Lock()
	f.ForeachSetting(func(s http2.Setting) error {
		if e := s.Valid(); e != nil {
			var ce http2.ConnectionError
			if errors.As(e, &ce) {
				err = connError{http2.ErrCode(ce), "invalid setting " + s.String()}
			}
			return e
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			// Every stream's send window moves by the difference (RFC
			// 9113 §6.9.2).
			delta := int64(s.Val) - int64(c.peerWindow)
			c.peerWindow = int32(s.Val)
			c.mu.Lock()
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > maxWindow {
					err = connError{http2.ErrCodeFlowControl, "a stream's window over 2^31-1"}
				}
			}
			c.mu.Unlock()
			c.wcond.Broadcast()
		case http2.SettingMaxFrameSize:
			c.peerFrameSize = s.Val
		case http2.SettingMaxHeaderListSize:
			c.peerMaxList = s.Val
		}
		return nil
	})
	if err == nil {
		c.fr.WriteSettingsAck()
		c.flushLocked()
	}
	c.wmu.Unlock()
	return err
}

func (c *conn) windowUpdate(f *http2.WindowUpdateFrame) error {
	var s *stream
	if f.StreamID != 0 {
		var state streamState
		if s, state = c.stream(f.StreamID); state == idle {
			return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream"}
		}
		if s == nil {
			return nil
		}
	}
	c.wmu.Lock()
	window := &c.sendWindow
	if s != nil {
		window = &s.sendWindow
	}
	*window += int64(f.Increment)
	over := *window > maxWindow
	c.wcond.Broadcast()
	c.wmu.Unlock()
	switch {
	case over && s == nil:
		return connError{http2.ErrCodeFlowControl, "connection window over 2^31-1"}
	case over:
		c.resetStream(s.id, http2.ErrCodeFlowControl)
	}
	return nil
}

func (c *conn) rstStream(f *http2.RSTStreamFrame) error {
	s, state := c.stream(f.StreamID)
	if state == idle {
		return connError{http2.ErrCodeProtocol, "RST_STREAM on an idle stream"}
	}
	if s == nil {
		return nil
	}
	s.peerReset(f.ErrCode)
	c.dropPending(s)
	if !s.finished() {
		c.ctr.ClientResets.Add(1)
	}
	if !s.finished() && !c.resets.take(mono.Now()) {
		c.ctr.ResetFloods.Add(1)
		return connError{http2.ErrCodeEnhanceYourCalm, "too many streams reset"}
	}
	return nil
}

// noteResetLocked remembers that strait reset stream id, and wasReset whether
// it did, among the last few: frames the client sent on it before it saw
// the reset are dropped, not answered (RFC 9113 §5.1).
// c.wmu is held: the resets are written under it.
func (c *conn) noteResetLocked(id uint32) {
	c.resetIDs[c.resetNext%uint32(len(c.resetIDs))] = id
	c.resetNext++
}

func (c *conn) wasReset(id uint32) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return id != 0 && slices.Contains(c.resetIDs[:], id)
}

// streamState is what a stream id names for the connection.
type streamState uint8

func (c *conn) stream(id uint32) (*stream, streamState) {
	if id%2 == 0 {
		// Even ids are the server's, and strait opens none.
		if id > 0 {
			return nil, idle
		}
	}
	if id > c.maxClientID {
		return nil, idle
	}
	c.mu.Lock()
	s := c.streams[id]
	c.mu.Unlock()
	if s == nil {
		return nil, closed
	}
	return s, open
}

// headerFrame is a HEADERS or CONTINUATION frame, parsed here rather than
// by the Framer, which allocates a frame for each.
type headerFrame struct {
	id                    uint32
	endStream, endHeaders bool
	hasPriority           bool
	dep                   uint32
	frag                  []byte
}

// readHeaderFrame reads and handles a HEADERS or CONTINUATION frame whose
// header fh was read. Its payload is read in place from the read buffer.
func (c *conn) readHeaderFrame(fh http2.FrameHeader) error {
	n := int(fh.Length)
	br := c.reader()
	p, err := br.Peek(n)
	if err != nil {
		return err
	}
	defer br.Discard(n)
	if fh.StreamID == 0 {
		return connError{http2.ErrCodeProtocol, fh.Type.String() + " on stream 0"}
	}
	f := headerFrame{id: fh.StreamID, endHeaders: fh.Flags.Has(http2.FlagHeadersEndHeaders)}
	if fh.Type == http2.FrameContinuation {
		if c.headersFor == nil || c.headersFor.id != fh.StreamID {
			return connError{http2.ErrCodeProtocol, "CONTINUATION without HEADERS"}
		}
		if len(p) == 0 && !f.endHeaders && !c.frames.take(mono.Now()) {
			return c.flood("empty CONTINUATION")
		}
		return c.fragment(p, f.endHeaders)
	}
	if c.headersFor != nil {
		return connError{http2.ErrCodeProtocol, "a header block interrupted"}
	}
	f.endStream = fh.Flags.Has(http2.FlagHeadersEndStream)
	pad := 0
	if fh.Flags.Has(http2.FlagHeadersPadded) {
		if len(p) < 1 {
			return connError{http2.ErrCodeFrameSize, "HEADERS too short for its padding"}
		}
		pad, p = int(p[0]), p[1:]
	}
	if fh.Flags.Has(http2.FlagHeadersPriority) {
		if len(p) < 5 {
			return connError{http2.ErrCodeFrameSize, "HEADERS too short for its priority"}
		}
		f.hasPriority, f.dep, p = true, binary.BigEndian.Uint32(p)&(1<<31-1), p[5:]
	}
	if pad > len(p) {
		return connError{http2.ErrCodeProtocol, "HEADERS padding longer than its payload"}
	}
	f.frag = p[:len(p)-pad]
	return c.headers(&f)
}

func (c *conn) headers(f *headerFrame) error {
	id := f.id
	s, state := c.stream(id)
	c.d.reset()
	switch {
	case state == open:
		// Trailers: the request's last header section.
		c.trailer = true
		if s.remoteDone() {
			// After the client ended its side: a stream error, once the
			// block is decoded.
			s.lateHeaders = true
		} else if !f.endStream {
			return connError{http2.ErrCodeProtocol, "trailers without END_STREAM"}
		}
	case state == closed && c.wasReset(id):
		// Trailers the client sent before it saw strait's RST_STREAM
		// (RFC 9113 §5.1): decoded, to keep the HPACK state, and
		// dropped.
		s = c.newStream(id)
		s.lateHeaders, s.ignore = true, true
		c.trailer = true
	case state == closed:
		return connError{http2.ErrCodeStreamClosed, "HEADERS on a closed stream"}
	case id%2 == 0:
		return connError{http2.ErrCodeProtocol, "HEADERS with an even stream id"}
	default:
		if len(f.frag) == 0 && !f.endHeaders && !c.frames.take(mono.Now()) {
			return c.flood("empty HEADERS")
		}
		c.maxClientID = id
		s = c.newStream(id)
		s.endStream = f.endStream
		if f.hasPriority && f.dep == id {
			// A stream that depends on itself (RFC 9113 §5.3.1): its
			// block is decoded, to keep the HPACK state, and the stream
			// is reset, never started.
			c.d.bad = "stream depends on itself"
		}
		c.trailer = false
		c.mu.Lock()
		s.refused = c.closing
		c.mu.Unlock()
	}
	c.headersFor = s
	c.blockSize = 0
	return c.fragment(f.frag, f.endHeaders)
}

// fragment decodes a piece of a header block.
func (c *conn) fragment(b []byte, end bool) error {
	c.blockSize += len(b)
	if c.blockSize > c.maxBlock() {
		return connError{http2.ErrCodeEnhanceYourCalm, "header block too large"}
	}
	if _, err := c.dec.Write(b); err != nil {
		return connError{http2.ErrCodeCompression, err.Error()}
	}
	if !end {
		return nil
	}
	if err := c.dec.Close(); err != nil {
		return connError{http2.ErrCodeCompression, err.Error()}
	}
	s := c.headersFor
	c.headersFor = nil
	if c.trailer {
		return c.trailersDone(s)
	}
	return c.requestDone(s)
}

// emit is the HPACK decoder's: one decoded field of the block being read.
func (c *conn) emit(f hpack.HeaderField) {
	s := c.headersFor
	if s == nil {
		return
	}
	if s.lateHeaders {
		return
	}
	if c.trailer {
		if c.d.field(f, true, int(c.lim.MaxHeaderListSize)) {
			s.trailer.Add(f.Name, f.Value)
		}
		return
	}
	if c.d.field(f, false, int(c.lim.MaxHeaderListSize)) {
		s.hdr.Add(f.Name, f.Value)
	}
}

// requestDone starts a request whose head is read whole.
func (c *conn) requestDone(s *stream) error {
	c.d.finish()
	if s.endStream && c.d.contentLength > 0 && c.d.bad == "" {
		c.d.bad = "content-length with no body"
	}
	c.ctr.Streams.Add(1)
	c.mu.Lock()
	over := c.active+len(c.pending) >= int(c.lim.MaxConcurrentStreams)
	c.mu.Unlock()
	switch {
	case s.refused:
		c.resetStream(s.id, http2.ErrCodeRefusedStream)
		return nil
	case c.d.bad != "":
		c.ctr.MalformedStream.Add(1)
		return c.refuse(s, http2.ErrCodeProtocol)
	case over:
		// A stream holds its slot until its handler is done, even once
		// reset (CVE-2025-8671): what is over is refused.
		c.ctr.RefusedStreams.Add(1)
		return c.refuse(s, http2.ErrCodeRefusedStream)
	}
	s.setHead(&c.d)
	if c.d.tooLarge {
		c.ctr.HeaderTooLarge.Add(1)
		s.tooLarge = true
	}
	c.mu.Lock()
	c.streams[s.id] = s
	c.mu.Unlock()
	if s.endStream {
		s.remoteEnded()
	}
	c.pending = append(c.pending, s)
	return nil
}

// refuse resets a stream that is not started, at a token of the resets'
// bucket; without one the connection ends.
func (c *conn) refuse(s *stream, code http2.ErrCode) error {
	if !c.resets.take(mono.Now()) {
		c.ctr.ResetFloods.Add(1)
		return connError{http2.ErrCodeEnhanceYourCalm, "too many streams refused"}
	}
	c.resetStream(s.id, code)
	return nil
}

func (c *conn) trailersDone(s *stream) error {
	if s.ignore {
		c.keep(s)
		return nil
	}
	if s.lateHeaders {
		s.lateHeaders = false
		c.resetStream(s.id, http2.ErrCodeStreamClosed)
		return nil
	}
	if c.d.bad != "" || c.d.tooLarge {
		c.resetStream(s.id, http2.ErrCodeProtocol)
		return nil
	}
	if !s.remoteEnded() {
		c.resetStream(s.id, http2.ErrCodeProtocol)
	}
	return nil
}

// start starts the handlers of the streams opened since the last read
// buffer emptied: a stream reset in the same batch (a rapid reset) never
// reaches a handler, nor the origin.
func (c *conn) start() {
	for i, s := range c.pending {
		c.pending[i] = nil
		if s.isReset() {
			c.forget(s)
			continue
		}
		c.mu.Lock()
		c.active++
		c.mu.Unlock()
		c.srv.workers.Run((*streamTask)(s))
	}
	c.pending = c.pending[:0]
}

func (c *conn) dropPending(s *stream) {
	for i, p := range c.pending {
		if p == s {
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			c.forget(s)
			return
		}
	}
}

// forget removes a stream whose handler never started from the
// connection, and keeps it for reuse.
func (c *conn) forget(s *stream) {
	c.mu.Lock()
	if c.streams[s.id] == s {
		delete(c.streams, s.id)
		if len(c.streams) == 0 {
			c.idleFrom = mono.Now()
		}
	}
	c.drained.Broadcast()
	c.kickLocked()
	c.mu.Unlock()
	c.keep(s)
}

// maxFree bounds the streams a connection keeps for reuse.
const maxFree = 64

// recycle takes back the streams whose handlers are done. Only the reader
// calls it, between frames, when it holds no stream of its own: nothing
// else refers to a stream once its handler is done (a timer it set only
// wakes waits, which look again).
func (c *conn) recycle() {
	c.mu.Lock()
	done := c.finished
	c.finished, c.recycling = c.recycling[:0], done
	c.mu.Unlock()
	for i, s := range done {
		c.keep(s)
		done[i] = nil
	}
}

func (c *conn) keep(s *stream) {
	if len(c.free) < maxFree {
		s.clear()
		c.free = append(c.free, s)
	}
}

// newStream returns a stream for id, reused if one is kept.
func (c *conn) newStream(id uint32) *stream {
	var s *stream
	if n := len(c.free); n > 0 {
		s, c.free = c.free[n-1], c.free[:n-1]
	} else {
		s = &stream{c: c}
		s.cond.L = &s.mu
	}
	s.id, s.began, s.expect = id, mono.Now(), -1
	s.recvWindow = int64(c.lim.StreamWindow)
	c.wmu.Lock()
	s.sendWindow = int64(c.peerWindow)
	c.wmu.Unlock()
	return s
}

func (c *conn) data(f *http2.DataFrame) error {
	n := int64(f.Length) // padding included (RFC 9113 §6.9.1)
	c.mu.Lock()
	c.recvWindow -= n
	over := c.recvWindow < 0
	c.mu.Unlock()
	if over {
		return connError{http2.ErrCodeFlowControl, "DATA over the connection window"}
	}
	s, state := c.stream(f.StreamID)
	switch {
	case state == idle:
		return connError{http2.ErrCodeProtocol, "DATA on an idle stream"}
	case s == nil && c.wasReset(f.StreamID):
		// Sent before the client saw strait's RST_STREAM: dropped, its
		// bytes given back to the connection's window.
		c.giveBack(nil, n)
		return nil
	case s == nil || s.remoteDone():
		// Closed, or half-closed (remote): the bytes count against the
		// connection's window, which is given back. Each reset costs the
		// client a frame token.
		c.giveBack(nil, n)
		if !c.frames.take(mono.Now()) {
			return c.flood("DATA on closed streams")
		}
		c.resetStream(f.StreamID, http2.ErrCodeStreamClosed)
		return nil
	}
	if len(f.Data()) == 0 && !f.StreamEnded() && !c.frames.take(mono.Now()) {
		return c.flood("empty DATA")
	}
	if err := s.received(f.Data(), n, f.StreamEnded()); err != nil {
		c.giveBack(nil, n)
		c.resetStream(s.id, err.(http2.StreamError).Code)
		return nil
	}
	return nil
}

// giveBack returns n bytes of window the client used: the connection's,
// and if s is not nil, the stream's. Updates go once half a window is
// owed, so a stream of small pieces does not send one per piece.
func (c *conn) giveBack(s *stream, n int64) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.consumed += n
	if c.consumed >= int64(c.lim.ConnWindow)/2 {
		c.fr.WriteWindowUpdate(0, uint32(c.consumed))
		c.recvReturn(c.consumed)
		c.consumed = 0
		c.flushLocked()
	}
	if s == nil {
		return
	}
	s.consumed += n
	if s.consumed >= int64(c.lim.StreamWindow)/2 && !s.remoteDone() {
		c.fr.WriteWindowUpdate(s.id, uint32(s.consumed))
		s.returnWindow(s.consumed)
		s.consumed = 0
		c.flushLocked()
	}
}

// recvReturn gives the connection's receive window back n bytes.
func (c *conn) recvReturn(n int64) {
	c.mu.Lock()
	c.recvWindow += n
	c.mu.Unlock()
}

// resetStream sends RST_STREAM for what the client did, and ends the
// stream's waits. A reset of a stream whose response is not done costs
// the client a token as its own resets do (CVE-2025-8671: a client can
// make strait reset streams whose upstream work goes on).
func (c *conn) resetStream(id uint32, code http2.ErrCode) {
	c.wmu.Lock()
	c.noteResetLocked(id)
	c.fr.WriteRSTStream(id, code)
	c.flushLocked()
	c.wmu.Unlock()
	c.mu.Lock()
	s := c.streams[id]
	c.mu.Unlock()
	if s != nil {
		if !s.finished() && !c.resets.take(mono.Now()) {
			c.calm = true
		}
		s.localReset(code)
		c.dropPending(s)
	}
}
