// Package proxyheader reads and writes PROXY protocol headers (v1 and
// v2; github.com/pires/go-proxyproto parses and builds them) at the
// start of a connection. It reads exactly the header and nothing past it:
// the rest stays in the socket, so a TCP relay still splices the bare
// connection and HTTP keeps its raw reads.
package proxyheader

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/straitproxy/strait/internal/sockio"
)

// MaxHeader is the largest header read: v2's 16 bytes and TLVs up to
// 4 KiB (cloud load balancers add a few small ones).
const MaxHeader = 16 + 4096

// maxPeeks bounds the segments a header may come in: each is peeked
// and looked at whole again, so a header sent a byte at a time would
// cost its square.
const maxPeeks = 32

// DefaultTimeout bounds the wait for a header.
const DefaultTimeout = 5 * time.Second

var (
	// ErrUntrusted: the peer is not one that may send a header, and a
	// listener that takes them takes no connection without one.
	ErrUntrusted = errors.New("proxy protocol: the peer is not a trusted proxy")
	ErrMissing   = errors.New("proxy protocol: no PROXY header")
	ErrMalformed = errors.New("proxy protocol: malformed PROXY header")
)

var (
	sigV1 = []byte("PROXY ")
	sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

var bufs = sync.Pool{New: func() any { b := make([]byte, MaxHeader); return &b }}

// Read takes the PROXY header at the start of c, waiting until deadline
// for it, and returns the addresses it gives: the client's and the one
// it connected to. A header that gives none (v2 LOCAL, a load balancer's
// own health check; v1 UNKNOWN) gives c's own.
func Read(c Conn, deadline time.Time) (src, dst netip.AddrPort, err error) {
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	size, peeks := 0, 0
	err = sockio.PeekUntil(c, *bp, deadline, func(b []byte) (bool, error) {
		var err error
		size, err = headerSize(b)
		if peeks++; size == 0 && err == nil && peeks == maxPeeks {
			return false, fmt.Errorf("%w: still incomplete after %d segments", ErrMalformed, maxPeeks)
		}
		return size > 0, err
	})
	switch {
	case err == sockio.ErrPeekFull:
		return src, dst, fmt.Errorf("%w: over %d bytes", ErrMalformed, MaxHeader)
	case err != nil:
		return src, dst, err
	}
	hdr := (*bp)[:size]
	c.SetReadDeadline(deadline)
	defer c.SetReadDeadline(time.Time{})
	if _, err := io.ReadFull(c, hdr); err != nil {
		return src, dst, err
	}
	h, err := proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(hdr), len(hdr)))
	if err != nil {
		return src, dst, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	src, dst = sockio.AddrPort(c.RemoteAddr()), sockio.AddrPort(c.LocalAddr())
	if h.Command.IsLocal() || h.TransportProtocol == proxyproto.UNSPEC {
		return src, dst, nil
	}
	s, sok := h.SourceAddr.(*net.TCPAddr)
	d, dok := h.DestinationAddr.(*net.TCPAddr)
	if !sok || !dok {
		// A datagram or Unix socket address: not a TCP client's.
		return src, dst, fmt.Errorf("%w: not a TCP connection's addresses", ErrMalformed)
	}
	return s.AddrPort(), d.AddrPort(), nil
}

// Conn is a connection whose bytes are the socket's (a plain TCP socket,
// not TLS over one), that the header can be peeked from.
type Conn interface {
	net.Conn
	syscall.Conn
}

// Accept takes the header of nc, which must come from one of trusted
// (ErrUntrusted otherwise), within timeout (0: DefaultTimeout).
func Accept(nc net.Conn, trusted []netip.Prefix, timeout time.Duration) (src, dst netip.AddrPort, err error) {
	tc, ok := nc.(Conn)
	if !ok || !Trusted(trusted, sockio.AddrPort(nc.RemoteAddr()).Addr()) {
		return src, dst, ErrUntrusted
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return Read(tc, time.Now().Add(timeout))
}

// headerSize returns the size of the header b begins with, 0 if more
// bytes are needed to know, or an error if b begins with none.
func headerSize(b []byte) (int, error) {
	switch {
	case len(b) >= len(sigV1) && bytes.HasPrefix(b, sigV1):
		if i := bytes.Index(b, []byte("\r\n")); i >= 0 {
			return i + 2, nil
		}
		if len(b) >= 107 { // v1's longest line
			return 0, fmt.Errorf("%w: a v1 line longer than 107 bytes", ErrMalformed)
		}
		return 0, nil
	case len(b) >= len(sigV2) && bytes.HasPrefix(b, sigV2):
		if len(b) < 16 {
			return 0, nil
		}
		size := 16 + (int(b[14])<<8 | int(b[15]))
		if size > MaxHeader {
			return 0, fmt.Errorf("%w: %d bytes, over %d", ErrMalformed, size, MaxHeader)
		}
		return size, nil
	case bytes.HasPrefix(sigV1, b[:min(len(b), len(sigV1))]) || bytes.HasPrefix(sigV2, b[:min(len(b), len(sigV2))]):
		return 0, nil // a signature's beginning
	}
	return 0, ErrMissing
}

// Write writes a header of version (1 or 2) saying that a TCP client at
// src connected to dst.
func Write(w io.Writer, version byte, src, dst netip.AddrPort) error {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	h := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst))
	_, err := h.WriteTo(w)
	return err
}

// Trusted reports whether addr is in one of prefixes.
func Trusted(prefixes []netip.Prefix, addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
