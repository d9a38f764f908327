package proxy

import (
	"sync"
	"time"
)

// While a request waits for a slow upstream, nothing reads the client's
// connection, so a client that gives up would go unnoticed until the
// response is written. The watcher reads the client's connection on a
// goroutine beside the exchange: end of file or an error means the client
// is gone, and the wait for the upstream is interrupted; bytes are the
// start of a pipelined request (or, after an upgrade, of the tunnel), kept
// in order for the parser (conn.Read) or the tunnel. The watcher reads on
// until the client closes, its buffer fills (a client sending that much is
// there), or the exchange stops it, so that a client that pipelines a few
// bytes and then leaves is noticed too.
//
// It runs only for responses slower than watchAfter, so fast requests pay
// nothing for it, and its goroutine ends with the wait: an idle connection
// keeps none. For a request with a body, the body sender becomes the
// watcher once it has sent the body (bodySender).

// watchAfter is how long the exchange waits for a response head before it
// starts watching the client.
const watchAfter = 20 * time.Millisecond

// watchBufSize bounds what the watcher reads ahead of the parser: room for
// a pipelined request head or two. A client that sends more while its
// request waits is there; the watcher stops, and TCP holds the rest. Each
// waiting request holds one, so long polls by the thousand hold a few MiB.
const watchBufSize = 1 << 10

var watchBufPool = sync.Pool{New: func() any { return new([watchBufSize]byte) }}

// canWatch readies the watch buffer and reports whether it has room.
func (c *conn) canWatch() bool {
	if c.watchBuf == nil {
		c.watchBuf = watchBufPool.Get().(*[watchBufSize]byte)
	}
	return c.watchW < len(c.watchBuf)
}

// startWatch starts a watcher on a goroutine of its own, and reports
// whether it did. The request body, if any, must have been sent.
func (c *conn) startWatch(up *upConn) bool {
	if !c.canWatch() {
		return false
	}
	if c.watchDone == nil {
		c.watchDone = make(chan struct{}, 1)
	}
	c.share(up)
	go func() {
		c.watchClient(up)
		c.watchDone <- struct{}{}
	}()
	return true
}

// watchClient reads the client's connection into the watch buffer until
// it is interrupted (c.rdl), the client closes, or the buffer fills. A
// client that closed ends the request: its context, and the exchange's
// wait for the upstream.
func (c *conn) watchClient(up *upConn) {
	// No deadline: the upstream's timeouts bound the wait. Set, then the
	// interrupt checked: an interrupt is never lost.
	c.rdl.set(c.nc.SetReadDeadline, time.Time{})
	for c.watchW < len(c.watchBuf) && !c.rdl.interrupted() {
		n, err := c.nc.Read(c.watchBuf[c.watchW:])
		c.watchW += n
		if err != nil {
			if !isTimeout(err) {
				c.clientGone = true
				c.sess.end(ErrClientGone)
				up.rdl.interrupt(up.nc.SetReadDeadline)
			}
			return
		}
	}
}

// stopWatch ends the watcher's read and waits for it. Its findings
// (clientGone, the bytes it read) may be used from then on.
func (c *conn) stopWatch(up *upConn) {
	c.rdl.interrupt(c.nc.SetReadDeadline)
	<-c.watchDone
	c.rdl.reset(c.nc.SetReadDeadline)
	c.unshare(up)
	c.dropWatchBuf()
}

// watched returns the bytes the watcher read that the parser has not
// taken, and takes them.
func (c *conn) takeWatched() []byte {
	if c.watchBuf == nil {
		return nil
	}
	b := c.watchBuf[c.watchR:c.watchW]
	c.watchR = c.watchW
	return b
}

// dropWatchBuf gives the watch buffer back once it holds nothing unread.
func (c *conn) dropWatchBuf() {
	if c.watchBuf != nil && c.watchR == c.watchW {
		watchBufPool.Put(c.watchBuf)
		c.watchBuf, c.watchR, c.watchW = nil, 0, 0
	}
}
