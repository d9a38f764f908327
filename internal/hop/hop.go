// Package hop knows which fields of an HTTP message belong to one
// connection rather than to the message (RFC 9110 §7.6.1), and which may
// not travel as trailers, and removes them from what a proxy passes on.
package hop

import "github.com/straitproxy/strait/header"

// Marks marks, by position, a head's fields that belong to one
// connection rather than to the message, which a proxy does not pass on
// as they are: Connection, Keep-Alive, Proxy-Connection, TE,
// Transfer-Encoding and Upgrade (RFC 9110 §7.6.1), and Content-Length and
// Expect, which a proxy writes or answers itself. The parser finds them in
// the pass it makes anyway, so a proxy need not look at every name again.
type Marks struct {
	// Mask has bit i set if field i is one of them.
	Mask uint64
	// Complete reports that Mask names every such field and that the
	// Connection fields list no option naming another field (RFC 9110
	// §7.6.1): a head of at most 64 fields whose Connection options are
	// only close, keep-alive and upgrade.
	Complete bool
}

// IsConnField reports whether name is one of the fields Marks marks.
// The HTTP/1 parser finds the same names within its own switch, for
// speed; a header a filter has changed is asked here, name by name.
func IsConnField(name []byte) bool {
	switch len(name) {
	case 2:
		return header.EqualFold(name, "te")
	case 6:
		return header.EqualFold(name, "expect")
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

// Strip removes the connection's own fields (IsConnField:
// hop-by-hop fields, RFC 9110 §7.6.1, and the framing fields strait writes
// itself) and those the Connection fields name.
func Strip(h *header.Header) {
	// The options of the Connection fields, less those that name a field
	// removed anyway ("keep-alive", "upgrade"), or none ("close").
	var optBuf [8][]byte
	opts := optBuf[:0]
	h.DelFunc(func(f header.Field) bool {
		if !IsConnField(f.Name) {
			return false
		}
		if header.EqualFold(f.Name, "connection") {
			for tok := range header.Elements(f.Value) {
				if !IsConnField(tok) && !header.EqualFold(tok, "close") {
					opts = append(opts, tok)
				}
			}
		}
		return true
	})
	if len(opts) == 0 {
		return // most messages
	}
	h.DelFunc(func(f header.Field) bool {
		for _, o := range opts {
			if header.EqualFold(f.Name, o) {
				return !protected(f.Name)
			}
		}
		return false
	})
}

// StripMarked is Strip for a header as parsed, whose connection fields
// the parser marked (m): most heads.
func StripMarked(h *header.Header, m Marks) {
	if m.Complete {
		h.DelMask(m.Mask)
		return
	}
	Strip(h)
}

// CopyTrailers makes dst a copy of the trailer fields src received, less
// those a trailer may not carry.
func CopyTrailers(dst, src *header.Header) {
	dst.CopyFrom(src)
	dst.DelFunc(func(f header.Field) bool { return ProhibitedTrailer(f.Name) })
}

// ProhibitedTrailer reports whether a field may not be sent as a trailer:
// RFC 9110 §6.5.1 rules out fields that frame the message, route it,
// modify the request, authenticate, control the response or caching, or
// say how to process the content; and connection fields are hop-by-hop.
// A recipient could otherwise merge them into the head and act on them.
// The forwarding fields (Forwarded, X-Forwarded-*, X-Real-IP, Via) are
// the proxies' to write: a client's would pass beside the head's, which
// strait rewrote.
func ProhibitedTrailer(name []byte) bool {
	if IsConnField(name) {
		return true // Connection, Content-Length, Transfer-Encoding, TE, ...
	}
	var lower [32]byte
	if len(name) > len(lower) {
		return false
	}
	for i, ch := range name {
		if 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		lower[i] = ch
	}
	switch string(lower[:len(name)]) {
	case "host", "authorization", "proxy-authorization", "proxy-authenticate", "www-authenticate",
		"authentication-info", "cookie", "set-cookie",
		"cache-control", "expires", "age", "date", "pragma", "vary", "warning", "max-forwards",
		"range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range",
		"location", "retry-after", "trailer",
		"forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "x-real-ip", "via",
		"content-type", "content-encoding", "content-range", "content-language", "content-location":
		return true
	}
	return false
}
