package proxy

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"sync/atomic"

	"github.com/straitproxy/strait/header"
)

// hopByHop reports whether name is a hop-by-hop field (RFC 9110 §7.6.1),
// or a framing field strait always writes itself.
func hopByHop(name []byte) bool {
	switch len(name) {
	case 2:
		return header.EqualFold(name, "te")
	case 6:
		return header.EqualFold(name, "expect") // strait answers 100-continue itself
	case 7:
		return header.EqualFold(name, "upgrade")
	case 10:
		return header.EqualFold(name, "connection") || header.EqualFold(name, "keep-alive")
	case 14:
		return header.EqualFold(name, "content-length")
	case 16:
		return header.EqualFold(name, "proxy-connection")
	case 17:
		return header.EqualFold(name, "transfer-encoding")
	}
	return false
}

// protected reports whether a Connection option may not remove name: Host
// and the fields strait sets for the upstream.
func protected(name []byte) bool {
	for _, p := range [...]string{"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-request-id"} {
		if header.EqualFold(name, p) {
			return true
		}
	}
	return false
}

// stripHopByHop removes hop-by-hop fields and those the Connection fields
// name. It returns the Upgrade value (nil if none).
func stripHopByHop(h *header.Header) (upgrade []byte) {
	var conn [4][]byte // Connection values; more than four is abuse
	n := 0
	for _, f := range h.Fields() {
		switch {
		case header.EqualFold(f.Name, "connection"):
			if n < len(conn) {
				conn[n] = f.Value
				n++
			}
		case header.EqualFold(f.Name, "upgrade"):
			upgrade = f.Value
		}
	}
	h.DelFunc(func(f header.Field) bool {
		if hopByHop(f.Name) {
			return true
		}
		if protected(f.Name) {
			return false
		}
		for _, v := range conn[:n] {
			for tok := range header.Elements(v) {
				if header.EqualFold(f.Name, string(tok)) {
					return true
				}
			}
		}
		return false
	})
	return upgrade
}

// prepareUpstreamRequest turns the downstream request into the one sent
// upstream: hop-by-hop fields go, forwarding fields and a request ID come.
func (c *conn) prepareUpstreamRequest(s *Session) {
	h := &s.Request.Header
	stripHopByHop(h)
	if c.req.Form == 1 || !h.Has("host") { // absolute-form: its authority wins
		h.Set("Host", string(s.Request.Authority))
	}
	c.addForwarding(s)
	c.ensureRequestID(s)
}

func (c *conn) addForwarding(s *Session) {
	h := &s.Request.Header
	var ipb [64]byte
	ip := c.remote.Addr().Unmap().AppendTo(ipb[:0])
	fw := &c.srv.opts.Forwarding
	if !c.trusted {
		h.Del("X-Forwarded-For")
		h.Del("X-Forwarded-Proto")
		h.Del("X-Forwarded-Host")
		h.Del("Forwarded")
	}
	// X-Forwarded-For: the earlier hops (from a trusted client), then the
	// client. Several fields are joined into one.
	var buf [512]byte
	xff := buf[:0]
	for _, f := range h.Fields() {
		if header.EqualFold(f.Name, "x-forwarded-for") {
			xff = append(append(xff, f.Value...), ", "...)
		}
	}
	xff = append(xff, ip...)
	h.Del("X-Forwarded-For")
	h.AddBytes([]byte("X-Forwarded-For"), xff)
	if !h.Has("x-forwarded-proto") {
		h.Add("X-Forwarded-Proto", s.Request.Scheme)
	}
	if !h.Has("x-forwarded-host") && len(s.Request.Authority) > 0 {
		h.AddBytes([]byte("X-Forwarded-Host"), s.Request.Authority)
	}
	if fw.Forwarded {
		f := buf[:0]
		f = append(f, "for="...)
		if c.remote.Addr().Unmap().Is6() {
			f = append(append(append(f, "\"["...), ip...), "]\""...)
		} else {
			f = append(f, ip...)
		}
		f = append(append(f, ";proto="...), s.Request.Scheme...)
		if len(s.Request.Authority) > 0 {
			f = strconv.AppendQuote(append(f, ";host="...), string(s.Request.Authority))
		}
		if prev := h.Get("forwarded"); prev != nil {
			joined := append(append(append([]byte{}, prev...), ", "...), f...)
			h.Del("Forwarded")
			h.AddBytes([]byte("Forwarded"), joined)
		} else {
			h.AddBytes([]byte("Forwarded"), f)
		}
	}
}

// ensureRequestID keeps a well-formed incoming X-Request-Id, or makes one.
func (c *conn) ensureRequestID(s *Session) {
	h := &s.Request.Header
	if id := h.Get("x-request-id"); len(id) > 0 && len(id) <= 128 && isVisibleASCII(id) {
		s.RequestID = id
		return
	}
	h.Del("X-Request-Id")
	s.RequestID = c.srv.ids.next(s.reqIDBuf[:0])
	h.AddBytes([]byte("X-Request-Id"), s.RequestID)
}

func isVisibleASCII(b []byte) bool {
	for _, ch := range b {
		if ch <= ' ' || ch >= 0x7f {
			return false
		}
	}
	return true
}

// idSource makes request IDs: a random per-process prefix and a counter,
// as 32 hex digits. Unique without a random read per request.
type idSource struct {
	prefix [8]byte
	n      atomic.Uint64
}

func newIDSource() *idSource {
	s := &idSource{}
	rand.Read(s.prefix[:])
	return s
}

func (s *idSource) next(dst []byte) []byte {
	var b [16]byte
	copy(b[:8], s.prefix[:])
	binary.BigEndian.PutUint64(b[8:], s.n.Add(1))
	return hex.AppendEncode(dst, b[:])
}
