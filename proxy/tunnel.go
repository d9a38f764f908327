package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/internal/http1"
)

// tunnel relays the 101 response and then bytes both ways until both sides
// are done or the tunnel is idle for Timeouts.TunnelIdle.
func (c *conn) tunnel(s *Session, up *upConn) *Error {
	resp := &up.resp
	down := c.writer()
	buf := http1.AppendStatusLine(down.AvailableBuffer(), 101, resp.Reason)
	buf, err := http1.AppendHeader(buf, &resp.Header)
	if err != nil {
		return &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "101 response head", Err: err}
	}
	buf = append(buf, "\r\n"...)
	s.answered = true
	s.Stats.Status = 101
	s.Response.Status = 101
	if _, err := down.Write(buf); err != nil {
		return c.downstreamWriteError(err)
	}
	if err := down.Flush(); err != nil {
		return c.downstreamWriteError(err)
	}
	c.req.KeepAlive = false // the connection is the tunnel's now

	idle := c.srv.opts.Timeouts.TunnelIdle
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	var upErr, downErr error
	wg.Add(2)
	// Bytes that arrived with the heads are the first of each direction.
	fromClient := c.rd.TakeBuffered()
	fromUpstream := up.rd.TakeBuffered()
	go func() {
		defer wg.Done()
		n, err := pipe(up.nc, c.nc, fromClient, idle, &last)
		s.Stats.BytesIn += n
		upErr = err
	}()
	go func() {
		defer wg.Done()
		n, err := pipe(c.nc, up.nc, fromUpstream, idle, &last)
		s.Stats.BytesOut += n
		downErr = err
	}()
	wg.Wait()
	switch {
	case downErr != nil && !errors.Is(downErr, net.ErrClosed):
		return &Error{Side: Upstream, Kind: KindClosed, Where: "tunnel", Err: downErr}
	case upErr != nil && !errors.Is(upErr, net.ErrClosed):
		return &Error{Side: Downstream, Kind: KindDownstreamGone, Where: "tunnel", Err: upErr}
	}
	return nil
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
		case isTimeout(err) && time.Since(time.Unix(0, last.Load())) < idle:
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
