package route

import (
	"bytes"
	"errors"
)

// PathOptions say how request paths are normalised.
type PathOptions struct {
	// MergeSlashes turns runs of slashes into one, as nginx does by
	// default: "//admin" is "/admin".
	MergeSlashes bool
	// KeepEncodedSlash keeps %2F and %5C (an encoded / and \) in paths,
	// encoded, rather than refusing them: for origins that read them as
	// data, not as separators.
	KeepEncodedSlash bool
}

// Errors of paths that cannot be normalised safely; each gets 400.
var (
	ErrEncoding     = errors.New("malformed percent-encoding in the path")
	ErrEncodedSlash = errors.New("encoded slash, or a backslash, in the path")
	ErrNUL          = errors.New("encoded NUL in the path")
	ErrEscapesRoot  = errors.New("the path climbs above the root")
	ErrDotParams    = errors.New("an empty or dot-segment with parameters (;) in the path")
)

// Normalize returns the path and query target (origin-form, or "*") as an
// origin reads it, for matching and forwarding (RFC 3986 §6.2.2):
// percent-encoded unreserved characters are decoded (%61 is a, %2e is .),
// other percent-encodings get upper-case hex digits, dot-segments are
// removed (after decoding, so %2e%2e is ..), and slashes are merged if
// o.MergeSlashes. The query is left as it is. A path that climbs above the
// root, holds an encoded NUL, an encoded / or \ (unless
// o.KeepEncodedSlash), a backslash (which some origins read as a slash;
// kept too with o.KeepEncodedSlash), a malformed percent-encoding, or an
// empty or dot-segment with parameters ("/..;/", "/;x/", which Java
// servlet containers read as "/../" and "//") is an error.
//
// It returns target itself when that is already normal (most requests:
// no allocation), else a new slice.
func Normalize(target []byte, o PathOptions) ([]byte, error) {
	if len(target) == 0 || target[0] != '/' {
		return target, nil // "*", or nothing a route could match
	}
	path, query := target, []byte(nil)
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		path, query = target[:i], target[i:]
	}
	if normal(path, o) {
		return target, nil
	}
	dec, err := decode(path, o)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(target))
	if out, err = removeDots(out, dec, o); err != nil {
		return nil, err
	}
	return append(out, query...), nil
}

// normal reports whether path needs no work: no percent sign or
// backslash, no segment that begins with a dot or a semicolon, and, when
// merging, no empty segment.
func normal(path []byte, o PathOptions) bool {
	for i := 0; i < len(path); i++ {
		switch path[i] {
		case '%', '\\':
			return false
		case '/':
			if i+1 < len(path) && (path[i+1] == '.' || path[i+1] == ';' || path[i+1] == '/' && o.MergeSlashes) {
				return false
			}
		}
	}
	return true
}

// unreserved reports whether c is an unreserved character (RFC 3986 §2.3),
// whose percent-encoding means the same as itself.
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

const upperHex = "0123456789ABCDEF"

// decode decodes the percent-encoded unreserved characters of path and
// upper-cases the hex digits of the other encodings.
func decode(path []byte, o PathOptions) ([]byte, error) {
	out := make([]byte, 0, len(path))
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c == '\\' && !o.KeepEncodedSlash {
			return nil, ErrEncodedSlash
		}
		if c != '%' {
			out = append(out, c)
			continue
		}
		if i+2 >= len(path) {
			return nil, ErrEncoding
		}
		hi, ok1 := unhex(path[i+1])
		lo, ok2 := unhex(path[i+2])
		if !ok1 || !ok2 {
			return nil, ErrEncoding
		}
		i += 2
		switch v := hi<<4 | lo; {
		case unreserved(v):
			out = append(out, v)
		case v == 0:
			return nil, ErrNUL
		case (v == '/' || v == '\\') && !o.KeepEncodedSlash:
			return nil, ErrEncodedSlash
		default:
			out = append(out, '%', upperHex[hi], upperHex[lo])
		}
	}
	return out, nil
}

// removeDots appends to out the path less its dot-segments (RFC 3986
// §5.2.4) and, with o.MergeSlashes, its empty segments. A path that ends in
// a dot-segment ends in a slash, as the algorithm has it.
func removeDots(out, path []byte, o PathOptions) ([]byte, error) {
	// path begins with '/'. Each segment is what follows a slash.
	rest := path[1:]
	for {
		seg, more := rest, false
		if i := bytes.IndexByte(rest, '/'); i >= 0 {
			seg, rest, more = rest[:i], rest[i+1:], true
		}
		name, _, params := bytes.Cut(seg, []byte{';'})
		switch {
		case params && (len(name) == 0 || string(name) == "." || string(name) == ".."):
			return nil, ErrDotParams
		case string(seg) == ".":
			if !more {
				out = append(out, '/')
			}
		case string(seg) == "..":
			j := bytes.LastIndexByte(out, '/')
			if j < 0 {
				return nil, ErrEscapesRoot
			}
			out = out[:j]
			if !more {
				out = append(out, '/')
			}
		case len(seg) == 0 && o.MergeSlashes && more:
			// "//": the next segment follows the last slash.
		default:
			out = append(append(out, '/'), seg...)
		}
		if !more {
			break
		}
	}
	if len(out) == 0 {
		out = append(out, '/')
	}
	return out, nil
}
