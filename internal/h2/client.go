package h2

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/internal/sockio"
	istream "github.com/straitproxy/strait/internal/stream"
)

// ClientConn is an HTTP/2 connection to an upstream, its requests
// multiplexed as streams (RFC 9113). Each exchange writes its own frames,
// under wmu, from its goroutine; one goroutine per connection reads the
// peer's frames and hands each stream its response. An upstream
// connection is one of a few (the pool shares it), so it keeps its reader
// goroutine while idle, unlike a client's.
type ClientConn struct {
	nc     net.Conn
	opts   ClientOptions
	scheme []byte

	wmu           sync.Mutex
	wcond         sync.Cond // streams waiting for send window
	bw            *bufio.Writer
	fr            *http2.Framer // writes under wmu; reads by the reader only
	sendWindow    int64         // conn-level: what strait may still send
	peerWindow    int32         // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerFrameSize uint32
	extConnect    bool // the peer takes extended CONNECT (RFC 8441)
	nextID        uint32
	lastID        atomic.Uint32 // the last stream id opened, for the reader
	wdl           sockio.Deadline
	wlimit        time.Duration // a bound on write deadlines (mono); 0: none
	werr          error
	returnedConn  int64 // conn-level bytes read by exchanges, not yet returned
	flushQueued   bool  // the flusher will flush
	flushCh       chan struct{}

	mu         sync.Mutex
	streams    map[uint32]*clientStream
	free       []*clientStream // finished cleanly and cleared, for NewStream to reuse
	retired    []*clientStream // finished cleanly, for the reader to clear and free
	nretired   atomic.Int32
	maxStreams int    // the peer's SETTINGS_MAX_CONCURRENT_STREAMS
	goAwayID   uint32 // streams above it were not processed
	goneAway   bool
	err        error // the connection failed: every stream fails with it
	recvWindow int64 // conn-level: what the peer may still send

	// The reader's.
	br           *bufio.Reader // what cc.fr reads from
	dec          *hpack.Decoder
	decoding     *clientStream // the stream a header block is for; nil: drop it
	decodingEnds bool          // the block ends its stream
	trailers     bool
	blockSize    int
	block        uint32 // the stream of the header block being read; 0: none
	decErr       error
	readerIdle   atomic.Bool   // the reader waits for a frame, holding no stream
	lastRead     atomic.Int64  // when a frame last came (mono)
	pingSent     atomic.Int64  // when strait's PING went, unanswered (mono); 0: none
	done         chan struct{} // closed when the reader ends
	settings     chan struct{} // closed when the peer's first SETTINGS came
	gotSettings  bool
}

// ClientOptions configure a ClientConn. Zero values mean the defaults.
type ClientOptions struct {
	// Scheme is :scheme of the requests: "http" (h2c) or "https".
	Scheme string
	// StreamWindow and ConnWindow bound the response body bytes buffered
	// per stream (default 64 KiB) and per connection (default 1 MiB): the
	// peer's windows open as the client takes the body.
	StreamWindow, ConnWindow uint32
	// MaxHeaderListSize bounds a response head, decoded (default 64 KiB).
	MaxHeaderListSize uint32
	// Write bounds each wait to write (flow control included); default
	// 60 s.
	Write time.Duration
	// Ping is how long the connection may be quiet (no frame from the
	// peer) before strait sends PING, and then how long the peer has to
	// answer it before the connection is closed as dead; default 30 s.
	// A peer gone without a word (a host down, a NAT that forgot the
	// flow) is so found before a request waits on it.
	Ping time.Duration
}

// ErrNoUpgrade refuses a request that asks to switch protocols (a
// WebSocket) on an HTTP/2 upstream that does not take extended CONNECT.
var ErrNoUpgrade = errors.New("http2: the upstream takes no extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL)")

var (
	errClientClosed  = errors.New("http2: upstream connection closed")
	errUpstreamReset = errors.New("http2: the upstream reset the stream")
	errStopSending   = fmt.Errorf("%w: NO_ERROR (the rest of the request is not wanted)", errUpstreamReset)
	errDeadline      = fmt.Errorf("http2: %w", errTimeout{})
)

// errTimeout is a net.Error that timed out, as the proxy tells timeouts.
type errTimeout struct{}

func (errTimeout) Error() string   { return "i/o timeout" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }

// NewClientConn starts HTTP/2 on nc, which must be fresh (TLS with ALPN
// h2, or cleartext with prior knowledge): it sends the preface and
// strait's SETTINGS, starts reading, and returns once the peer's SETTINGS
// came (so that Streams is the peer's limit before the connection is
// shared), or ctx is done.
func NewClientConn(ctx context.Context, nc net.Conn, o ClientOptions) (*ClientConn, error) {
	if o.StreamWindow == 0 {
		o.StreamWindow = 64 << 10
	}
	if o.ConnWindow == 0 {
		o.ConnWindow = 1 << 20
	}
	if o.MaxHeaderListSize == 0 {
		o.MaxHeaderListSize = 64 << 10
	}
	if o.Scheme == "" {
		o.Scheme = "http"
	}
	cc := &ClientConn{nc: nc, opts: o, scheme: []byte(o.Scheme), streams: make(map[uint32]*clientStream),
		maxStreams: 100, nextID: 1, done: make(chan struct{}), settings: make(chan struct{}), flushCh: make(chan struct{}, 1)}
	cc.wcond.L = &cc.wmu
	cc.bw = bufio.NewWriterSize(connWriter{cc}, 16<<10)
	cc.br = bufio.NewReaderSize(nc, frameHeaderLen+frameSize)
	cc.fr = http2.NewFramer(cc.bw, cc.br)
	cc.fr.SetMaxReadFrameSize(frameSize)
	cc.fr.SetReuseFrames()
	cc.sendWindow, cc.peerWindow, cc.peerFrameSize = defaultWindow, defaultWindow, frameSize
	cc.recvWindow = int64(o.ConnWindow)
	cc.dec = hpack.NewDecoder(4096, cc.emit)
	cc.dec.SetMaxStringLength(int(o.MaxHeaderListSize))

	cc.wmu.Lock()
	cc.bw.WriteString(ClientPreface)
	cc.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: o.StreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: o.MaxHeaderListSize},
	)
	if inc := o.ConnWindow - defaultWindow; inc > 0 {
		cc.fr.WriteWindowUpdate(0, inc)
	}
	err := cc.bw.Flush()
	cc.wmu.Unlock()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("http2: preface: %w", err)
	}
	cc.lastRead.Store(int64(mono.Now()))
	go cc.readLoop()
	go cc.flusher()
	select {
	case <-cc.settings:
		return cc, nil
	case <-cc.done:
		return nil, fmt.Errorf("http2: before the upstream's SETTINGS: %w", cc.failure())
	case <-ctx.Done():
		cc.Close()
		return nil, fmt.Errorf("http2: waiting for the upstream's SETTINGS: %w", ctx.Err())
	}
}

func (cc *ClientConn) failure() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err
}

func (cc *ClientConn) writeTimeout() time.Duration { return cmpOr(cc.opts.Write, 60*time.Second) }

// Streams is how many streams the connection carries at once: the peer's
// SETTINGS_MAX_CONCURRENT_STREAMS (100 until it says).
func (cc *ClientConn) Streams() int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.maxStreams
}

// Usable reports whether the connection may take new streams: it has not
// failed, and the peer has not sent GOAWAY.
func (cc *ClientConn) Usable() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err == nil && !cc.goneAway
}

// Close closes the connection; its streams fail.
func (cc *ClientConn) Close() error {
	cc.fail(errClientClosed)
	return nil
}

// Done is closed once the connection has ended.
func (cc *ClientConn) Done() <-chan struct{} { return cc.done }

// fail ends the connection for err: every open stream fails with it.
func (cc *ClientConn) fail(err error) {
	cc.mu.Lock()
	if cc.err != nil {
		cc.mu.Unlock()
		return
	}
	cc.err = err
	streams := make([]*clientStream, 0, len(cc.streams))
	for _, s := range cc.streams {
		streams = append(streams, s)
	}
	cc.mu.Unlock()
	cc.nc.Close()
	for _, s := range streams {
		s.fail(err)
	}
	cc.wmu.Lock()
	if cc.werr == nil {
		cc.werr = err
	}
	cc.wcond.Broadcast()
	cc.wmu.Unlock()
}

// NewStream opens an exchange on the connection; its stream is opened
// when it writes its head.
func (cc *ClientConn) NewStream() istream.Upstream {
	if cc.nretired.Load() > 0 && cc.readerIdle.Load() {
		// The reader, waiting for a frame, holds none of them.
		cc.recycle()
	}
	cc.mu.Lock()
	if n := len(cc.free); n > 0 {
		s := cc.free[n-1]
		cc.free = cc.free[:n-1]
		cc.mu.Unlock()
		return s
	}
	cc.mu.Unlock()
	s := &clientStream{cc: cc, clientStreamFields: clientStreamFields{length: -1}}
	s.cond.L = &s.mu
	return s
}

// recycle clears the streams finished cleanly and frees them for reuse.
// Only when the reader holds none: the reader between frames, or
// NewStream while the reader waits for one (readerIdle). A stream may be
// finished while the reader handles a frame for it (say, one its origin
// sent after END_STREAM); once finished, it is out of cc.streams, where
// the reader finds the streams of later frames.
func (cc *ClientConn) recycle() {
	cc.mu.Lock()
	retired := cc.retired
	cc.retired = nil
	cc.nretired.Store(0)
	cc.mu.Unlock()
	for _, s := range retired {
		s.clear()
	}
	cc.mu.Lock()
	cc.free = append(cc.free, retired...)
	if cc.retired == nil {
		cc.retired = retired[:0]
	}
	cc.mu.Unlock()
}

// neverOpened reports whether id is a stream strait has not opened: a
// frame for one is a connection error (RFC 9113 §5.1, idle streams).
func (cc *ClientConn) neverOpened(id uint32) bool {
	return id&1 == 0 || id > cc.lastID.Load()
}

// maxFreeStreams bounds the finished streams a connection keeps to reuse.
const maxFreeStreams = 64

// readLoop reads frames until the connection fails.
func (cc *ClientConn) readLoop() {
	defer close(cc.done)
	for {
		if cc.decoding == nil {
			// Between frames, holding no stream: finished ones may be
			// reused, by NewStream too while the read below waits.
			if cc.nretired.Load() > 0 {
				cc.recycle()
			}
			cc.readerIdle.Store(true)
		}
		fh, err := cc.fr.ReadFrameHeader()
		cc.readerIdle.Store(false)
		var f http2.Frame
		if err == nil {
			switch fh.Type {
			case http2.FrameHeaders, http2.FrameContinuation, http2.FrameWindowUpdate:
				// Parsed here: the framer allocates each of these.
				err = cc.readFrame(fh)
				cc.lastRead.Store(int64(mono.Now()))
				if err == nil {
					continue
				}
				var ce connError
				if errors.As(err, &ce) {
					cc.goAwayAndFail(ce.code, err)
				} else {
					cc.fail(fmt.Errorf("http2: reading from upstream: %w", err))
				}
				return
			}
			f, err = cc.fr.ReadFrameForHeader(fh)
		}
		cc.lastRead.Store(int64(mono.Now()))
		if err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				cc.goAwayAndFail(http2.ErrCode(ce), fmt.Errorf("http2: upstream frame: %w", err))
				return
			}
			var se http2.StreamError
			if errors.As(err, &se) {
				cc.resetStream(se.StreamID, se.Code, fmt.Errorf("http2: upstream frame: %w", err))
				continue
			}
			cc.fail(fmt.Errorf("http2: reading from upstream: %w", err))
			return
		}
		if err := cc.handle(f); err != nil {
			var ce connError
			if errors.As(err, &ce) {
				cc.goAwayAndFail(ce.code, err)
			} else {
				cc.fail(err)
			}
			return
		}
	}
}

// goAwayAndFail tells the peer why, then fails the connection.
func (cc *ClientConn) goAwayAndFail(code http2.ErrCode, err error) {
	cc.wmu.Lock()
	if cc.werr == nil {
		cc.wlimit = mono.Now() + time.Second // a peer that reads nothing is not waited for
		cc.fr.WriteGoAway(0, code, nil)
		cc.bw.Flush()
	}
	cc.wmu.Unlock()
	cc.fail(err)
}

func (cc *ClientConn) handle(f http2.Frame) error {
	if cc.block != 0 {
		return connError{http2.ErrCodeProtocol, "frame inside an upstream header block"}
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := cc.applySettings(f); err != nil {
			return err
		}
		cc.wmu.Lock()
		cc.fr.WriteSettingsAck()
		cc.flushLocked()
		cc.wmu.Unlock()
		if !cc.gotSettings {
			cc.gotSettings = true
			close(cc.settings)
		}
	case *http2.PingFrame:
		if f.IsAck() {
			cc.pingSent.Store(0)
		} else {
			cc.wmu.Lock()
			cc.fr.WritePing(true, f.Data)
			cc.flushLocked()
			cc.wmu.Unlock()
		}
	case *http2.GoAwayFrame:
		cc.goAway(f.LastStreamID)
	case *http2.RSTStreamFrame:
		err := fmt.Errorf("%w: %v", errUpstreamReset, f.ErrCode)
		switch f.ErrCode {
		case http2.ErrCodeRefusedStream:
			err = fmt.Errorf("%w: REFUSED_STREAM", istream.ErrUnprocessed)
		case http2.ErrCodeCancel:
			err = fmt.Errorf("%w: %w", errUpstreamReset, istream.ErrCanceled)
		case http2.ErrCodeNo:
			// After a whole response, NO_ERROR asks only that the
			// request stop (RFC 9113 §8.1): the response stands.
			err = errStopSending
		}
		if s := cc.remove(f.StreamID); s != nil {
			s.fail(err)
		}
	case *http2.DataFrame:
		return cc.data(f)
	case *http2.PushPromiseFrame:
		return connError{http2.ErrCodeProtocol, "PUSH_PROMISE with push disabled"}
	}
	return nil
}

// readFrame reads and handles a HEADERS, CONTINUATION or WINDOW_UPDATE
// frame whose header fh the framer read (RFC 9113 §6.2, §6.10, §6.9).
func (cc *ClientConn) readFrame(fh http2.FrameHeader) error {
	n := int(fh.Length)
	p, err := cc.br.Peek(n) // fh.Length is at most frameSize: the framer checked
	if err != nil {
		return err
	}
	defer cc.br.Discard(n)
	if fh.StreamID == 0 && fh.Type != http2.FrameWindowUpdate {
		return connError{http2.ErrCodeProtocol, fh.Type.String() + " on stream 0 from the upstream"}
	}
	if cc.block != 0 && (fh.Type != http2.FrameContinuation || fh.StreamID != cc.block) {
		return connError{http2.ErrCodeProtocol, "frame inside an upstream header block"}
	}
	endHeaders := fh.Flags.Has(http2.FlagHeadersEndHeaders)
	switch fh.Type {
	case http2.FrameWindowUpdate:
		if n != 4 {
			return connError{http2.ErrCodeFrameSize, "upstream WINDOW_UPDATE not 4 bytes"}
		}
		inc := binary.BigEndian.Uint32(p) & (1<<31 - 1)
		if inc == 0 && fh.StreamID == 0 {
			return connError{http2.ErrCodeProtocol, "upstream WINDOW_UPDATE of 0 for the connection"}
		}
		if inc == 0 {
			cc.resetStream(fh.StreamID, http2.ErrCodeProtocol, errors.New("http2: upstream WINDOW_UPDATE of 0"))
			return nil
		}
		return cc.windowUpdate(fh.StreamID, inc)
	case http2.FrameContinuation:
		if cc.block == 0 {
			return connError{http2.ErrCodeProtocol, "CONTINUATION without HEADERS"}
		}
		if endHeaders {
			cc.block = 0
		}
		return cc.headers(fh.StreamID, p, endHeaders, cc.decodingEnds)
	}
	pad := 0
	if fh.Flags.Has(http2.FlagHeadersPadded) {
		if n < 1 {
			return connError{http2.ErrCodeFrameSize, "upstream HEADERS too short for its padding"}
		}
		pad, p = int(p[0]), p[1:]
	}
	if fh.Flags.Has(http2.FlagHeadersPriority) {
		if len(p) < 5 {
			return connError{http2.ErrCodeFrameSize, "upstream HEADERS too short for its priority"}
		}
		p = p[5:]
	}
	if pad > len(p) {
		return connError{http2.ErrCodeProtocol, "upstream HEADERS padding longer than its payload"}
	}
	if !endHeaders {
		cc.block = fh.StreamID
	}
	return cc.headers(fh.StreamID, p[:len(p)-pad], endHeaders, fh.Flags.Has(http2.FlagHeadersEndStream))
}

// windowUpdate adds to the connection's send window (id 0) or a stream's.
func (cc *ClientConn) windowUpdate(id, inc uint32) error {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if id == 0 {
		if cc.sendWindow+int64(inc) > maxWindow {
			return connError{http2.ErrCodeFlowControl, "upstream connection window over 2^31-1"}
		}
		cc.sendWindow += int64(inc)
	} else if s := cc.stream(id); s != nil {
		if s.sendWindow+int64(inc) > maxWindow {
			cc.wmu.Unlock()
			cc.resetStream(id, http2.ErrCodeFlowControl, errors.New("http2: upstream stream window over 2^31-1"))
			cc.wmu.Lock()
			return nil
		}
		s.sendWindow += int64(inc)
	}
	cc.wcond.Broadcast()
	return nil
}

func (cc *ClientConn) stream(id uint32) *clientStream {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.streams[id]
}

func (cc *ClientConn) remove(id uint32) *clientStream {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	s := cc.streams[id]
	delete(cc.streams, id)
	return s
}

func (cc *ClientConn) applySettings(f *http2.SettingsFrame) error {
	return f.ForeachSetting(func(st http2.Setting) error {
		if err := st.Valid(); err != nil {
			return connError{http2.ErrCodeProtocol, "upstream setting: " + err.Error()}
		}
		switch st.ID {
		case http2.SettingMaxConcurrentStreams:
			cc.mu.Lock()
			cc.maxStreams = int(min(st.Val, 1<<16))
			cc.mu.Unlock()
		case http2.SettingInitialWindowSize:
			cc.wmu.Lock()
			delta := int64(st.Val) - int64(cc.peerWindow)
			cc.peerWindow = int32(st.Val)
			overflow := false
			cc.mu.Lock()
			for _, s := range cc.streams {
				s.sendWindow += delta
				overflow = overflow || s.sendWindow > maxWindow
			}
			cc.mu.Unlock()
			cc.wcond.Broadcast()
			cc.wmu.Unlock()
			if overflow { // RFC 9113 §6.9.2
				return connError{http2.ErrCodeFlowControl, "upstream SETTINGS_INITIAL_WINDOW_SIZE pushes a stream's window over 2^31-1"}
			}
		case http2.SettingMaxFrameSize:
			cc.wmu.Lock()
			cc.peerFrameSize = st.Val
			cc.wmu.Unlock()
		case http2.SettingEnableConnectProtocol:
			cc.wmu.Lock()
			cc.extConnect = st.Val == 1
			cc.wmu.Unlock()
		}
		return nil
	})
}

// goAway notes the peer's GOAWAY: no new streams, and those above last
// were not processed.
func (cc *ClientConn) goAway(last uint32) {
	cc.mu.Lock()
	cc.goneAway, cc.goAwayID = true, last
	var unprocessed []*clientStream
	for id, s := range cc.streams {
		if id > last {
			unprocessed = append(unprocessed, s)
			delete(cc.streams, id)
		}
	}
	cc.mu.Unlock()
	for _, s := range unprocessed {
		s.fail(fmt.Errorf("%w: GOAWAY", istream.ErrUnprocessed))
	}
}

// resetStream sends RST_STREAM, and fails the stream with err.
func (cc *ClientConn) resetStream(id uint32, code http2.ErrCode, err error) {
	s := cc.remove(id)
	cc.wmu.Lock()
	cc.fr.WriteRSTStream(id, code)
	cc.flushSoonLocked()
	cc.wmu.Unlock()
	if s != nil {
		s.fail(err)
	}
}

// flushSoonLocked has the flusher flush what was written once the
// exchanges that can run have added theirs: one write carries the frames
// of many streams (HAProxy batches its writes so, in its event loop).
// cc.wmu is held.
func (cc *ClientConn) flushSoonLocked() {
	if cc.flushQueued || cc.werr != nil {
		return
	}
	cc.flushQueued = true
	select {
	case cc.flushCh <- struct{}{}:
	default:
	}
}

// flusher flushes when asked, and checks that a quiet peer is there
// (ClientOptions.Ping), until the connection ends.
func (cc *ClientConn) flusher() {
	ping := cmpOr(cc.opts.Ping, 30*time.Second)
	tick := time.NewTicker(ping / 4)
	defer tick.Stop()
	for {
		select {
		case <-cc.done:
			return
		case <-tick.C:
			cc.checkAlive(ping)
			continue
		case <-cc.flushCh:
		}
		runtime.Gosched()
		cc.wmu.Lock()
		cc.flushQueued = false
		cc.flushLocked()
		cc.wmu.Unlock()
	}
}

// checkAlive sends PING once the peer has been quiet for ping, and fails
// the connection if the PING goes unanswered for as long.
func (cc *ClientConn) checkAlive(ping time.Duration) {
	now := mono.Now()
	if sent := cc.pingSent.Load(); sent != 0 {
		if now-time.Duration(sent) >= ping {
			cc.fail(errors.New("http2: the upstream did not answer PING"))
		}
		return
	}
	if now-time.Duration(cc.lastRead.Load()) < ping {
		return
	}
	cc.pingSent.Store(int64(now))
	cc.wmu.Lock()
	cc.fr.WritePing(false, [8]byte{'s', 't', 'r', 'a', 'i', 't'})
	cc.flushLocked()
	cc.wmu.Unlock()
}

// flushLocked flushes what was written; cc.wmu is held.
func (cc *ClientConn) flushLocked() {
	if cc.werr == nil {
		cc.bw.Flush() // a failure is connWriter's to handle
	}
}

// connWriter is what cc.bw writes to. Every write to the socket goes
// through it, under cc.wmu: the write timeout is armed for each (a large
// frame flushes the buffer by itself, not only flushLocked does), and a
// write that fails fails the connection, whichever frame it carried.
type connWriter struct{ cc *ClientConn }

func (w connWriter) Write(p []byte) (int, error) {
	cc := w.cc
	if cc.werr != nil {
		return 0, cc.werr
	}
	cc.wdl.Ensure(cc.nc.SetWriteDeadline, mono.Now(), cc.writeTimeout(), cc.wlimit)
	n, err := cc.nc.Write(p)
	if err != nil {
		cc.werr = fmt.Errorf("http2: writing to upstream: %w", err)
		cc.wcond.Broadcast()
		go cc.fail(cc.werr)
	}
	return n, err
}

// data takes a DATA frame for a stream's body.
func (cc *ClientConn) data(f *http2.DataFrame) error {
	n := int64(f.Length) // padding counts against the windows too
	cc.mu.Lock()
	if n > cc.recvWindow {
		cc.mu.Unlock()
		return connError{http2.ErrCodeFlowControl, "upstream sent past the connection window"}
	}
	cc.recvWindow -= n
	s := cc.streams[f.StreamID]
	cc.mu.Unlock()
	if s == nil && cc.neverOpened(f.StreamID) {
		return connError{http2.ErrCodeProtocol, "upstream DATA on a stream strait never opened"}
	}
	if s == nil {
		// A stream strait reset or finished: its window is given back.
		cc.returnWindow(nil, n)
		return nil
	}
	if err := s.received(f.Data(), n, f.StreamEnded()); err != nil {
		cc.resetStream(f.StreamID, http2.ErrCodeProtocol, err)
		cc.returnWindow(nil, n)
	} else if pad := n - int64(len(f.Data())); pad > 0 {
		cc.returnWindow(s, pad) // the exchange reads no padding
	}
	return nil
}

// returnWindow gives n bytes back to the connection's window and, if s is
// set, to its stream's, once enough is due to be worth a frame.
func (cc *ClientConn) returnWindow(s *clientStream, n int64) {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	cc.returnedConn += n
	flush := false
	if cc.returnedConn >= int64(cc.opts.ConnWindow)/4 {
		cc.fr.WriteWindowUpdate(0, uint32(cc.returnedConn))
		cc.mu.Lock()
		cc.recvWindow += cc.returnedConn
		cc.mu.Unlock()
		cc.returnedConn = 0
		flush = true
	}
	if s != nil {
		s.mu.Lock()
		s.returned += n
		inc := int64(0)
		if s.returned >= int64(cc.opts.StreamWindow)/4 && !s.remoteEnd {
			inc, s.returned = s.returned, 0
			s.recvWindow += inc
		}
		s.mu.Unlock()
		if inc > 0 {
			cc.fr.WriteWindowUpdate(s.id, uint32(inc))
			flush = true
		}
	}
	if flush {
		cc.flushSoonLocked()
	}
}

// headers decodes a header block fragment of stream id.
func (cc *ClientConn) headers(id uint32, frag []byte, endHeaders, endStream bool) error {
	if cc.blockSize == 0 && cc.decoding == nil {
		if cc.neverOpened(id) {
			return connError{http2.ErrCodeProtocol, "upstream HEADERS on a stream strait never opened"}
		}
		// A stream whose response ended takes no more: the block is
		// decoded (for the table's sake) and dropped, and the stream,
		// which may be finished and about to be reused, left alone.
		s := cc.stream(id)
		cc.decoding, cc.decodingEnds, cc.decErr, cc.trailers = nil, endStream, nil, false
		if s != nil {
			if final, ended := s.state(); !ended {
				cc.decoding, cc.trailers = s, final
				s.beginBlock(final)
			}
		}
	}
	cc.blockSize += len(frag)
	if cc.blockSize > 2*int(cc.opts.MaxHeaderListSize)+16<<10 {
		return connError{http2.ErrCodeEnhanceYourCalm, "upstream header block too large"}
	}
	if _, err := cc.dec.Write(frag); err != nil {
		return connError{http2.ErrCodeCompression, "upstream header block: " + err.Error()}
	}
	if !endHeaders {
		return nil
	}
	if err := cc.dec.Close(); err != nil {
		return connError{http2.ErrCodeCompression, "upstream header block: " + err.Error()}
	}
	s, decErr, ends := cc.decoding, cc.decErr, cc.decodingEnds
	cc.decoding, cc.blockSize = nil, 0
	if s == nil {
		return nil // a stream strait is done with
	}
	if decErr != nil {
		cc.resetStream(id, http2.ErrCodeProtocol, decErr)
		return nil
	}
	if err := s.endBlock(ends); err != nil {
		cc.resetStream(id, http2.ErrCodeProtocol, err)
	}
	return nil
}

// emit takes one decoded field for the stream being decoded.
func (cc *ClientConn) emit(f hpack.HeaderField) {
	if cc.decoding == nil || cc.decErr != nil {
		return
	}
	cc.decErr = cc.decoding.field(f, cc.trailers, cc.opts.MaxHeaderListSize)
}

// open gives s a stream id and writes its head; cc.wmu is held, so ids
// go out in order.
func (cc *ClientConn) openLocked(s *clientStream) error {
	cc.mu.Lock()
	switch {
	case cc.err != nil:
		cc.mu.Unlock()
		return fmt.Errorf("%w: %w", istream.ErrUnprocessed, cc.err)
	case cc.goneAway:
		cc.mu.Unlock()
		return fmt.Errorf("%w: the connection is going away", istream.ErrUnprocessed)
	case len(cc.streams) >= cc.maxStreams:
		cc.mu.Unlock()
		return fmt.Errorf("%w: %d streams open, the upstream's limit", istream.ErrUnprocessed, len(cc.streams))
	case cc.nextID > maxWindow:
		cc.mu.Unlock()
		return fmt.Errorf("%w: stream ids used up", istream.ErrUnprocessed)
	}
	s.id = cc.nextID
	cc.nextID += 2
	cc.lastID.Store(s.id)
	s.sendWindow = int64(cc.peerWindow)
	s.recvWindow = int64(cc.opts.StreamWindow)
	cc.streams[s.id] = s
	cc.mu.Unlock()
	return nil
}

// clientStream is one exchange on a ClientConn: the istream.Upstream the
// forwarding path drives.
type clientStream struct {
	// These outlive an exchange: a timer that fired as the stream was
	// finished may still take mu (wake) while clear resets the rest.
	mu    sync.Mutex
	cond  sync.Cond
	timer *time.Timer
	cc    *ClientConn

	clientStreamFields
}

// clientStreamFields is what a clientStream holds for one exchange.
type clientStreamFields struct {
	id uint32

	// The request: the exchange's goroutine, its frames under cc.wmu.
	limit, readIdle time.Duration
	sendWindow      int64  // under cc.wmu
	tunnel          bool   // an extended CONNECT: a 2xx is a switch
	proto           []byte // its :protocol
	wsKey           string // the WebSocket client's Sec-WebSocket-Key
	hbuf, lower     []byte
	written         int64
	lastWrite       time.Duration
	endSent         bool
	opened          bool

	// The response, under mu.
	heads      []*respHead // received, not yet read
	cur        *respHead   // the one being decoded
	store      []*respHead // the heads this stream made, to reuse
	used       int         // how many of store are in use
	final      bool        // a final head came
	buf, spare []byte
	got        int64 // body bytes received
	length     int64 // content-length; -1: none
	remoteEnd  bool
	eof        bool
	err        error
	recvWindow int64
	returned   int64
	trailer    header.Header
	intr       [2]atomic.Bool
	shared     atomic.Int32

	out istream.Response
}

type respHead struct {
	status int
	hdr    header.Header
	length int64
	size   int
	end    bool // END_STREAM came on the head: no body, no trailers
}

var _ istream.Upstream = (*clientStream)(nil)

func (s *clientStream) Begin(limit, write, read time.Duration) {
	s.limit, s.readIdle = limit, read
}

// WriteHead opens the stream with the request head. The Host field, or
// host, becomes :authority.
func (s *clientStream) WriteHead(method string, path []byte, h *header.Header, host string, body int64, upgrade []byte) error {
	authority := []byte(host)
	if h != nil {
		if v := h.Get("host"); len(v) > 0 {
			authority = v
		}
	}
	b := s.hbuf[:0]
	if len(upgrade) > 0 {
		// A protocol switch is an extended CONNECT (RFC 8441) for the
		// first protocol offered; a WebSocket's key stays here, to
		// answer the client's 101 (ReadHead).
		s.proto = firstToken(upgrade)
		s.tunnel = true
		if h != nil {
			s.wsKey = string(h.Get("sec-websocket-key"))
		}
		method = "CONNECT"
		body = -1
		b = appendField(b, []byte(":protocol"), s.proto)
	}
	b = appendField(b, []byte(":method"), []byte(method))
	b = appendField(b, []byte(":scheme"), s.cc.scheme)
	b = appendField(b, []byte(":authority"), authority)
	b = appendField(b, []byte(":path"), path)
	// strait takes trailers from an HTTP/2 upstream whatever its client
	// said (TE is hop-by-hop): gRPC servers want to be told.
	b = appendField(b, []byte("te"), []byte("trailers"))
	var ok bool
	keep := requestField
	if s.tunnel {
		keep = tunnelField
	}
	b, s.lower, ok = appendHeader(b, h, s.lower, keep)
	if !ok {
		return errInvalidField
	}
	if body > 0 {
		var num [20]byte
		b = appendField(b, []byte("content-length"), strconv.AppendInt(num[:0], body, 10))
	}
	s.hbuf = b
	cc := s.cc
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if s.tunnel && !cc.extConnect {
		return ErrNoUpgrade
	}
	if err := cc.openLocked(s); err != nil {
		return err
	}
	s.opened = true
	s.lastWrite = mono.Now()
	if err := s.writeBlockLocked(b, body == 0); err != nil {
		return err
	}
	s.written += int64(len(b))
	if body == 0 {
		s.endSent = true
	}
	return nil
}

// requestField and tunnelField say which of a request's fields go in an
// HTTP/2 request (appendHeader's skip): not Host (:authority says it), nor
// TE (strait's own), nor Content-Length (strait frames the body); nor, for
// an extended CONNECT, the Sec-WebSocket-Key HTTP/2 does not use.
func requestField(name []byte) bool {
	switch string(name) {
	case "host", "te", "content-length":
		return false
	}
	return true
}

func tunnelField(name []byte) bool {
	return requestField(name) && string(name) != "sec-websocket-key"
}

// writeBlockLocked writes a header block as HEADERS and CONTINUATION
// frames; cc.wmu is held.
func (s *clientStream) writeBlockLocked(b []byte, end bool) error {
	cc := s.cc
	if cc.werr != nil {
		return cc.werr
	}
	max := int(cc.peerFrameSize)
	first := b[:min(len(b), max)]
	err := cc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: first, EndStream: end, EndHeaders: len(first) == len(b)})
	for b = b[len(first):]; err == nil && len(b) > 0; {
		n := min(len(b), max)
		err = cc.fr.WriteContinuation(s.id, n == len(b), b[:n])
		b = b[n:]
	}
	return err
}

// WriteBody writes p as DATA frames, as the windows allow.
func (s *clientStream) WriteBody(p []byte) error {
	cc := s.cc
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	deadline := mono.Now() + cc.writeTimeout()
	for len(p) > 0 {
		if err := s.writableLocked(deadline); err != nil {
			return err
		}
		n := min(int64(len(p)), s.sendWindow, cc.sendWindow, int64(cc.peerFrameSize))
		if err := cc.fr.WriteData(s.id, false, p[:n]); err != nil {
			return err
		}
		s.sendWindow -= n
		cc.sendWindow -= n
		s.written += n
		p = p[n:]
	}
	s.lastWrite = mono.Now()
	return nil
}

// writableLocked waits until both windows are open, the stream or
// connection fails, it is interrupted, or deadline passes.
func (s *clientStream) writableLocked(deadline time.Duration) error {
	cc := s.cc
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		if cc.werr != nil {
			return cc.werr
		}
		if err := s.failed(); err != nil {
			return err
		}
		if s.intr[istream.Write].Load() {
			return errInterrupted
		}
		if s.sendWindow > 0 && cc.sendWindow > 0 {
			return nil
		}
		now := mono.Now()
		if now >= deadline || s.limit != 0 && now >= s.limit {
			return errDeadline
		}
		if t == nil {
			t = time.AfterFunc(deadline-now, func() {
				cc.wmu.Lock()
				cc.wcond.Broadcast()
				cc.wmu.Unlock()
			})
		}
		cc.wcond.Wait()
	}
}

var errInterrupted = errors.New("http2: wait interrupted")

func (s *clientStream) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *clientStream) Flush() error {
	cc := s.cc
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	cc.flushSoonLocked()
	return cc.werr
}

// EndBody ends the request: trailers, or an empty DATA frame, with
// END_STREAM.
func (s *clientStream) EndBody(trailer *header.Header) error {
	cc := s.cc
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if s.endSent {
		return nil
	}
	var err error
	if trailer != nil && trailer.Len() > 0 {
		b, lower, ok := appendHeader(s.hbuf[:0], trailer, s.lower, requestField)
		s.hbuf, s.lower = b, lower
		if !ok {
			return errInvalidField
		}
		err = s.writeBlockLocked(b, true)
	} else {
		err = cc.fr.WriteData(s.id, true, nil)
	}
	if err == nil {
		s.endSent = true
		cc.flushSoonLocked()
		err = cc.werr
	}
	return err
}

func (s *clientStream) Written() int64           { return s.written }
func (s *clientStream) LastWrite() time.Duration { return s.lastWrite }

// ReadHead returns the next response head, interim or final, waiting
// until from+wait at most.
func (s *clientStream) ReadHead(method string, from, wait time.Duration) (*istream.Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	deadline := from + wait
	if s.limit != 0 && s.limit < deadline {
		deadline = s.limit
	}
	for len(s.heads) == 0 {
		if err := s.waitLocked(deadline, istream.Read); err != nil {
			return nil, err
		}
	}
	h := s.heads[0]
	s.heads = s.heads[:copy(s.heads, s.heads[1:])] // keeping its array
	s.out = istream.Response{Status: h.status, Header: &h.hdr, Length: -1}
	if s.tunnel && h.status >= 200 && h.status < 300 {
		// The tunnel is open: to the proxy (and an HTTP/1.1 client) that
		// is a 101 switching to the protocol asked for.
		s.out.Status, s.out.Length = 101, 0
		h.hdr.Add("upgrade", string(s.proto))
		if s.wsKey != "" {
			h.hdr.Add("sec-websocket-accept", websocketAccept(s.wsKey))
		}
		return &s.out, nil
	}
	// Length 0 says there is nothing after the head, trailers included:
	// a Content-Length of 0 without END_STREAM on the head may yet have
	// trailers (a gRPC status, as Go's server sends them).
	switch {
	case method == "HEAD" || h.status == 204 || h.status == 304 || h.status < 200 || h.end:
		s.out.Length = 0
	case h.length > 0:
		s.out.Length = h.length
	}
	return &s.out, nil
}

// waitLocked waits on s.cond until something changes, the stream is
// interrupted in direction d or fails, or deadline passes; s.mu is held.
func (s *clientStream) waitLocked(deadline time.Duration, d istream.Dir) error {
	if s.err != nil {
		return s.err
	}
	if s.intr[d].Load() {
		return errInterrupted
	}
	now := mono.Now()
	if now >= deadline {
		return errDeadline
	}
	if s.timer == nil {
		s.timer = time.AfterFunc(deadline-now, s.wake)
	} else {
		s.timer.Reset(deadline - now)
	}
	s.cond.Wait()
	return nil
}

func (s *clientStream) wake() {
	s.mu.Lock()
	s.cond.Broadcast()
	s.mu.Unlock()
}

// ReadBody returns the next piece of the response body; io.EOF with the
// last.
func (s *clientStream) ReadBody() ([]byte, error) {
	return s.readBody(mono.Now() + cmpOr(s.readIdle, 60*time.Second))
}

// readBody is ReadBody, waiting until deadline (mono) at most.
func (s *clientStream) readBody(deadline time.Duration) ([]byte, error) {
	s.mu.Lock()
	if s.limit != 0 && s.limit < deadline {
		deadline = s.limit
	}
	for len(s.buf) == 0 && !s.remoteEnd {
		if err := s.waitLocked(deadline, istream.Read); err != nil {
			s.mu.Unlock()
			return nil, err
		}
	}
	if len(s.buf) == 0 && s.err != nil && !(s.remoteEnd && s.err == errStopSending) {
		err := s.err
		s.mu.Unlock()
		return nil, err
	}
	p := s.buf
	s.buf, s.spare = s.spare[:0], p
	end := s.remoteEnd && len(s.buf) == 0
	if end {
		s.eof = true
	}
	s.mu.Unlock()
	if n := int64(len(p)); n > 0 {
		s.cc.returnWindow(s, n)
	}
	if end {
		return p, io.EOF
	}
	return p, nil
}

func (s *clientStream) BodyBuffered() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.buf) > 0 || s.remoteEnd
}

func (s *clientStream) BodyDone() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.eof
}

func (s *clientStream) Trailer() *header.Header { return &s.trailer }

// Finish ends the exchange: a stream not done both ways is reset. The
// connection goes on unless it failed or is going away.
//
// A stream done both ways is kept for NewStream to reuse, with its
// buffers, if nothing else can touch it: the reader has had its last frame
// (END_STREAM), and Finish, not the reader, took it out of the connection's
// streams (the reader removes a stream before it fails it).
func (s *clientStream) Finish(sentWhole bool) bool {
	s.mu.Lock()
	doneBoth := s.remoteEnd && s.endSent && s.err == nil
	s.mu.Unlock()
	cc := s.cc
	cc.mu.Lock()
	removed := s.opened && cc.streams[s.id] == s
	if removed {
		delete(cc.streams, s.id)
	}
	usable := cc.err == nil && !cc.goneAway
	reuse := removed && doneBoth && cc.err == nil && s.shared.Load() == 0 && len(cc.free)+len(cc.retired) < maxFreeStreams
	cc.mu.Unlock()
	if removed && !doneBoth {
		cc.wmu.Lock()
		cc.fr.WriteRSTStream(s.id, http2.ErrCodeCancel)
		cc.flushSoonLocked()
		cc.wmu.Unlock()
	}
	s.opened = false
	if s.timer != nil {
		s.timer.Stop()
	}
	if reuse {
		// The reader may yet hold s for a frame it is handling: it
		// clears and frees s between frames (recycle).
		cc.mu.Lock()
		cc.retired = append(cc.retired, s)
		cc.nretired.Store(int32(len(cc.retired)))
		cc.mu.Unlock()
	}
	return usable
}

// clear readies a finished stream for another exchange, keeping its
// buffers (the body's only while small).
func (s *clientStream) clear() {
	for _, h := range s.store {
		h.hdr.Reset()
	}
	s.trailer.Reset()
	buf, spare := s.buf[:0], s.spare[:0]
	if cap(buf) > 16<<10 || cap(spare) > 16<<10 {
		buf, spare = nil, nil
	}
	s.mu.Lock()
	s.clientStreamFields = clientStreamFields{length: -1, hbuf: s.hbuf[:0], lower: s.lower[:0], heads: s.heads[:0],
		store: s.store, buf: buf, spare: spare, trailer: s.trailer}
	s.mu.Unlock()
}

// Detach hands an open extended CONNECT's stream to a tunnel, as a
// net.Conn; any other stream has no connection of its own to hand.
func (s *clientStream) Detach() (net.Conn, []byte) {
	if !s.tunnel {
		return nil, nil
	}
	return &tunnelConn{s: s, local: s.cc.nc.LocalAddr(), remote: s.cc.nc.RemoteAddr()}, nil
}

func (s *clientStream) Streams() int { return s.cc.Streams() }

// Close abandons the exchange: its stream is reset.
func (s *clientStream) Close() error {
	s.Finish(false)
	return nil
}

func (s *clientStream) Share()   { s.shared.Add(1) }
func (s *clientStream) Unshare() { s.shared.Add(-1) }

func (s *clientStream) Interrupt(d istream.Dir) {
	s.intr[d].Store(true)
	s.wake()
	if d == istream.Write {
		s.cc.wmu.Lock()
		s.cc.wcond.Broadcast()
		s.cc.wmu.Unlock()
	}
}

func (s *clientStream) Interrupted(d istream.Dir) bool { return s.intr[d].Load() }
func (s *clientStream) ClearInterrupt(d istream.Dir)   { s.intr[d].Store(false) }

// fail ends the stream with err; its waits return it.
func (s *clientStream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	s.cc.wmu.Lock()
	s.cc.wcond.Broadcast()
	s.cc.wmu.Unlock()
}

// state reports whether the final head came, and whether the response
// ended (END_STREAM).
func (s *clientStream) state() (final, ended bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.final, s.remoteEnd
}

// beginBlock readies a head or the trailers for decoding (the reader's).
func (s *clientStream) beginBlock(trailers bool) {
	if trailers {
		s.trailer.Reset()
		return
	}
	if s.used == len(s.store) {
		s.store = append(s.store, new(respHead))
	}
	s.cur = s.store[s.used]
	s.used++
	s.cur.status, s.cur.length, s.cur.size = 0, -1, 0
	s.cur.hdr.Reset()
}

// field takes one decoded field of a response head or trailers.
func (s *clientStream) field(f hpack.HeaderField, trailers bool, maxList uint32) error {
	name, value := f.Name, f.Value
	if len(name) == 0 {
		return errors.New("http2: upstream field with an empty name")
	}
	if !validValue([]byte(value)) {
		return fmt.Errorf("http2: upstream field %q has an invalid value", name)
	}
	if name[0] == ':' {
		if trailers || name != ":status" || s.cur.status != 0 || s.cur.hdr.Len() > 0 {
			return fmt.Errorf("http2: upstream pseudo-field %q out of place", name)
		}
		code, err := strconv.Atoi(value)
		if err != nil || len(value) != 3 || code < 100 || code > 999 {
			return fmt.Errorf("http2: upstream :status %q", value)
		}
		s.cur.status = code
		return nil
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !isTokenChar(c) || 'A' <= c && c <= 'Z' {
			return fmt.Errorf("http2: upstream field name %q", name)
		}
	}
	if connectionSpecific([]byte(name)) {
		return fmt.Errorf("http2: connection-specific field %q from upstream", name)
	}
	if trailers {
		s.trailer.Add(name, value)
		return nil
	}
	s.cur.size += len(name) + len(value) + 32
	if s.cur.size > int(maxList) {
		return errors.New("http2: upstream response head over the header list limit")
	}
	if name == "content-length" {
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil || n < 0 || s.cur.length >= 0 && s.cur.length != n {
			return fmt.Errorf("http2: upstream content-length %q", value)
		}
		s.cur.length = n
	}
	s.cur.hdr.Add(name, value)
	return nil
}

// endBlock hands a decoded head (or the trailers) to the exchange.
func (s *clientStream) endBlock(endStream bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.final { // trailers
		if !endStream {
			return errors.New("http2: upstream trailers without END_STREAM")
		}
		return s.endLocked()
	}
	h := s.cur
	s.cur = nil
	switch {
	case h.status == 0:
		return errors.New("http2: upstream response without :status")
	case h.status == 101:
		return errors.New("http2: 101 from an HTTP/2 upstream")
	case h.status < 200 && endStream:
		return errors.New("http2: interim response with END_STREAM")
	}
	h.end = endStream
	s.heads = append(s.heads, h)
	if h.status >= 200 {
		s.final = true
		s.length = h.length
	}
	if endStream {
		if err := s.endLocked(); err != nil {
			return err
		}
	}
	s.cond.Broadcast()
	return nil
}

// endLocked marks the response complete, checking its length.
func (s *clientStream) endLocked() error {
	if s.length >= 0 && s.got != s.length {
		return fmt.Errorf("http2: upstream sent %d body bytes, content-length %d", s.got, s.length)
	}
	s.remoteEnd = true
	s.cond.Broadcast()
	return nil
}

// received takes a DATA frame's payload; n is its flow-controlled length.
func (s *clientStream) received(p []byte, n int64, end bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !s.final:
		return errors.New("http2: upstream DATA before the response head")
	case s.remoteEnd:
		return errors.New("http2: upstream DATA after END_STREAM")
	case n > s.recvWindow:
		return errors.New("http2: upstream sent past the stream window")
	}
	s.recvWindow -= n
	s.got += int64(len(p))
	if s.length >= 0 && s.got > s.length {
		return fmt.Errorf("http2: upstream sent more than content-length %d", s.length)
	}
	s.buf = append(s.buf, p...)
	if end {
		return s.endLocked()
	}
	s.cond.Broadcast()
	return nil
}

// firstToken is the first element of a comma-separated list.
func firstToken(list []byte) []byte {
	for tok := range header.Elements(list) {
		return tok
	}
	return list
}

// websocketAccept is the Sec-WebSocket-Accept answering key (RFC 6455
// §4.2.2): over HTTP/2 there is none, so strait makes the HTTP/1.1
// client's.
func websocketAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}
