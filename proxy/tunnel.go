package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/http1"
)

// upgradeOffer returns the protocols of the request's Upgrade field that
// Options.Upgrades allows, as the field to send upstream; nil if none (the
// request then goes as a plain one). h2c is never offered: strait speaks
// HTTP/1.1 upstream. An HTTP/1.0 request's Upgrade is ignored (RFC 9110
// §7.8).
func (c *conn) upgradeOffer() []byte {
	if c.req.Upgrade == nil || c.req.Minor == 0 {
		return nil
	}
	var offer []byte
	for tok := range header.Elements(c.req.Upgrade) {
		if c.srv.upgradeAllowed(tok) {
			if offer != nil {
				offer = append(offer, ", "...)
			}
			offer = append(offer, tok...)
		}
	}
	return offer
}

// upgradeAllowed reports whether Options.Upgrades lists the protocol of an
// Upgrade token ("websocket", "foo/2").
func (srv *Server) upgradeAllowed(tok []byte) bool {
	name := protocolName(tok)
	if header.EqualFold(name, "h2c") {
		return false
	}
	for _, p := range srv.opts.Upgrades {
		if header.EqualFold(name, p) {
			return true
		}
	}
	return false
}

// protocolName is an Upgrade token without its version.
func protocolName(tok []byte) []byte {
	for i, ch := range tok {
		if ch == '/' {
			return tok[:i]
		}
	}
	return tok
}

// switchedTo checks a 101 response against the upgrade the request
// offered, and returns the protocol it switches to: it must be one the
// client asked for and strait allows (RFC 9110 §7.8).
func (c *conn) switchedTo(resp *http1.Response, offer []byte) ([]byte, *Error) {
	if offer == nil {
		return nil, &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "upstream switched protocols unasked"}
	}
	proto := resp.Header.Get("upgrade")
	if len(proto) > 0 {
		for tok := range header.Elements(offer) {
			if header.EqualFold(protocolName(proto), protocolName(tok)) {
				return proto, nil
			}
		}
	}
	return nil, &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "upstream switched to a protocol not asked for"}
}

// tunnel relays the 101 response and then bytes both ways until both sides
// are done, the tunnel is idle for Timeouts.TunnelIdle, or the server
// closes.
func (c *conn) tunnel(s *Session, up *upConn, proto []byte) *Error {
	resp := &up.resp
	stripConnFields(&resp.Header, resp.Conn)
	if _, err := c.writeResponseHead(&responseHead{status: 101, reason: resp.Reason, header: &resp.Header, upgrade: proto}); err != nil {
		return &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "101 response head", Err: err}
	}
	s.answered = true
	s.Stats.Status = 101
	s.Response.Status = 101
	if err := c.bw.Flush(); err != nil {
		return c.downstreamWriteError(err)
	}
	c.req.KeepAlive = false // the connection is the tunnel's now

	// Server.Close ends the tunnel by shutting down both its sockets.
	srv := c.srv
	srv.mu.Lock()
	c.tunnelUp = up.nc
	closing := srv.closing
	srv.mu.Unlock()
	defer func() {
		srv.mu.Lock()
		c.tunnelUp = nil
		srv.mu.Unlock()
	}()
	if closing {
		return nil
	}

	idle := srv.opts.Timeouts.TunnelIdle
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	var upErr, downErr error
	wg.Add(2)
	// Bytes that arrived with the heads are the first of each direction;
	// the client's, then those the watcher read while the 101 was awaited.
	fromClient := c.rd.TakeBuffered()
	if w := c.takeWatched(); len(w) > 0 {
		fromClient = append(fromClient[:len(fromClient):len(fromClient)], w...)
	}
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
