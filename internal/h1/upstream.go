package h1

import (
	"bufio"
	"net"
	"time"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/fdlimit"
	"github.com/straitproxy/strait/internal/http1"
	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/internal/sockio"
	"github.com/straitproxy/strait/internal/stream"
)

// Upstream is an HTTP/1.1 connection to a peer, carrying one exchange at
// a time. It lives in the shared pool between exchanges, keeping its
// writer and a small read buffer: fetching them from pools for every
// request cost more.
type Upstream struct {
	sock    sockio.Socket
	rd      http1.Reader
	bw      *bufio.Writer
	cw      http1.ChunkedWriter
	chunked bool // the request body goes chunked
	resp    http1.Response
	out     stream.Response // resp, as the forwarding path sees it

	// Deadlines: rolling ones of readIdle (when not 0) and writeIdle,
	// capped by the exchange's total deadline (limit).
	readIdle  time.Duration
	bodyIdle  time.Duration // readIdle once the response head is read
	writeIdle time.Duration
	limit     time.Duration // mono; 0: none
	lastWrite time.Duration // when the last write began (mono)
	written   int64         // bytes written in the current exchange
}

var _ stream.Upstream = (*Upstream)(nil)

// NewUpstream returns nc, just dialled, as an Upstream whose responses
// are read within limits. Its socket was counted (fdlimit.TakeSocket);
// Close uncounts it.
func NewUpstream(nc net.Conn, limits http1.Limits) *Upstream {
	u := &Upstream{}
	u.sock.Init(nc, sockio.FD(nc))
	u.init(limits)
	return u
}

// NewUpstreamWrapped is NewUpstream for a connection wrapped around the
// socket under (TLS): it is read and written through wrapped only.
func NewUpstreamWrapped(wrapped net.Conn, under *sockio.Underlay, limits http1.Limits) *Upstream {
	u := &Upstream{}
	u.sock.InitWrapped(wrapped, under)
	u.init(limits)
	return u
}

func (u *Upstream) init(limits http1.Limits) {
	u.bw = bufio.NewWriterSize(u, 4<<10)
	u.rd.Reset(u, limits)
}

// Quiet reports whether nothing waits to be read on the idle connection:
// it is open, and the peer sent nothing after its last response. Those
// bytes would otherwise be read as the next request's response: one
// client's answer given to another. (For TLS: nothing arrived on the
// socket, not even a close_notify.)
func (u *Upstream) Quiet() bool {
	if !sockio.Quiet(u.sock.FD) {
		return false
	}
	under := u.sock.Under()
	if under == nil {
		return true
	}
	// The wrapper may have taken from the socket more than the last
	// response (TLS reads whole records, several at once): a read of what
	// it holds tells, and so does part of a record it holds. It finds
	// nothing, or the connection is not used again.
	var b [1]byte
	under.Held = true
	n, err := u.sock.NC.Read(b[:])
	under.Held = false
	return n == 0 && err == sockio.ErrWouldBlock && !under.MidRecord()
}

func (u *Upstream) Read(p []byte) (int, error) {
	if u.limit == 0 || mono.Now() < u.limit { // past the total deadline: net.Conn reports it
		if n := u.sock.ReadRaw(p); n > 0 {
			return n, nil
		}
	}
	if u.readIdle > 0 {
		u.sock.EnsureReadDeadline(mono.Now(), u.readIdle, u.limit)
	}
	if u.sock.Interrupted(false) { // the watcher or the body sender ended the exchange
		return 0, sockio.ErrInterrupted
	}
	return u.sock.NC.Read(p)
}

func (u *Upstream) Write(p []byte) (int, error) {
	u.lastWrite = mono.Now()
	n := 0
	if u.limit == 0 || u.lastWrite < u.limit { // past the total deadline: net.Conn reports it
		n = u.sock.WriteRaw(p)
	}
	u.written += int64(n)
	if n == len(p) {
		return n, nil
	}
	u.sock.EnsureWriteDeadline(u.lastWrite, u.writeIdle, u.limit)
	if u.sock.Interrupted(true) { // the body sender is being stopped
		return n, sockio.ErrInterrupted
	}
	m, err := u.sock.NC.Write(p[n:])
	u.written += int64(m)
	return n + m, err
}

// Close closes the connection and gives its read buffer back. Only its
// owner (an exchange, or the pool) calls it, once.
func (u *Upstream) Close() error {
	u.rd.Release()
	fdlimit.ReleaseSocket()
	if under := u.sock.Under(); under != nil {
		under.NoWait = true // a close_notify goes if it fits; Close does not wait
	}
	return u.sock.NC.Close()
}

// Exchange returns u: an HTTP/1.1 connection is its exchange.
func (u *Upstream) Exchange() stream.Upstream { return u }

// Streams is 1: HTTP/1.1 carries one exchange at a time.
func (u *Upstream) Streams() int { return 1 }

// Multiplexed is false: one exchange at a time.
func (u *Upstream) Multiplexed() bool { return false }

func (u *Upstream) Begin(limit, write, read time.Duration) {
	u.written, u.limit = 0, limit
	// The write deadline rolls across exchanges: it bounds each write.
	u.writeIdle, u.readIdle, u.bodyIdle = write, 0, read
}

// WriteHead buffers the request head. Host, if the request has none, is
// host.
func (u *Upstream) WriteHead(method string, path []byte, h *header.Header, host string, body int64, upgrade []byte) error {
	buf := u.bw.AvailableBuffer()
	if len(path) == 0 {
		path = []byte{'/'}
	}
	buf, err := http1.AppendRequestLine(buf, []byte(method), path)
	if err != nil {
		return err
	}
	if len(h.Get("host")) == 0 {
		h.Del("Host")
		buf = append(append(append(buf, "Host: "...), host...), "\r\n"...)
	}
	if buf, err = http1.AppendHeader(buf, h); err != nil {
		return err
	}
	u.chunked = body < 0
	switch {
	case u.chunked:
		buf = append(buf, "Transfer-Encoding: chunked\r\n"...)
		u.cw.Reset(u.bw)
	case body > 0:
		buf = http1.AppendContentLength(buf, body)
	}
	if upgrade != nil {
		buf, err = http1.AppendField(append(buf, "Connection: upgrade\r\n"...), []byte("Upgrade"), upgrade)
		if err != nil {
			return err
		}
	}
	_, err = u.bw.Write(append(buf, "\r\n"...))
	return err
}

func (u *Upstream) WriteBody(p []byte) error {
	var err error
	if u.chunked {
		_, err = u.cw.Write(p)
	} else {
		_, err = u.bw.Write(p)
	}
	return err
}

func (u *Upstream) Flush() error { return u.bw.Flush() }

// EndBody ends a chunked body with its trailer fields.
func (u *Upstream) EndBody(trailer *header.Header) error {
	if !u.chunked {
		return nil
	}
	return u.cw.Close(trailer)
}

func (u *Upstream) Written() int64           { return u.written }
func (u *Upstream) LastWrite() time.Duration { return u.lastWrite }

// ReadHead reads a response head. The deadline counts from when the
// request was sent, so the one set for the last response on this
// connection often still fits.
func (u *Upstream) ReadHead(method string, from, wait time.Duration) (*stream.Response, error) {
	u.sock.EnsureReadDeadline(from, wait, u.limit)
	if err := u.rd.ReadResponse(&u.resp, []byte(method)); err != nil {
		return nil, err
	}
	r, o := &u.resp, &u.out
	o.Status, o.Reason, o.Header, o.Conn = r.Status, r.Reason, &r.Header, r.Conn
	switch r.Framing {
	case http1.NoBody:
		o.Length = 0
	case http1.LengthBody:
		o.Length = r.ContentLength
	default:
		o.Length = -1
	}
	if r.Status >= 200 {
		u.readIdle = u.bodyIdle
	}
	return o, nil
}

func (u *Upstream) ReadBody() ([]byte, error) { return u.rd.Body().Next() }
func (u *Upstream) BodyBuffered() bool        { return u.rd.Body().Ready() }
func (u *Upstream) BodyDone() bool            { return u.rd.Body().Done() }
func (u *Upstream) Trailer() *header.Header   { return &u.rd.Body().Trailer }

// Finish reports whether the connection may carry another exchange: the
// whole request went, the whole response came and nothing after it, and
// no wait was interrupted.
func (u *Upstream) Finish(sentWhole bool) bool {
	reusable := sentWhole && u.resp.KeepAlive && u.rd.Body().Done() && u.rd.Buffered() == 0 &&
		!u.sock.Interrupted(false)
	u.rd.Trim()
	return reusable
}

func (u *Upstream) Detach() (net.Conn, []byte) { return u.sock.NC, u.rd.TakeBuffered() }

func (u *Upstream) Share()   { u.sock.Share() }
func (u *Upstream) Unshare() { u.sock.Unshare() }

func (u *Upstream) Interrupt(d stream.Dir)        { u.sock.Interrupt(d == stream.Write) }
func (u *Upstream) Interrupted(d stream.Dir) bool { return u.sock.Interrupted(d == stream.Write) }
func (u *Upstream) ClearInterrupt(d stream.Dir)   { u.sock.ClearInterrupt(d == stream.Write) }
