package proxy

import "time"

// While a request waits for a slow upstream, nothing reads the client's
// connection, so a client that gives up would go unnoticed until the
// response is written. The watcher reads one byte on a goroutine of its
// own: end of file or an error means the client is gone, and the wait for
// the upstream is interrupted; a byte is the start of a pipelined request
// (or, after an upgrade, of the tunnel), handed on by conn.Read. It runs
// only for responses slower than watchAfter, so fast requests pay nothing
// for it, and its goroutine ends with the wait: an idle connection keeps
// none.

// watchAfter is how long the exchange waits for a response head before it
// starts watching the client.
const watchAfter = 20 * time.Millisecond

// startWatch starts watching, and reports whether it did: not while bytes
// of the next request are already buffered (the client is there). The
// request body, if any, must have been sent.
func (c *conn) startWatch(up *upConn) bool {
	if c.rd.Buffered() > 0 || c.peeked {
		return false
	}
	if c.watchDone == nil {
		c.watchDone = make(chan struct{}, 1)
	}
	// The upstream's timeouts bound the wait; the client's read has none.
	c.rdl.set(c.nc.SetReadDeadline, time.Time{})
	c.share(up)
	go c.watch(up)
	return true
}

func (c *conn) watch(up *upConn) {
	n, err := c.nc.Read(c.watchByte[:])
	switch {
	case n == 1:
		c.peeked = true
	case err != nil && !isTimeout(err):
		c.clientGone = true
		c.sess.end(ErrClientGone)
		up.rdl.interrupt(up.nc.SetReadDeadline)
	}
	c.watchDone <- struct{}{}
}

// stopWatch ends the watcher's read and waits for it. Its findings
// (clientGone, peeked) may be read from then on.
func (c *conn) stopWatch(up *upConn) {
	c.rdl.set(c.nc.SetReadDeadline, aLongTimeAgo)
	<-c.watchDone
	c.unshare(up)
}
