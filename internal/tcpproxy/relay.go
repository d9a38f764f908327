package tcpproxy

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/straitproxy/strait/internal/sockio"
)

// How a relay ended first, for its access log line.
const (
	closedClient   = "client"   // the client sent FIN first
	closedUpstream = "upstream" // the upstream did
	closedIdle     = "idle"     // nothing moved either way for the idle timeout
	closedStalled  = "stalled"  // a side took nothing for the idle timeout
	closedReset    = "reset"    // a side reset the connection, or failed
	closedDrain    = "drain"    // the drain timeout of a stopping listener
)

// relay is a client connection and its upstream connection, with bytes
// moving both ways: small messages by a read and a write, bulk by splice,
// through a kernel pipe.
type relay struct {
	pipes    *pipes
	conns    [2]conn // client, upstream
	raw      [2]syscall.RawConn
	idle     time.Duration    // 0: none
	halfIdle time.Duration    // once a side has sent its FIN; 0: idle
	ended    atomic.Bool      // a side has sent its FIN
	last     [2]atomic.Int64  // unix nanoseconds of each half's last bytes moved
	bytes    [2]atomic.Int64  // client to upstream, upstream to client
	totals   [2]*atomic.Int64 // the server's, counted as bytes go
	writing  [2]atomic.Bool   // each half, while it holds bytes to write
	halves   [2]half
	first    atomic.Pointer[string]
	stopOnce sync.Once
}

func newRelay(ps *pipes, client, upstream conn, idle, halfIdle time.Duration, in, out *atomic.Int64) (*relay, error) {
	r := &relay{pipes: ps, conns: [2]conn{client, upstream}, idle: idle, halfIdle: halfIdle, totals: [2]*atomic.Int64{in, out}}
	for i, c := range r.conns {
		rc, err := c.SyscallConn()
		if err != nil {
			return nil, err
		}
		r.raw[i] = rc
	}
	now := time.Now().UnixNano()
	for dir := range r.halves {
		h := &r.halves[dir]
		h.r, h.dir = r, dir
		h.read, h.written = h.readOnce, h.writeOnce
		r.last[dir].Store(now)
	}
	return r, nil
}

// run relays until both sides have closed their halves, or one fails.
func (r *relay) run() {
	done := make(chan struct{})
	go func() {
		r.halves[1].move()
		close(done)
	}()
	r.halves[0].move()
	<-done
	r.conns[0].Close()
	r.conns[1].Close()
}

// timeout is how long the relay may go without moving a byte: the idle
// timeout, or, once a side has sent its FIN, the half-closed one if
// shorter (a client that connects and closes must not hold a relay to a
// server that waits for it to speak).
func (r *relay) timeout() time.Duration {
	if r.ended.Load() && r.halfIdle > 0 && (r.idle == 0 || r.halfIdle < r.idle) {
		return r.halfIdle
	}
	return r.idle
}

// latest is when the relay last moved a byte, either way; now if a side
// holds bytes it is writing (a write that waits times out on its own).
func (r *relay) latest() time.Time {
	if r.writing[0].Load() || r.writing[1].Load() {
		return time.Now()
	}
	return time.Unix(0, max(r.last[0].Load(), r.last[1].Load()))
}

// closedFirst records how the relay began to end, once.
func (r *relay) closedFirst(how string) { r.first.CompareAndSwap(nil, &how) }

// firstClosed says how the relay began to end.
func (r *relay) firstClosed() string {
	if p := r.first.Load(); p != nil {
		return *p
	}
	return ""
}

// stop ends the relay at once: both connections close, and the halves
// return. With reset, each side gets a reset rather than a FIN.
func (r *relay) stop(how string, reset bool) {
	r.closedFirst(how)
	r.stopOnce.Do(func() {
		for _, c := range r.conns {
			if reset {
				c.SetLinger(0)
			}
			c.Close()
		}
	})
}

// copySize is what the first read of a burst of bytes takes, through
// user space: one read and one write move a small message, where a peek
// and two splices would take three system calls. A burst that fills it
// goes on by splice, and so do the bursts after it until one is small
// again (HAProxy's splice-auto works alike).
const copySize = 16 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copySize); return &b }}

// half is one direction's state: what its read and write callbacks
// (bound once, so that a message allocates nothing) work on.
type half struct {
	r             *relay
	dir           int
	p             *pipe   // held while a bulk burst lasts, empty between chunks
	buf           *[]byte // held while a small burst is read and written
	bulk          bool    // splice from a burst's start
	n, done       int     // bytes read, and written of those
	m             int     // the last write's
	err           error   // the last call's
	read, written func(fd uintptr) bool
}

// release gives back what h holds.
func (h *half) release() {
	if h.p != nil {
		h.p.close() // it may hold bytes
		h.p = nil
	}
	if h.buf != nil {
		copyBufs.Put(h.buf)
		h.buf = nil
	}
}

// readOnce reads what fd has, by read or by splice: false (to wait) when
// it has nothing. Nothing is held while the side is quiet.
func (h *half) readOnce(fd uintptr) bool {
	h.err = nil
	if !h.bulk {
		if h.buf == nil {
			h.buf = copyBufs.Get().(*[]byte)
		}
		var errno syscall.Errno
		switch h.n, errno = sockio.RawIO(syscall.SYS_READ, fd, *h.buf); errno {
		case syscall.EAGAIN:
			copyBufs.Put(h.buf)
			h.buf = nil
			return false
		case 0:
		default:
			h.err = errno
		}
		return true
	}
	if h.p == nil {
		switch errno := sockio.Peek(fd); errno {
		case syscall.EAGAIN:
			return false
		case 0:
		default:
			h.err = errno
			return true
		}
		if h.p, h.err = h.r.pipes.get(); h.err != nil {
			return true
		}
	}
	h.n, h.err = spliceFrom(int(fd), h.p)
	if h.err == unix.EAGAIN {
		h.r.pipes.put(h.p)
		h.p = nil
		if sockio.Peek(fd) == 0 {
			// Bytes are there, and splice takes none: it stops at TCP
			// urgent data, where read goes on past the urgent byte.
			h.bulk = false
			return h.readOnce(fd)
		}
		return false
	}
	return true
}

// writeOnce writes what is left of the bytes read to fd: false (to wait)
// when fd takes none now.
func (h *half) writeOnce(fd uintptr) bool {
	if h.buf != nil {
		var errno syscall.Errno
		h.m, errno = sockio.RawIO(syscall.SYS_WRITE, fd, (*h.buf)[h.done:h.n])
		h.err = nil
		if errno != 0 {
			h.err = errno
		}
	} else {
		h.m, h.err = spliceTo(h.p, int(fd), h.n-h.done)
	}
	return h.err != unix.EAGAIN
}

// move moves bytes from side h.dir to the other (0: client to upstream;
// 1: upstream to client). At the end of its stream it passes the FIN on
// and leaves the other direction flowing; on an error it stops the
// relay, passing a reset on as a reset.
func (h *half) move() {
	r, dir := h.r, h.dir
	src, dst := r.raw[dir], r.raw[1-dir]
	var readBy, writeBy time.Time // the deadlines set
	renew := true                 // bytes moved: the read deadline may be pushed on
	defer h.release()
	for {
		// The read deadline is pushed on only after bytes come, and then
		// at most every half timeout; when it passes, the relay's last
		// byte either way says whether it was idle, and sets it anew.
		if t := r.timeout(); t > 0 && renew {
			if now := time.Now(); readBy.Sub(now) < t/2 {
				readBy = now.Add(t)
				r.conns[dir].SetReadDeadline(readBy)
			}
			renew = false
		}
		err := src.Read(h.read)
		if err == nil {
			err = h.err
		}
		if err != nil {
			h.release()
			if t := r.timeout(); errors.Is(err, os.ErrDeadlineExceeded) && t > 0 {
				if latest := r.latest(); time.Since(latest) < t {
					readBy = latest.Add(t)
					r.conns[dir].SetReadDeadline(readBy)
					continue
				}
				r.stop(closedIdle, false)
				return
			}
			r.stop(closedReset, isReset(err))
			return
		}
		if h.n == 0 {
			// The end of dir's stream: passed on, the other way goes on,
			// within the half-closed timeout.
			h.release()
			r.closedFirst([]string{closedClient, closedUpstream}[dir])
			if r.ended.Swap(true) {
				return // the other way has ended: the close that follows sends the FIN
			}
			if r.conns[1-dir].CloseWrite() != nil {
				r.stop(closedReset, false)
			} else if t := r.timeout(); t > 0 {
				r.conns[1-dir].SetReadDeadline(r.latest().Add(t))
			}
			return
		}
		renew = true
		r.last[dir].Store(time.Now().UnixNano()) // the stall timeout counts from here
		r.writing[dir].Store(true)
		if h.buf != nil {
			h.bulk = h.n == copySize
		} else {
			h.bulk = h.n >= copySize
		}
		for h.done = 0; h.done < h.n; {
			t := r.timeout()
			if now := time.Now(); t > 0 && writeBy.Sub(now) < t/2 {
				writeBy = now.Add(t)
				r.conns[1-dir].SetWriteDeadline(writeBy)
			}
			err := dst.Write(h.written)
			if err == nil {
				err = h.err
			}
			if errors.Is(err, os.ErrDeadlineExceeded) && t > 0 {
				// Stalled only if nothing went for the whole timeout.
				if last := time.Unix(0, r.last[dir].Load()); time.Since(last) < t {
					writeBy = last.Add(t)
					r.conns[1-dir].SetWriteDeadline(writeBy)
					continue
				}
				r.stop(closedStalled, false)
				return
			}
			if err != nil {
				r.stop(closedReset, isReset(err))
				return
			}
			h.done += h.m
			r.bytes[dir].Add(int64(h.m))
			r.totals[dir].Add(int64(h.m))
			r.last[dir].Store(time.Now().UnixNano())
		}
		r.writing[dir].Store(false)
		if h.buf != nil {
			copyBufs.Put(h.buf)
			h.buf = nil
		}
	}
}
