package proxy

import "time"

// While a request waits for a slow upstream, nothing reads the client's
// connection, so a client that gives up would go unnoticed until the
// response is written. The watcher reads one byte in the background: end of
// file or an error means the client is gone and the upstream wait is cut
// short; a byte is the start of a pipelined request and is handed to the
// parser. It runs only for responses slower than watchAfter, so fast
// requests pay nothing for it.

// startWatch starts watching, and reports whether it did: not while bytes
// of the next request are already buffered (the client is there) or the
// request body is still being read.
func (c *conn) startWatch(up *upConn) bool {
	if c.rd.Buffered() > 0 || c.peeked || !c.rd.Body().Done() {
		return false
	}
	c.watchOnce.Do(func() {
		c.watchStart = make(chan *upConn)
		c.watchDone = make(chan struct{})
		go c.watchLoop()
	})
	// The upstream's timeouts bound the wait; the client's read has none.
	c.rdl.set(c.nc.SetReadDeadline, time.Time{})
	c.share(up)
	c.watchStart <- up
	return true
}

func (c *conn) watchLoop() {
	for up := range c.watchStart {
		n, err := c.nc.Read(c.watchByte[:])
		switch {
		case n == 1:
			c.peeked = true
		case err != nil && !isTimeout(err):
			c.clientGone = true // read after stopWatch
			up.nc.SetReadDeadline(aLongTimeAgo)
		}
		c.watchDone <- struct{}{}
	}
}

// stopWatch ends the background read and waits for it.
func (c *conn) stopWatch(up *upConn) {
	c.rdl.set(c.nc.SetReadDeadline, aLongTimeAgo)
	<-c.watchDone
	c.unshare(up)
}
