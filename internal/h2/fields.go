package h2

import (
	"bytes"
	"strconv"

	"golang.org/x/net/http2/hpack"

	"github.com/straitproxy/strait/internal/http1"
)

// A request's fields are checked as they are decoded (RFC 9113 §8.2,
// §8.3; RFC 9110 §5.5): whatever HTTP/2 lets through must make an
// unambiguous HTTP/1.1 request upstream.

var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isTokenChar(c byte) bool { return tchar[c] }

// validValue reports whether v may be a field value: no CR, LF or NUL,
// no other controls but tab, and no whitespace at either end.
func validValue(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return len(v) == 0 || v[0] != ' ' && v[0] != '\t' && v[len(v)-1] != ' ' && v[len(v)-1] != '\t'
}

// connectionSpecific reports whether a lower-case name is one HTTP/2
// forbids (RFC 9113 §8.2.2). TE is allowed with "trailers" only; the
// caller checks its value.
func connectionSpecific(name []byte) bool {
	switch string(name) {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// decoded is what a request's header block gave, checked.
type decoded struct {
	method, scheme, authority, path []byte
	protocol                        []byte // extended CONNECT's :protocol (RFC 8441)
	host                            []byte
	contentLength                   int64 // -1: none
	size                            int   // header list size (RFC 9113 §6.5.2)
	regular                         bool  // a regular field came: no pseudo-field may follow
	bad                             string
	tooLarge                        bool
	cookies                         []byte // the cookie fields, joined with "; "
	hasCookie                       bool
	scratch                         []byte // the pseudo-fields' and host's bytes
}

func (d *decoded) reset() {
	*d = decoded{contentLength: -1, scratch: d.scratch[:0], cookies: d.cookies[:0]}
}

// keep copies v into scratch and returns the copy. The pseudo-fields are
// at most four, so scratch is sized once (decode grows it first).
func (d *decoded) keep(v string) []byte {
	start := len(d.scratch)
	d.scratch = append(d.scratch, v...)
	return d.scratch[start:len(d.scratch):len(d.scratch)]
}

// field checks one decoded field of a request (trailers: of its trailer
// section) and reports whether it is a regular one for the caller to add.
func (d *decoded) field(f hpack.HeaderField, trailer bool, maxList int) bool {
	d.size += len(f.Name) + len(f.Value) + 32
	if d.size > maxList {
		d.tooLarge = true
	}
	if d.bad != "" || d.tooLarge {
		return false
	}
	name := f.Name
	if len(name) > 0 && name[0] == ':' {
		if trailer || d.regular {
			d.bad = "pseudo-header field after a regular one, or in trailers"
			return false
		}
		var slot *[]byte
		switch name {
		case ":method":
			slot = &d.method
		case ":scheme":
			slot = &d.scheme
		case ":authority":
			slot = &d.authority
		case ":path":
			slot = &d.path
		case ":protocol":
			slot = &d.protocol
		default:
			d.bad = "unknown pseudo-header field " + name
			return false
		}
		if *slot != nil {
			d.bad = "repeated " + name
			return false
		}
		*slot = d.keep(f.Value)
		return false
	}
	d.regular = true
	if name == "" {
		d.bad = "empty field name"
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !tchar[c] || 'A' <= c && c <= 'Z' {
			d.bad = "field name not a lower-case token"
			return false
		}
	}
	if connectionSpecific([]byte(name)) {
		d.bad = "connection-specific field " + name
		return false
	}
	v := []byte(f.Value)
	if !validValue(v) {
		d.bad = "field value with CR, LF, NUL or surrounding whitespace"
		return false
	}
	switch name {
	case "te":
		if f.Value != "trailers" {
			d.bad = "te other than trailers"
			return false
		}
	case "content-length":
		if trailer {
			d.bad = "content-length in trailers"
			return false
		}
		n, err := strconv.ParseUint(f.Value, 10, 63)
		if err != nil || f.Value[0] == '+' {
			d.bad = "invalid content-length"
			return false
		}
		if d.contentLength >= 0 && d.contentLength != int64(n) {
			d.bad = "differing content-length values"
			return false
		}
		d.contentLength = int64(n)
		return false // strait frames the body itself
	case "host":
		if !trailer {
			if d.host != nil && !bytes.Equal(d.host, v) {
				d.bad = "two host fields"
				return false
			}
			d.host = d.keep(f.Value)
		}
		return false
	case "cookie":
		// Split cookie fields are joined before HTTP/1 (RFC 9113 §8.2.3).
		if !trailer {
			if d.hasCookie {
				d.cookies = append(d.cookies, "; "...)
			}
			d.cookies = append(d.cookies, f.Value...)
			d.hasCookie = true
			return false
		}
	}
	return true
}

// finish checks the request's pseudo-fields once its block is whole.
func (d *decoded) finish() {
	if d.bad != "" {
		return
	}
	switch {
	case d.method == nil:
		d.bad = "no :method"
	case !isToken(d.method):
		d.bad = ":method not a token"
	case d.protocol != nil:
		// Extended CONNECT (RFC 8441 §4): a protocol to tunnel, with
		// :scheme, :path and :authority as for a request.
		if string(d.method) != "CONNECT" || !isToken(d.protocol) || d.scheme == nil || d.path == nil ||
			len(d.path) == 0 || d.path[0] != '/' || !http1.ValidTarget(d.path) || d.authority == nil || !http1.ValidHost(d.authority) ||
			d.host != nil && !bytes.EqualFold(d.host, d.authority) {
			d.bad = ":protocol without CONNECT, or an extended CONNECT without a valid :scheme, :path or :authority"
		}
	case string(d.method) == "CONNECT":
		// Plain CONNECT (RFC 9113 §8.5): :authority only; strait answers
		// it 405, as it does over HTTP/1.1.
		if d.scheme != nil || d.path != nil || d.authority == nil || !http1.ValidHost(d.authority) {
			d.bad = "CONNECT with :scheme or :path, or without a valid :authority"
		}
	case d.scheme == nil || d.path == nil:
		d.bad = "no :scheme or :path"
	case len(d.path) == 0:
		d.bad = "empty :path"
	case d.path[0] != '/' && !(string(d.path) == "*" && string(d.method) == "OPTIONS"):
		d.bad = ":path neither absolute nor * for OPTIONS"
	case !http1.ValidTarget(d.path):
		d.bad = ":path not a valid request target"
	case d.authority != nil && !http1.ValidHost(d.authority):
		d.bad = ":authority not a valid host"
	case d.host != nil && d.authority != nil && !bytes.EqualFold(d.host, d.authority):
		// RFC 9113 §8.3.1: they must name one origin.
		d.bad = "host differs from :authority"
	case d.host != nil && !http1.ValidHost(d.host):
		d.bad = "host not a valid host"
	}
}

func isToken(b []byte) bool {
	for _, c := range b {
		if !tchar[c] {
			return false
		}
	}
	return len(b) > 0
}
