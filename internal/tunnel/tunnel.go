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

// Result is what a relay carried, and how each direction ended.
type Result struct {
	AtoB, BtoA       int64 // bytes written to b, and to a
	AtoBErr, BtoAErr error // nil for a direction that ended cleanly
}

// Relay copies a to b and b to a, each direction starting with what was
// read ahead of it (preA: bytes from a; preB: from b). The end of one
// direction is passed on as a half-close, so the other can finish. An
// error in either direction, or idle with no bytes moving either way,
// closes both connections. A direction that ended because the other side
// closed a connection reports no error.
func Relay(a, b net.Conn, preA, preB []byte, idle time.Duration) Result {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var r Result
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.AtoB, r.AtoBErr = pipe(b, a, preA, idle, &last)
	}()
	go func() {
		defer wg.Done()
		r.BtoA, r.BtoAErr = pipe(a, b, preB, idle, &last)
	}()
	wg.Wait()
	if errors.Is(r.AtoBErr, net.ErrClosed) {
		r.AtoBErr = nil
	}
	if errors.Is(r.BtoAErr, net.ErrClosed) {
		r.BtoAErr = nil
	}
	return r
}

// pipe copies src to dst, starting with pre. At the end of src it
// half-closes dst, so the other direction can finish. It ends both
// connections on an error or when neither direction moved for idle.
func pipe(dst, src net.Conn, pre []byte, idle time.Duration, last *atomic.Int64) (int64, error) {
	var total int64
	if len(pre) > 0 {
		dst.SetWriteDeadline(time.Now().Add(idle))
		n, err := dst.Write(pre)
		total += int64(n)
		if err != nil {
			return total, fail(dst, src, err)
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
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, fail(dst, src, werr)
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
			return total, nil
		case errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, last.Load())) < idle:
			// The other direction is busy: this one may stay quiet.
		default:
			return total, fail(dst, src, err)
		}
	}
}

func fail(a, b net.Conn, err error) error {
	a.Close()
	b.Close()
	return err
}
