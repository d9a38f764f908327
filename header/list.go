package header

import "iter"

// Elements yields the elements of a comma-separated list value (RFC 9110
// §5.6.1) with surrounding whitespace removed. Empty elements are skipped, as
// the RFC tells recipients to do.
func Elements(value []byte) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		for len(value) > 0 {
			var elem []byte
			elem, value = cutComma(value)
			elem = TrimSpace(elem)
			if len(elem) == 0 {
				continue
			}
			if !yield(elem) {
				return
			}
		}
	}
}

// HasElement reports whether the list value contains token, compared
// without regard to ASCII case.
func HasElement(value []byte, token string) bool {
	for elem := range Elements(value) {
		if EqualFold(elem, token) {
			return true
		}
	}
	return false
}

func cutComma(b []byte) (before, after []byte) {
	for i, c := range b {
		if c == ',' {
			return b[:i], b[i+1:]
		}
	}
	return b, nil
}

// TrimSpace removes leading and trailing SP and HTAB (the RFC's OWS).
func TrimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}
