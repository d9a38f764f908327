// Package tunnel relays bytes both ways between two connections until both
// directions end or neither moves for an idle timeout: the body of an
// upgraded (WebSocket) connection.
package tunnel

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Result is what a relay carried, and how it ended.
type Result struct {
	AtoB, BtoA int64 // bytes written to b, and to a
	// AErr and BErr are the first error reading or writing a, and b:
	// which side failed. A relay that ended cleanly, or idle, has none.
	AErr, BErr error
	Idle       bool // it ended because nothing moved either way for idle
}

// errIdle ends a relay in which nothing moved either way for idle.
var errIdle = errors.New("tunnel idle")

// Relay copies a to b and b to a, each direction starting with what was
// read ahead of it (preA: bytes from a; preB: from b). The end of one
// direction is passed on as a half-close, so the other can finish. An
// error in either direction, or idle with no bytes moving either way,
// closes both connections. A direction that ended because the other side
// closed a connection reports no error.
func Relay(a, b net.Conn, preA, preB []byte, idle time.Duration) Result {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var writing atomic.Int32 // directions blocked writing
	var r Result
	var errAB, errBA error
	var abOnB, baOnA bool
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.AtoB, errAB, abOnB = pipe(b, a, preA, idle, &last, &writing)
	}()
	go func() {
		defer wg.Done()
		r.BtoA, errBA, baOnA = pipe(a, b, preB, idle, &last, &writing)
	}()
	wg.Wait()
	// Each error belongs to the connection it happened on; an error from
	// the other direction's closing both is no one's.
	for _, e := range []struct {
		err error
		onA bool
	}{{errAB, !abOnB}, {errBA, baOnA}} {
		switch {
		case e.err == nil || errors.Is(e.err, net.ErrClosed):
		case e.err == errIdle:
			r.Idle = true
		case e.onA && r.AErr == nil:
			r.AErr = e.err
		case !e.onA && r.BErr == nil:
			r.BErr = e.err
		}
	}
	return r
}

// pipe copies src to dst, starting with pre. At the end of src it
// half-closes dst, so the other direction can finish. It ends both
// connections on an error or when neither direction moved for idle, and
// reports whether an error was writing dst (else reading src).
func pipe(dst, src net.Conn, pre []byte, idle time.Duration, last *atomic.Int64, writing *atomic.Int32) (int64, error, bool) {
	var total int64
	write := func(p []byte) (int, error) {
		writing.Add(1)
		defer writing.Add(-1)
		return dst.Write(p)
	}
	if len(pre) > 0 {
		dst.SetWriteDeadline(time.Now().Add(idle))
		n, err := write(pre)
		total += int64(n)
		if err != nil {
			return total, fail(dst, src, err), true
		}
	}
	buf := make([]byte, 32<<10)
	for {
		src.SetReadDeadline(time.Now().Add(idle))
		n, err := src.Read(buf)
		if n > 0 {
			now := time.Now()
			last.Store(now.UnixNano())
			dst.SetWriteDeadline(now.Add(idle))
			w, werr := write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, fail(dst, src, werr), true
			}
		}
		switch {
		case err == nil:
		case err == io.EOF:
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			} else {
				dst.Close()
			}
			return total, nil, false
		case errors.Is(err, os.ErrDeadlineExceeded) &&
			(time.Since(time.Unix(0, last.Load())) < idle || writing.Load() > 0):
			// The other direction is busy, or stuck writing: this one may
			// stay quiet, and a stuck write ends the relay on its own
			// deadline, blaming the side that stopped reading.
		case errors.Is(err, os.ErrDeadlineExceeded):
			return total, fail(dst, src, errIdle), false
		default:
			return total, fail(dst, src, err), false
		}
	}
}

func fail(a, b net.Conn, err error) error {
	a.Close()
	b.Close()
	return err
}
