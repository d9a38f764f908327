package tcpproxy

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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
	conns    [2]*net.TCPConn // client, upstream
	raw      [2]syscall.RawConn
	idle     time.Duration    // 0: none
	last     [2]atomic.Int64  // unix nanoseconds of each half's last bytes moved
	bytes    [2]atomic.Int64  // client to upstream, upstream to client
	totals   [2]*atomic.Int64 // the server's, counted as bytes go
	writing  [2]atomic.Bool   // each half, while it holds bytes to write
	first    atomic.Pointer[string]
	stopOnce sync.Once
}

func newRelay(ps *pipes, client, upstream *net.TCPConn, idle time.Duration, in, out *atomic.Int64) (*relay, error) {
	r := &relay{pipes: ps, conns: [2]*net.TCPConn{client, upstream}, idle: idle, totals: [2]*atomic.Int64{in, out}}
	for i, c := range r.conns {
		rc, err := c.SyscallConn()
		if err != nil {
			return nil, err
		}
		r.raw[i] = rc
	}
	now := time.Now().UnixNano()
	r.last[0].Store(now)
	r.last[1].Store(now)
	return r, nil
}

// run relays until both sides have closed their halves, or one fails.
func (r *relay) run() {
	done := make(chan struct{})
	go func() {
		r.half(1)
		close(done)
	}()
	r.half(0)
	<-done
	r.conns[0].Close()
	r.conns[1].Close()
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

// half moves bytes from side dir to the other (0: client to upstream;
// 1: upstream to client). At the end of dir's stream it passes the FIN
// on and leaves the other direction flowing; on an error it stops the
// relay, passing a reset on as a reset. While dir is quiet it holds
// neither pipe nor buffer.
func (r *relay) half(dir int) {
	src, dst := r.raw[dir], r.raw[1-dir]
	var readBy, writeBy time.Time // the deadlines set
	var p *pipe                   // held while a bulk burst lasts, empty between chunks
	var buf *[]byte               // held while a small burst is read and written
	bulk := false                 // splice from a burst's start
	release := func() {
		if p != nil {
			p.close() // it may hold bytes
			p = nil
		}
		if buf != nil {
			copyBufs.Put(buf)
			buf = nil
		}
	}
	defer release()
	for {
		var n int
		var serr error
		if r.idle > 0 {
			if now := time.Now(); readBy.Sub(now) < r.idle/2 {
				readBy = now.Add(r.idle)
				r.conns[dir].SetReadDeadline(readBy)
			}
		}
		err := src.Read(func(fd uintptr) bool {
			if !bulk {
				if buf == nil {
					buf = copyBufs.Get().(*[]byte)
				}
				var errno syscall.Errno
				switch n, errno = rawIO(syscall.SYS_READ, fd, *buf); errno {
				case syscall.EAGAIN:
					copyBufs.Put(buf)
					buf = nil
					return false
				case 0:
				default:
					serr = errno
				}
				return true
			}
			if p == nil {
				// Nothing is held while the side is quiet.
				switch errno := peek(fd); errno {
				case syscall.EAGAIN:
					return false
				case 0:
				default:
					serr = errno
					return true
				}
				if p, serr = r.pipes.get(); serr != nil {
					return true
				}
			}
			n, serr = spliceFrom(int(fd), p)
			if serr == unix.EAGAIN {
				r.pipes.put(p)
				p = nil
				return false
			}
			return true
		})
		if err == nil {
			err = serr
		}
		if err != nil {
			release()
			if errors.Is(err, os.ErrDeadlineExceeded) && r.idle > 0 {
				// Idle only if the other direction is quiet too; one
				// that waits to write times out on its own (stalled).
				other := time.Unix(0, r.last[1-dir].Load())
				if r.writing[1-dir].Load() {
					other = time.Now()
				}
				if time.Since(other) < r.idle {
					readBy = other.Add(r.idle)
					r.conns[dir].SetReadDeadline(readBy)
					continue
				}
				r.stop(closedIdle, false)
				return
			}
			r.stop(closedReset, isReset(err))
			return
		}
		if n == 0 {
			// The end of dir's stream: passed on, the other way goes on.
			release()
			r.closedFirst([]string{closedClient, closedUpstream}[dir])
			if r.conns[1-dir].CloseWrite() != nil {
				r.stop(closedReset, false)
			}
			return
		}
		r.last[dir].Store(time.Now().UnixNano()) // the stall timeout counts from here
		r.writing[dir].Store(true)
		var write func(fd uintptr, from, to int) (int, error)
		if buf != nil {
			bulk = n == copySize
			write = func(fd uintptr, from, to int) (int, error) {
				m, errno := rawIO(syscall.SYS_WRITE, fd, (*buf)[from:to])
				if errno != 0 {
					return 0, errno
				}
				return m, nil
			}
		} else {
			bulk = n >= copySize
			write = func(fd uintptr, from, to int) (int, error) { return spliceTo(p, int(fd), to-from) }
		}
		for done := 0; done < n; {
			if r.idle > 0 {
				if now := time.Now(); writeBy.Sub(now) < r.idle/2 {
					writeBy = now.Add(r.idle)
					r.conns[1-dir].SetWriteDeadline(writeBy)
				}
			}
			var m int
			err := dst.Write(func(fd uintptr) bool {
				m, serr = write(fd, done, n)
				return serr != unix.EAGAIN
			})
			if err == nil {
				err = serr
			}
			if errors.Is(err, os.ErrDeadlineExceeded) && r.idle > 0 {
				// Stalled only if nothing went for the whole timeout.
				if last := time.Unix(0, r.last[dir].Load()); time.Since(last) < r.idle {
					writeBy = last.Add(r.idle)
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
			done += m
			r.bytes[dir].Add(int64(m))
			r.totals[dir].Add(int64(m))
			r.last[dir].Store(time.Now().UnixNano())
		}
		r.writing[dir].Store(false)
		if buf != nil {
			copyBufs.Put(buf)
			buf = nil
		}
	}
}
