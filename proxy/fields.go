package proxy

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"strconv"
	"sync/atomic"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/hop"
)

// prepareUpstreamRequest turns the downstream request into the one sent
// upstream: hop-by-hop fields go, forwarding fields and a request ID come.
// The parser marked the connection's own fields, unless a request filter
// changed the fields since; then each name is looked at.
func (x *call) prepareUpstreamRequest() {
	h := &x.sess.Request.Header
	if x.fieldsAsParsed {
		hop.StripMarked(h, x.head.Conn)
	} else {
		hop.Strip(h)
	}
	x.addForwarding()
}

// The fields addForwarding looks at.
const (
	fieldOther = iota
	fieldHost
	fieldXFF
	fieldXFProto
	fieldXFHost
	fieldForwarded
	fieldRequestID
)

func forwardingField(name []byte) int {
	switch len(name) {
	case 4:
		if header.EqualFold(name, "host") {
			return fieldHost
		}
	case 9:
		if header.EqualFold(name, "forwarded") {
			return fieldForwarded
		}
	case 12:
		if header.EqualFold(name, "x-request-id") {
			return fieldRequestID
		}
	case 15:
		if header.EqualFold(name, "x-forwarded-for") {
			return fieldXFF
		}
	case 16:
		if header.EqualFold(name, "x-forwarded-host") {
			return fieldXFHost
		}
	case 17:
		if header.EqualFold(name, "x-forwarded-proto") {
			return fieldXFProto
		}
	}
	return fieldOther
}

// addForwarding sets Host for an absolute-form target, adds
// X-Forwarded-For, -Proto and -Host (and Forwarded, if configured), and
// sends the request's ID (Session.RequestID) as its one X-Request-Id. From
// a client that is not trusted, earlier forwarding fields are dropped. One
// pass over the fields finds what is there.
func (x *call) addForwarding() {
	s := &x.sess
	h := &s.Request.Header
	client := s.ClientAddr.Addr().Unmap()
	trusted := x.srv.trusts(client)
	fwd := x.srv.opts.Forwarding.Forwarded
	var xffBuf, fwdBuf [256]byte
	xff, prevFwd := xffBuf[:0], fwdBuf[:0]
	hasHost, hasProto, hasXFHost, hasID := false, false, false, false
	h.DelFunc(func(f header.Field) bool {
		switch forwardingField(f.Name) {
		case fieldHost:
			hasHost = true
		case fieldXFF:
			// The earlier hops (from a trusted client) come first;
			// several fields are joined into one.
			if trusted {
				xff = append(append(xff, f.Value...), ", "...)
			}
			return true
		case fieldXFProto:
			hasProto = trusted
			return !trusted
		case fieldXFHost:
			hasXFHost = trusted
			return !trusted
		case fieldForwarded:
			if trusted && fwd {
				prevFwd = append(append(prevFwd, f.Value...), ", "...)
				return true
			}
			return !trusted
		case fieldRequestID:
			// The client's own ID, when it named the request, is kept
			// where it is; any other goes.
			if !hasID && bytes.Equal(f.Value, s.RequestID) {
				hasID = true
				return false
			}
			return true
		}
		return false
	})
	if x.head.AuthorityFirst || !hasHost { // absolute-form: its authority wins
		h.Set("Host", string(s.Request.Authority))
	}

	var ipb [64]byte
	ip := client.AppendTo(ipb[:0])
	h.AddBytes([]byte("X-Forwarded-For"), append(xff, ip...))
	if !hasProto {
		h.Add("X-Forwarded-Proto", s.Request.Scheme)
	}
	if !hasXFHost && len(s.Request.Authority) > 0 {
		h.AddBytes([]byte("X-Forwarded-Host"), s.Request.Authority)
	}
	if fwd {
		f := append(prevFwd, "for="...)
		if client.Is6() {
			f = append(append(append(f, "\"["...), ip...), "]\""...)
		} else {
			f = append(f, ip...)
		}
		f = append(append(f, ";proto="...), s.Request.Scheme...)
		if len(s.Request.Authority) > 0 {
			f = strconv.AppendQuote(append(f, ";host="...), string(s.Request.Authority))
		}
		h.AddBytes([]byte("Forwarded"), f)
	}
	if !hasID {
		h.AddBytes([]byte("X-Request-Id"), s.RequestID)
	}
}

// trusts reports whether a client at addr may vouch for earlier hops in
// X-Forwarded-* (Forwarding.TrustedProxies).
func (srv *Server) trusts(addr netip.Addr) bool {
	for _, p := range srv.opts.Forwarding.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// validRequestID reports whether a client's X-Request-Id may name its
// request: visible ASCII, 1 to 128 bytes.
func validRequestID(b []byte) bool {
	if len(b) == 0 || len(b) > 128 {
		return false
	}
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
	prefix [16]byte // hex
	n      atomic.Uint64
}

func newIDSource() *idSource {
	s := &idSource{}
	var b [8]byte
	rand.Read(b[:])
	hex.Encode(s.prefix[:], b[:])
	return s
}

func (s *idSource) next(dst []byte) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], s.n.Add(1))
	return hex.AppendEncode(append(dst, s.prefix[:]...), b[:])
}
