package h2

import (
	"time"

	"golang.org/x/net/http2"

	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/internal/park"
	"github.com/straitproxy/strait/internal/sockio"
)

// resumeTask serves a parked connection whose socket became readable.
type resumeTask conn

func (t *resumeTask) Run() {
	c := (*conn)(t)
	c.readable = true
	c.run()
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
	c.mu.Lock()
	c.wait.IdleSince = c.idleFrom
	c.mu.Unlock()
	c.wait.IdleEnd = c.waitEnd()
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
	if c.settingsLate(mono.Now()) {
		c.goAway(http2.ErrCodeSettingsTimeout, false)
	} else {
		c.goAway(http2.ErrCodeNo, false)
	}
	c.finish()
}

var errSettingsTimeout = connError{http2.ErrCodeSettingsTimeout, "SETTINGS not acknowledged"}

// settingsLate reports whether the client has not acknowledged strait's
// SETTINGS in time.
func (c *conn) settingsLate(now time.Duration) bool {
	return c.settingsAt != 0 && now-c.settingsAt >= c.srv.settingsTimeout()
}

// waitEnd is when a wait with no stream open ends (mono): at the idle
// timeout, or sooner while strait's SETTINGS are not acknowledged, or a
// frame has begun and not come whole.
func (c *conn) waitEnd() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waitEndLocked()
}

func (c *conn) waitEndLocked() time.Duration {
	end := c.idleFrom + c.srv.idleTimeout()
	if c.settingsAt != 0 {
		end = min(end, c.settingsAt+c.srv.settingsTimeout())
	}
	if !c.partialFrame() {
		c.frameAt = 0
	} else {
		if c.frameAt == 0 {
			c.frameAt = mono.Now()
		}
		end = min(end, c.frameAt+cmpOr(c.srv.Timeouts.Frame, 10*time.Second))
	}
	return end
}

// partialFrame reports whether part of a frame has come and not the rest:
// in the read buffer, or in a TLS record not yet whole.
func (c *conn) partialFrame() bool {
	if n := c.buffered(); n > 0 {
		hdr, _ := c.br.Peek(min(n, frameHeaderLen))
		return n < frameHeaderLen || n < frameHeaderLen+(int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
	}
	return c.under != nil && c.under.MidRecord()
}

// setIdleDeadline bounds the wait for the next frame by the idle timeout
// while no stream is open; with streams open, their own timeouts apply.
// A connection that sent GOAWAY and has no stream left is woken at once.
// Under c.mu, as kickLocked: one of the two sees the other's change. It
// reports false if a kick came: the caller looks again before it reads.
func (c *conn) setIdleDeadline() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closing && len(c.streams) == 0:
		c.rdl.Set(c.nc.SetReadDeadline, sockio.Past)
		c.idleSet = true
	case len(c.streams) == 0:
		// The idle timeout runs from the last stream's end, whatever
		// frames come meanwhile (a client sending PINGs stays idle).
		c.rdl.Ensure(c.nc.SetReadDeadline, mono.Now(), c.srv.idleTimeout(), c.waitEndLocked())
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
