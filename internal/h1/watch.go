package h1

import (
	"errors"
	"os"
	"sync"
	"time"

	"github.com/straitproxy/strait/internal/stream"
)

// While a request waits for a slow upstream, nothing reads the client's
// connection, so a client that gives up would go unnoticed until the
// response is written. The watcher reads the client's connection on a
// goroutine beside the exchange (the forwarding path starts it, as
// stream.Downstream.Watch): end of file or an error means the client is
// gone; bytes are the start of a pipelined request (or, after an upgrade,
// of the tunnel), kept in order for the parser (conn.Read) or the tunnel.
// It reads on until the client closes, its buffer fills (a client sending
// that much is there), or it is interrupted, so that a client that
// pipelines a few bytes and then leaves is noticed too.

// watchBufSize bounds what the watcher reads ahead of the parser: room for
// a pipelined request head or two. A client that sends more while its
// request waits is there; the watcher stops, and TCP holds the rest. Each
// waiting request holds one, so long polls by the thousand hold a few MiB.
const watchBufSize = 1 << 10

var watchBufPool = sync.Pool{New: func() any { return new([watchBufSize]byte) }}

// watcher holds what the watcher read ahead. It is written by the watcher
// and read once it is done.
type watcher struct {
	buf  *[watchBufSize]byte // nil when none are kept
	r, w int                 // buf[r:w] is not yet parsed
}

// holds reports whether bytes read ahead wait to be parsed.
func (w *watcher) holds() bool { return w.r < w.w }

// take moves bytes read ahead into p.
func (w *watcher) take(p []byte) int {
	n := copy(p, w.buf[w.r:w.w])
	w.r += n
	w.drop()
	return n
}

// takeAll returns the bytes read ahead, and takes them.
func (w *watcher) takeAll() []byte {
	if w.buf == nil {
		return nil
	}
	b := w.buf[w.r:w.w]
	w.r = w.w
	return b
}

// discard forgets what was read ahead, and gives the buffer back.
func (w *watcher) discard() {
	w.r = w.w
	w.drop()
}

// drop gives the buffer back once it holds nothing unread.
func (w *watcher) drop() {
	if w.buf != nil && w.r == w.w {
		watchBufPool.Put(w.buf)
		w.buf, w.r, w.w = nil, 0, 0
	}
}

// CanWatch readies the watch buffer and reports whether it has room. The
// buffer is the reading goroutine's: the body sender's while it reads the
// body (conn.Read takes from it), else the exchange's.
func (c *conn) CanWatch() bool {
	if c.watch.buf == nil {
		c.watch.buf = watchBufPool.Get().(*[watchBufSize]byte)
	}
	return c.watch.w < len(c.watch.buf)
}

// Watch reads the client's connection into the watch buffer until it is
// interrupted, the client closes, or the buffer fills (at once, if it is
// full). A client that closed is reported to gone. Only the goroutine that
// reads the client may call it, as CanWatch.
func (c *conn) Watch(gone stream.ClientGoneNotifier) {
	if !c.CanWatch() {
		return
	}
	w := &c.watch
	// No deadline: the upstream's timeouts bound the wait. Set, then the
	// interrupt checked: an interrupt is never lost.
	c.sock.SetReadDeadline(time.Time{})
	for w.w < len(w.buf) && !c.sock.Interrupted(false) {
		n, err := c.sock.NC.Read(w.buf[w.w:])
		w.w += n
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				gone.ClientGone()
			}
			return
		}
	}
}
