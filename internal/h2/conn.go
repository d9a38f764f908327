package h2

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/internal/park"
	"github.com/straitproxy/strait/internal/sockio"
)

// ClientPreface is what an HTTP/2 client sends first (RFC 9113 §3.4).
const ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

const (
	defaultWindow = 65535 // the protocol's initial windows
	maxWindow     = 1<<31 - 1
	frameSize     = 16384 // strait's SETTINGS_MAX_FRAME_SIZE: the default
)

// conn is one HTTP/2 connection from a client. Its goroutine (serve) reads
// and handles every frame; each request runs on a worker of its own
// (stream). Frames are written by whichever goroutine has something to
// say, under wmu, into one buffered writer.
type conn struct {
	srv    *Server
	ctr    *Counters
	lim    Limits
	nc     net.Conn
	info   Conn
	br     *bufio.Reader // nil while parked
	src    io.Reader     // what br reads: nc, after pre
	pre    *bytes.Reader // bytes read before the connection came here
	under  *sockio.Underlay
	wait   park.Waiter
	fd     int32 // the socket's descriptor, -1 if unknown
	fr     *http2.Framer
	dec    *hpack.Decoder
	scheme string

	// Reader's state (serve's goroutine only).
	maxClientID uint32 // the highest stream id the client opened
	headersFor  *stream
	trailer     bool // the header block being read is a trailer section
	blockSize   int  // bytes of the header block so far
	d           decoded
	pending     []*stream // opened, to be started once the read buffer is empty
	resets      bucket
	frames      bucket
	calm        bool // the client made strait reset too many streams

	gotSettings bool // the client's first SETTINGS came
	idleNoted   bool // wait.IdleSince is when its last stream ended
	kicked      atomic.Bool
	kickTimer   *time.Timer // under mu
	readable    bool        // the parker saw the socket readable: read before waiting again
	settingsAt  time.Duration
	idleSet     bool
	rdl         sockio.Deadline // the read deadline (under mu)

	free      []*stream // streams to reuse (reader's)
	recycling []*stream // the last finished list, to swap in (reader's)

	mu         sync.Mutex // guards streams, active, closing, recvWindow, finished
	streams    map[uint32]*stream
	finished   []*stream // streams whose handlers are done, for recycle
	recvWindow int64     // conn-level: what the client may still send
	active     int       // streams whose handler has not finished
	closing    bool      // GOAWAY sent or the connection failed: no new streams
	drained    sync.Cond

	// Writer's state, under wmu.
	wmu           sync.Mutex
	wcond         sync.Cond     // streams waiting for send window
	bw            *bufio.Writer // nil while parked
	sendWindow    int64         // conn-level: what strait may still send
	peerWindow    int32         // the client's SETTINGS_INITIAL_WINDOW_SIZE
	peerFrameSize uint32
	peerMaxList   uint32
	wdl           sockio.Deadline
	werr          error // the connection failed writing: every write fails
	goneAway      bool
	flushQueued   bool       // a flushTask will flush
	resetIDs      [16]uint32 // streams strait reset last (noteResetLocked)
	resetNext     uint32
	consumed      int64 // conn-level bytes read by handlers, not yet returned

}

func newConn(srv *Server, cn Conn) *conn {
	c := &conn{srv: srv, nc: cn.NC, info: cn, ctr: srv.Counters, lim: srv.Limits.withDefaults()}
	if c.ctr == nil {
		c.ctr = new(Counters)
	}
	c.scheme = "http"
	if cn.TLS != nil {
		c.scheme = "https"
	}
	c.src = cn.NC
	if len(cn.Read) > 0 {
		c.pre = bytes.NewReader(cn.Read)
		c.src = io.MultiReader(c.pre, cn.NC)
	}
	c.under = cn.Under
	fd := sockio.FD(cn.NC)
	if cn.Under != nil {
		fd = sockio.FD(cn.Under)
	}
	c.fd = fd
	c.wait.Init(fd, c)
	c.fr = http2.NewFramer(bufWriter{c}, bufReader{c})
	c.fr.SetMaxReadFrameSize(frameSize)
	c.fr.SetReuseFrames()
	c.dec = hpack.NewDecoder(4096, c.emit)
	c.dec.SetMaxStringLength(int(c.lim.MaxHeaderListSize))
	c.streams = make(map[uint32]*stream)
	c.drained.L = &c.mu
	c.wcond.L = &c.wmu
	c.peerWindow, c.peerFrameSize, c.sendWindow = defaultWindow, frameSize, defaultWindow
	c.recvWindow = int64(c.lim.ConnWindow)
	now := mono.Now()
	c.resets = bucket{burst: float64(c.lim.ResetBurst), rate: float64(c.lim.ResetRate), tokens: float64(c.lim.ResetBurst), at: now}
	c.frames = bucket{burst: float64(c.lim.FrameBurst), rate: float64(c.lim.FrameRate), tokens: float64(c.lim.FrameBurst), at: now}
	return c
}

// The read and write buffers are taken from pools when needed and given
// back while the connection waits idle (park): bufReader and bufWriter are
// what the Framer reads and writes through, whichever buffers are held.
var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, frameHeaderLen+frameSize) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}
)

// reader returns the read buffer, taken if none is held.
func (c *conn) reader() *bufio.Reader {
	if c.br == nil {
		c.br = readerPool.Get().(*bufio.Reader)
		c.br.Reset(c.src)
	}
	return c.br
}

// buffered is how many bytes the read buffer holds.
func (c *conn) buffered() int {
	if c.br == nil {
		return 0
	}
	return c.br.Buffered()
}

type bufReader struct{ c *conn }

func (r bufReader) Read(p []byte) (int, error) { return r.c.reader().Read(p) }

// bufWriter writes into the write buffer, taken if none is held; c.wmu
// is held.
type bufWriter struct{ c *conn }

func (w bufWriter) Write(p []byte) (int, error) {
	c := w.c
	if c.bw == nil {
		c.bw = writerPool.Get().(*bufio.Writer)
		c.bw.Reset(writerOf{c})
	}
	return c.bw.Write(p)
}

// writerOf is the connection's socket as its buffered writer sees it:
// each write is bounded by the write timeout.
type writerOf struct{ c *conn }

func (w writerOf) Write(p []byte) (int, error) {
	c := w.c
	c.wdl.Ensure(c.nc.SetWriteDeadline, mono.Now(), c.srv.writeTimeout(), 0)
	return c.nc.Write(p)
}

func (srv *Server) writeTimeout() time.Duration { return cmpOr(srv.Timeouts.Write, 60*time.Second) }
func (srv *Server) bodyTimeout() time.Duration  { return cmpOr(srv.Timeouts.Body, 60*time.Second) }
func (srv *Server) idleTimeout() time.Duration  { return cmpOr(srv.Timeouts.Idle, 60*time.Second) }

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// bucket is a token bucket: a burst, refilled at a rate a second.
type bucket struct {
	burst, rate, tokens float64
	at                  time.Duration
}

// take takes one token, and reports false when there was none.
func (b *bucket) take(now time.Duration) bool {
	b.tokens = min(b.burst, b.tokens+b.rate*(now-b.at).Seconds())
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// connError ends the connection with GOAWAY and code.
type connError struct {
	code http2.ErrCode
	why  string
}

func (e connError) Error() string { return "http2: " + e.code.String() + ": " + e.why }

// serve sends the server's preface, reads the client's, then reads
// frames (run).
func (c *conn) serve() {
	// The server's preface: its SETTINGS, and the connection window.
	c.wmu.Lock()
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.lim.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: c.lim.StreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.lim.MaxHeaderListSize},
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
	)
	if inc := c.lim.ConnWindow - defaultWindow; inc > 0 {
		c.fr.WriteWindowUpdate(0, inc)
	}
	c.flushLocked()
	c.wmu.Unlock()
	c.settingsAt = mono.Now()

	c.nc.SetReadDeadline(time.Now().Add(cmpOr(c.srv.Timeouts.Settings, 10*time.Second)))
	var preface [len(ClientPreface)]byte
	if _, err := io.ReadFull(c.reader(), preface[:]); err != nil || string(preface[:]) != ClientPreface {
		c.fail(connError{http2.ErrCodeProtocol, "no client preface"})
		c.finish()
		return
	}
	c.run()
}

// run reads frames until the connection ends, when it is closed, or
// parks, when its goroutine is done: resumeTask runs it again.
func (c *conn) run() {
	if !c.loop() {
		c.finish()
	}
}

type resumeTask conn

func (t *resumeTask) Run() {
	c := (*conn)(t)
	c.readable = true
	c.run()
}

// loop reads and handles frames, and reports true once the connection
// parked, false once it is done.
func (c *conn) loop() bool {
	run := 0 // frames handled since the read buffer was last empty
	for {
		c.recycle()
		// A kick is to wake the reader from a read; it is not in one.
		c.kicked.Store(false)
		if !c.readable && c.idle() && c.park() {
			return true
		}
		readable := c.readable
		c.readable = false
		if !c.setIdleDeadline() {
			c.readable = readable
			continue // kicked: its last stream ended
		}
		fh, err := c.nextFrame()
		if err != nil && c.kicked.CompareAndSwap(true, false) {
			// A kick's deadline ended the wait, and took nothing (or
			// came before the read even began).
			c.readable = readable
			continue
		}
		if err == nil && !c.gotSettings && fh.Type != http2.FrameSettings {
			// The client's preface ends with SETTINGS (RFC 9113 §3.4).
			err = connError{http2.ErrCodeProtocol, "first frame not SETTINGS"}
		}
		c.gotSettings = true
		if err == nil {
			err = c.readFrame(fh)
		}
		if err != nil {
			var ce connError
			if errors.As(err, &ce) {
				c.fail(err)
			} else {
				c.readFailed(err)
			}
			return false
		}
		if c.settingsAt != 0 && mono.Now()-c.settingsAt > cmpOr(c.srv.Timeouts.Settings, 10*time.Second) {
			c.fail(connError{http2.ErrCodeSettingsTimeout, "SETTINGS not acknowledged"})
			return false
		}
		if c.calm {
			c.ctr.ResetFloods.Add(1)
			c.fail(connError{http2.ErrCodeEnhanceYourCalm, "too many streams reset by strait"})
			return false
		}
		if c.buffered() == 0 || len(c.pending) >= 16 {
			c.start()
			run = 0
		} else if run++; run >= 64 {
			// A client that keeps the read buffer full (a flood, or a
			// long run of frames) yields to the other connections'
			// requests now and then, rather than at preemption.
			runtime.Gosched()
			run = 0
		}
		if c.done() {
			return false
		}
	}
}

// idle reports whether the connection has nothing to do until the client
// sends more: no stream, no frame begun, nothing read and not handled
// (crypto/tls included), no GOAWAY sent.
func (c *conn) idle() bool {
	if len(c.pending) > 0 || c.headersFor != nil || c.buffered() > 0 || c.pre != nil && c.pre.Len() > 0 {
		return false
	}
	c.mu.Lock()
	busy := len(c.streams) > 0 || c.closing
	c.mu.Unlock()
	if busy {
		c.idleNoted = false
		return false
	}
	// The socket may hold more than the buffer took: its edge, which the
	// parker waits for, is spent.
	if sockio.Readable(c.fd) {
		return false
	}
	if u := c.under; u != nil {
		if u.MidRecord() {
			return false
		}
		// A read of what TLS holds: a frame may sit decrypted there.
		u.Held = true
		_, err := c.reader().Peek(1)
		u.Held = false
		if err != sockio.ErrWouldBlock {
			return false
		}
	}
	return true
}

// park waits for the client's next frame on the parker: for a while as a
// goroutine, then without one and without buffers. It reports whether the
// connection is parked, and its goroutine must end.
func (c *conn) park() bool {
	if c.srv.Parker == nil {
		return false
	}
	p := c.srv.Parker()
	if !c.idleNoted {
		c.wait.IdleSince, c.idleNoted = mono.Now(), true
	}
	c.wait.IdleEnd = c.wait.IdleSince + c.srv.idleTimeout()
	switch p.Wait(&c.wait) {
	case park.Readable:
		// Read before waiting again: the socket's edge is spent.
		c.readable = true
	case park.Idle:
		c.releaseBuffers()
		if p.Park(&c.wait) {
			return true
		}
		c.readable = true // it came as the connection parked
	case park.Closing:
		c.goAway(http2.ErrCodeNo, false)
	}
	return false
}

// releaseBuffers gives back the read and write buffers, when empty.
func (c *conn) releaseBuffers() {
	if c.br != nil && c.br.Buffered() == 0 {
		c.br.Reset(nil)
		readerPool.Put(c.br)
		c.br = nil
	}
	c.wmu.Lock()
	if c.bw != nil && c.bw.Buffered() == 0 {
		c.bw.Reset(nil)
		writerPool.Put(c.bw)
		c.bw = nil
	}
	c.wmu.Unlock()
}

// Resume serves the parked connection, whose client sent something
// (park.Conn).
func (c *conn) Resume() { c.srv.workers.Run((*resumeTask)(c)) }

// Close ends the parked connection after its idle timeout, or as the
// parker closes (park.Conn): GOAWAY if it can go at once, then the close.
func (c *conn) Close() {
	c.nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	c.goAway(http2.ErrCodeNo, false)
	c.finish()
}

// finish closes the connection and lets go of it.
func (c *conn) finish() {
	c.end()
	if c.wait.Registered() && c.srv.Parker != nil {
		c.srv.Parker().Forget(&c.wait)
	}
	c.releaseBuffers()
	c.srv.mu.Lock()
	delete(c.srv.conns, c)
	c.srv.mu.Unlock()
	if c.info.Done != nil {
		c.info.Done()
	}
}

// nextFrame waits until a whole frame is in the read buffer, then reads
// its header. A deadline that ends the wait (kickLocked's) takes no byte:
// only Peek waits.
func (c *conn) nextFrame() (http2.FrameHeader, error) {
	br := c.reader()
	hdr, err := br.Peek(frameHeaderLen)
	if err != nil {
		return http2.FrameHeader{}, err
	}
	if n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2]); n <= frameSize {
		if _, err := br.Peek(frameHeaderLen + n); err != nil {
			return http2.FrameHeader{}, err
		}
	}
	return c.fr.ReadFrameHeader()
}

const frameHeaderLen = 9

// readFrame reads and handles the frame whose header fh was read.
func (c *conn) readFrame(fh http2.FrameHeader) error {
	if fh.Type == http2.FrameHeaders || fh.Type == http2.FrameContinuation {
		return c.readHeaderFrame(fh)
	}
	f, err := c.fr.ReadFrameForHeader(fh)
	if err != nil {
		var se http2.StreamError
		if errors.As(err, &se) {
			// The framer checked a frame it can blame on one stream
			// (a WINDOW_UPDATE of 0, say): reset, at a frame token.
			if !c.frames.take(mono.Now()) {
				return c.flood("frames with stream errors")
			}
			if !c.wasReset(se.StreamID) {
				c.resetStream(se.StreamID, se.Code)
			}
			return nil
		}
		return err
	}
	return c.handle(f)
}

// done reports whether a connection that sent GOAWAY has nothing left.
func (c *conn) done() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing && len(c.streams) == 0 && len(c.pending) == 0
}

// setIdleDeadline bounds the wait for the next frame by the idle timeout
// while no stream is open; with streams open, their own timeouts apply.
// A connection that sent GOAWAY and has no stream left is woken at once.
// Under c.mu, as kick: one of the two sees the other's change.
func (c *conn) setIdleDeadline() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closing && len(c.streams) == 0:
		c.rdl.Set(c.nc.SetReadDeadline, sockio.Past)
		c.idleSet = true
	case len(c.streams) == 0:
		// Moved only when off by a quarter: once per frame would cost
		// a clock reading and a timer update each.
		c.rdl.Ensure(c.nc.SetReadDeadline, mono.Now(), c.srv.idleTimeout(), 0)
		c.idleSet = true
	case c.idleSet:
		c.rdl.Set(c.nc.SetReadDeadline, time.Time{})
		c.idleSet = false
	}
	// Checked after the deadline is set: a kick before it is seen here,
	// one after it ends the wait.
	return !c.kicked.CompareAndSwap(true, false)
}

// kickLocked wakes the reader of a connection that has no stream left:
// one that sent GOAWAY closes, another may park. c.mu is held.
func (c *conn) kickLocked() {
	if len(c.streams) > 0 {
		return
	}
	if c.closing {
		c.rdl.Set(c.nc.SetReadDeadline, sockio.Past)
		c.idleSet = true // the next setIdleDeadline moves it
		return
	}
	// Idle now: once it has been for park.After, the reader may park
	// (or, without a parker, arm the idle timeout) rather than wait in
	// its read. (Not at once: the error a kicked read
	// returns is allocated, and a busy connection's next request seldom
	// takes that long.)
	if c.kickTimer == nil {
		c.kickTimer = time.AfterFunc(park.After, c.kickIdle)
	} else {
		c.kickTimer.Reset(park.After)
	}
}

// kickIdle wakes the reader of a connection still idle.
func (c *conn) kickIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.streams) == 0 && !c.closing {
		c.kicked.Store(true)
		c.rdl.Set(c.nc.SetReadDeadline, sockio.Past)
		c.idleSet = true // the next setIdleDeadline moves it
	}
}

func (c *conn) readFailed(err error) {
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		c.fail(connError{http2.ErrCode(ce), "frame: " + err.Error()})
	case errors.Is(err, http2.ErrFrameTooLarge):
		c.fail(connError{http2.ErrCodeFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE"})
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		c.closeNow()
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.goAway(http2.ErrCodeNo, true) // idle
			return
		}
		c.closeNow()
	}
}

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
	if f.StreamID == 0 {
		c.wmu.Lock()
		c.sendWindow += int64(f.Increment)
		over := c.sendWindow > maxWindow
		c.wcond.Broadcast()
		c.wmu.Unlock()
		if over {
			return connError{http2.ErrCodeFlowControl, "connection window over 2^31-1"}
		}
		return nil
	}
	s, state := c.stream(f.StreamID)
	if state == idle {
		return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream"}
	}
	if s == nil {
		return nil
	}
	c.wmu.Lock()
	s.sendWindow += int64(f.Increment)
	over := s.sendWindow > maxWindow
	c.wcond.Broadcast()
	c.wmu.Unlock()
	if over {
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

const (
	idle   streamState = iota // not opened yet
	open                      // open or half-closed
	closed                    // opened before, done now
)

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
	// A block may be somewhat larger than the list it decodes to (literal
	// names and Huffman), but not without bound: CONTINUATION floods end
	// here.
	if c.blockSize > 2*int(c.lim.MaxHeaderListSize)+frameSize {
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
	}
	c.drained.Broadcast()
	c.kickLocked()
	c.mu.Unlock()
	c.keep(s)
}

// calmHold is how long a connection that got GOAWAY with
// ENHANCE_YOUR_CALM is held before it closes.
const calmHold = time.Second

// maxFree bounds the streams a connection keeps for reuse.
const maxFree = 32

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

// flushLocked flushes the writer; a connection that failed writing is
// closed, which ends its reader too.
func (c *conn) flushLocked() {
	if c.werr != nil || c.bw == nil {
		return
	}
	if err := c.bw.Flush(); err != nil {
		c.werr = err
		c.nc.Close()
		c.wcond.Broadcast()
	}
}

// flushSoon has the writer flushed once the goroutines ready to run now
// have run: the streams whose responses came in the same poll write
// theirs first, and one write carries them all. c.wmu is held.
func (c *conn) flushSoon() {
	if c.flushQueued || c.werr != nil {
		return
	}
	c.flushQueued = true
	c.srv.workers.Run((*flushTask)(c))
}

type flushTask conn

func (t *flushTask) Run() {
	c := (*conn)(t)
	runtime.Gosched()
	c.wmu.Lock()
	c.flushQueued = false
	c.flushLocked()
	c.wmu.Unlock()
}

// goAway sends GOAWAY: new streams are refused, open ones go on. With
// now, the connection closes at once (after a moment for the client to
// read it).
func (c *conn) goAway(code http2.ErrCode, now bool) {
	c.wmu.Lock()
	if !c.goneAway || code != http2.ErrCodeNo {
		c.goneAway = true
		c.fr.WriteGoAway(c.maxClientID, code, nil)
		c.flushLocked()
	}
	c.wmu.Unlock()
	c.mu.Lock()
	c.closing = true
	c.drained.Broadcast()
	if !now {
		c.kickLocked()
	}
	c.mu.Unlock()
	if now {
		c.lingerClose()
	}
}

// fail ends the connection for err.
func (c *conn) fail(err error) {
	var ce connError
	if errors.As(err, &ce) {
		if ce.code != http2.ErrCodeEnhanceYourCalm {
			c.ctr.ProtocolErrors.Add(1)
		}
		if c.srv.Logger != nil {
			c.srv.Logger.Debug("http2 connection error", "client", c.info.Client.String(), "err", err)
		}
		if ce.code == http2.ErrCodeEnhanceYourCalm {
			// A flooding client is held, unread, for a while before the
			// close: its writes stall, rather than it reconnecting at
			// once to flood again. (A client holding many such
			// connections meets limits.max_conns.)
			c.goAway(ce.code, false)
			time.Sleep(calmHold)
			c.lingerClose()
			return
		}
		c.goAway(ce.code, true)
		return
	}
	c.closeNow()
}

// lingerClose closes the connection once the client has had a moment to
// read what was sent: closing with unread bytes from the client would
// reset the connection, and the GOAWAY might be lost.
// It reads little, and not for long: a flooding client keeps sending, and
// reading its flood would cost more than the flood itself.
func (c *conn) lingerClose() {
	// What streams wrote and a flushTask has yet to send goes first.
	c.wmu.Lock()
	c.flushLocked()
	c.wmu.Unlock()
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.nc.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
	io.Copy(io.Discard, io.LimitReader(bufReader{c}, 64<<10))
	c.closeNow()
}

func (c *conn) closeNow() {
	c.nc.Close()
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
}

// end closes the connection once its reader is done, ends every stream's
// waits, and waits for their handlers.
func (c *conn) end() {
	c.mu.Lock()
	if c.kickTimer != nil {
		c.kickTimer.Stop()
	}
	c.mu.Unlock()
	c.closeNow()
	c.wmu.Lock()
	if c.werr == nil {
		c.werr = net.ErrClosed
	}
	c.wcond.Broadcast()
	c.wmu.Unlock()
	c.mu.Lock()
	for _, s := range c.streams {
		s.connGone()
	}
	for c.active > 0 {
		c.drained.Wait()
	}
	c.mu.Unlock()
	for _, s := range c.pending {
		c.forget(s)
	}
	c.pending = nil
}
