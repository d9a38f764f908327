package h2

import (
	"strconv"
	"unsafe"

	"github.com/straitproxy/strait/header"
)

// Response heads are encoded here, not by hpack.Encoder: its dynamic
// table keeps the strings it is given, so every field would have to be
// copied into a new string first. Like nginx, strait sends fields as
// literals without indexing, naming them by the static table where it can,
// and never uses a dynamic table of its own (so the client's
// SETTINGS_HEADER_TABLE_SIZE needs nothing from it). Values are Huffman
// coded when that is shorter.

// staticNames maps a name of the static table (RFC 7541 Appendix A) to its
// first index.
var staticNames = func() map[string]uint8 {
	names := []string{":authority", ":method", ":method", ":path", ":path", ":scheme", ":scheme",
		":status", ":status", ":status", ":status", ":status", ":status", ":status",
		"accept-charset", "accept-encoding", "accept-language", "accept-ranges", "accept",
		"access-control-allow-origin", "age", "allow", "authorization", "cache-control",
		"content-disposition", "content-encoding", "content-language", "content-length",
		"content-location", "content-range", "content-type", "cookie", "date", "etag", "expect",
		"expires", "from", "host", "if-match", "if-modified-since", "if-none-match", "if-range",
		"if-unmodified-since", "last-modified", "link", "location", "max-forwards",
		"proxy-authenticate", "proxy-authorization", "range", "referer", "refresh", "retry-after",
		"server", "set-cookie", "strict-transport-security", "transfer-encoding", "user-agent",
		"vary", "via", "www-authenticate"}
	m := make(map[string]uint8, len(names))
	for i, n := range names {
		if _, ok := m[n]; !ok {
			m[n] = uint8(i + 1)
		}
	}
	return m
}()

// staticStatus is the static table's index of a :status value, or 0.
func staticStatus(code int) byte {
	switch code {
	case 200:
		return 8
	case 204:
		return 9
	case 206:
		return 10
	case 304:
		return 11
	case 400:
		return 12
	case 404:
		return 13
	case 500:
		return 14
	}
	return 0
}

// appendInt appends an HPACK integer with an n-bit prefix whose other
// bits are first (RFC 7541 §5.1).
func appendInt(b []byte, first byte, n uint, v uint64) []byte {
	limit := uint64(1)<<n - 1
	if v < limit {
		return append(b, first|byte(v))
	}
	b = append(b, first|byte(limit))
	v -= limit
	for v >= 128 {
		b = append(b, byte(v%128)|0x80)
		v /= 128
	}
	return append(b, byte(v))
}

// appendString appends a string literal, as it is: not Huffman coded.
// Coding every field of every head and trailer cost about 6% of strait's
// CPU time per unary gRPC call (paired runs), to save a few dozen bytes
// of each head.
func appendString(b []byte, s []byte) []byte {
	b = appendInt(b, 0, 7, uint64(len(s)))
	return append(b, s...)
}

// appendStatus appends :status.
func appendStatus(b []byte, code int) []byte {
	if i := staticStatus(code); i != 0 {
		return append(b, 0x80|i) // indexed
	}
	var num [3]byte
	b = appendInt(b, 0, 4, 8) // literal without indexing, name :status
	return appendString(b, strconv.AppendInt(num[:0], int64(code), 10))
}

// appendField appends a field as a literal without indexing; name must be
// lower case.
func appendField(b []byte, name, value []byte) []byte {
	if i, ok := staticNames[unsafe.String(unsafe.SliceData(name), len(name))]; ok {
		b = appendInt(b, 0, 4, uint64(i))
	} else {
		b = append(b, 0)
		b = appendString(b, name)
	}
	return appendString(b, value)
}

// appendHeader appends h's fields with their names in lower case, leaving
// out those HTTP/2 forbids (RFC 9113 §8.2.2) and those keep (if set)
// refuses, and reports whether all were valid: names tokens, values
// without CR, LF or NUL.
func appendHeader(b []byte, h *header.Header, lower []byte, keep func(name []byte) bool) ([]byte, []byte, bool) {
	if h == nil {
		return b, lower, true
	}
	for _, f := range h.Fields() {
		if len(f.Name) == 0 {
			continue
		}
		lower = lower[:0]
		for _, c := range f.Name {
			if !isTokenChar(c) {
				return b, lower, false
			}
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			lower = append(lower, c)
		}
		if connectionSpecific(lower) || keep != nil && !keep(lower) {
			continue
		}
		if !validValue(f.Value) {
			return b, lower, false
		}
		b = appendField(b, lower, f.Value)
	}
	return b, lower, true
}
