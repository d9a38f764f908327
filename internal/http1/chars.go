package http1

import "encoding/binary"

// Character classes of RFC 9110 §5.6.2 and §5.5, as lookup tables.
var (
	// isTchar: token characters (method, field names, codings).
	isTchar = makeTable("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
	// isValueChar: field-vchar, SP and HTAB; obs-text (0x80-0xFF) included.
	isValueChar = func() (t [256]bool) {
		for c := 0x20; c < 0x7f; c++ {
			t[c] = true
		}
		for c := 0x80; c < 0x100; c++ {
			t[c] = true
		}
		t['\t'] = true
		return t
	}()
	// isTargetChar: characters accepted in a request-target: RFC 3986's
	// unreserved, reserved (less '#': a fragment is never sent) and '%', plus
	// the printable characters browsers leave unencoded in queries
	// ({ } | ^ \ `). Not accepted: controls, SP, DEL, '"', '<', '>', '#' and
	// bytes over 0x7F, which clients must percent-encode.
	isTargetChar = makeTable("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?[]@!$&'()*+,;=%{}|^\\`")
	// isRegNameChar: reg-name and IPv4 characters of a Host (RFC 3986
	// §3.2.2), without pct-encoded (see validRegName).
	isRegNameChar = makeTable("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=")
	isHexDigit    = makeTable("0123456789abcdefABCDEF")
)

func makeTable(chars string) (t [256]bool) {
	for i := 0; i < len(chars); i++ {
		t[chars[i]] = true
	}
	return t
}

func unhex(c byte) int64 {
	switch {
	case '0' <= c && c <= '9':
		return int64(c - '0')
	case 'a' <= c && c <= 'f':
		return int64(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int64(c - 'A' + 10)
	}
	return -1
}

// valueEnd returns the index of the first byte of b that a field value
// cannot hold (a control other than HTAB, or DEL), or len(b). Field values
// are most of a head's bytes, both parsed and written, so it tests eight
// bytes at a time and looks at single bytes only in a word that may hold
// one (HTAB makes a word look suspect, and is then accepted byte by byte).
func valueEnd(b []byte) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		below := (x - 0x20*ones) &^ x & highs // a byte under 0x20 (not obs-text)
		d := x ^ 0x7f*ones
		del := (d - ones) &^ d & highs // a byte equal to 0x7f
		if below|del != 0 {
			for j := i; j < i+8; j++ {
				if !isValueChar[b[j]] {
					return j
				}
			}
		}
	}
	for ; i < len(b); i++ {
		if !isValueChar[b[i]] {
			return i
		}
	}
	return len(b)
}
