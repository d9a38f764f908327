package h2

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
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
	kicked      atomic.Bool
	kickTimer   *time.Timer   // under mu
	drainTimer  *time.Timer   // under mu: ends a graceful shutdown's wait for its PING
	pingSent    atomic.Bool   // a graceful shutdown's first GOAWAY and PING went out
	drainOver   atomic.Bool   // their PING came back, or drainWait passed: the second GOAWAY is due
	drainEnded  bool          // the reader sent the second GOAWAY
	readable    bool          // the parker saw the socket readable: read before waiting again
	settingsAt  time.Duration // when strait sent SETTINGS not yet acknowledged (mono); 0: none
	frameAt     time.Duration // when a frame begun and not whole was first seen (mono); 0: none
	idleSet     bool
	rdl         sockio.Deadline // the read deadline (under mu)

	free      []*stream // streams to reuse (reader's)
	recycling []*stream // the last finished list, to swap in (reader's)

	mu         sync.Mutex // guards streams, active, closing, recvWindow, finished
	streams    map[uint32]*stream
	idleFrom   time.Duration // when the last stream ended (mono): the idle timeout runs from it
	finished   []*stream     // streams whose handlers are done, for recycle
	recvWindow int64         // conn-level: what the client may still send
	active     int           // streams whose handler has not finished
	closing    bool          // GOAWAY sent or the connection failed: no new streams
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
	prefaceSent   bool       // strait's SETTINGS went out: a GOAWAY may follow
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
	// A string may be as long as a block may be: one over the list's
	// limit gets 431 (decoded.field), not the connection's end.
	c.dec.SetMaxStringLength(c.maxBlock())
	c.streams = make(map[uint32]*stream)
	c.idleFrom = mono.Now()
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
func (srv *Server) settingsTimeout() time.Duration {
	return cmpOr(srv.Timeouts.Settings, 10*time.Second)
}

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
		// Extended CONNECT (RFC 8441): WebSocket over HTTP/2.
		http2.Setting{ID: http2.SettingEnableConnectProtocol, Val: 1},
	)
	if inc := c.lim.ConnWindow - defaultWindow; inc > 0 {
		c.fr.WriteWindowUpdate(0, inc)
	}
	c.flushLocked()
	c.prefaceSent = true
	c.wmu.Unlock()
	c.settingsAt = mono.Now()
	if c.srv.shutting.Load() {
		// Server.Shutdown may have come before the preface, and found
		// it could not go yet.
		c.startDrain()
	}

	c.nc.SetReadDeadline(time.Now().Add(c.srv.settingsTimeout()))
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

// loop reads and handles frames, and reports true once the connection
// parked, false once it is done.
func (c *conn) loop() bool {
	run := 0 // frames handled since the read buffer was last empty
	for {
		c.recycle()
		// A kick is to wake the reader from a read; it is not in one.
		c.kicked.Store(false)
		c.endDrain()
		// A graceful shutdown's second GOAWAY waits for the PING's ACK or
		// for drainWait's kick, which can only wake a read: no parking
		// until it has gone.
		if !c.readable && (c.drainEnded || !c.pingSent.Load()) && c.idle() && c.park() {
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
		if c.settingsLate(mono.Now()) {
			c.fail(errSettingsTimeout)
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
			// GOAWAY either way, and no stream left: the client may
			// still be sending (frames after its GOAWAY); closing on
			// them unread would reset the connection.
			c.lingerClose()
			return false
		}
	}
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
	if p, ok := f.(*http2.PingFrame); ok && p.IsAck() && p.Data == drainPing && c.pingSent.Load() {
		// The client has seen the first GOAWAY: what it sends from now
		// on is no stream it opened unknowing.
		c.drainOver.Store(true)
		c.endDrain()
		return nil
	}
	return c.handle(f)
}

// done reports whether a connection that sent GOAWAY has nothing left.
func (c *conn) done() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing && len(c.streams) == 0 && len(c.pending) == 0
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
			if c.settingsLate(mono.Now()) {
				c.fail(errSettingsTimeout)
				return
			}
			c.goAway(http2.ErrCodeNo, true) // idle, or a frame too slow
			return
		}
		c.closeNow()
	}
}

const (
	idle   streamState = iota // not opened yet
	open                      // open or half-closed
	closed                    // opened before, done now
)

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

// drainWait bounds how long a graceful shutdown waits for the PING sent
// with its first GOAWAY to come back before it sends the second: a round
// trip on any link worth serving, and a client that never answers PINGs
// has its new streams refused a second later than they would have been.
const drainWait = time.Second

// drainPing is the payload of a graceful shutdown's PING, which tells its
// ACK from those of the client's own PINGs.
var drainPing = [8]byte{'s', 't', 'r', 'a', 'i', 't', 'g', 'a'}

// startDrain begins a graceful shutdown (Server.Shutdown): GOAWAY with the
// last stream id 2^31-1, which stops the client from opening streams
// without refusing those it opened meanwhile, and a PING, whose ACK tells
// they have all come (RFC 9113 §6.8). The second GOAWAY goes from the
// reader, which knows the last stream it took (endDrain). Nothing is sent
// before strait's preface: serve calls it again after.
func (c *conn) startDrain() {
	c.wmu.Lock()
	if !c.prefaceSent || c.goneAway || c.pingSent.Load() {
		c.wmu.Unlock()
		return
	}
	c.pingSent.Store(true) // before the PING: its ACK may come at once
	c.fr.WriteGoAway(1<<31-1, http2.ErrCodeNo, nil)
	c.fr.WritePing(false, drainPing)
	c.flushLocked()
	c.wmu.Unlock()
	c.mu.Lock()
	c.drainTimer = time.AfterFunc(drainWait, c.drainDue)
	c.mu.Unlock()
}

// drainDue makes the second GOAWAY due without the PING's ACK: it wakes the
// reader from its read (as kickIdle does) to send it. A connection that
// was parked when the shutdown began sends it when it resumes, or when
// the parker closes it (HTTP/1's drain of idle connections).
func (c *conn) drainDue() {
	c.drainOver.Store(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.kicked.Store(true)
	c.rdl.Set(c.nc.SetReadDeadline, sockio.Past)
	c.idleSet = true // the next setIdleDeadline moves it
}

// endDrain sends a graceful shutdown's second GOAWAY once it is due, with
// the last stream the reader took: from now on new streams are refused.
// Only the reader calls it, which alone opens streams.
func (c *conn) endDrain() {
	if !c.drainEnded && c.drainOver.Load() {
		c.drainEnded = true
		c.goAway(http2.ErrCodeNo, false)
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
			time.Sleep(cmpOr(c.srv.Timeouts.CalmHold, time.Second))
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
	if c.drainTimer != nil {
		c.drainTimer.Stop()
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

// maxBlock bounds a header block's encoded size. It may be somewhat larger
// than the list it decodes to (literal names and Huffman), but not without
// bound: CONTINUATION floods end here.
func (c *conn) maxBlock() int { return 2*int(c.lim.MaxHeaderListSize) + frameSize }
