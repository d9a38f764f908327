package http1

import (
	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/hop"
)

// Framing says how a message body is delimited (RFC 9112 §6.3).
type Framing uint8

const (
	NoBody      Framing = iota // no body, or a Content-Length of 0
	LengthBody                 // Content-Length bytes
	ChunkedBody                // chunked transfer coding
	CloseBody                  // until the connection closes (responses only)
)

// TargetForm is the form of a request-target (RFC 9112 §3.2).
type TargetForm uint8

const (
	OriginForm    TargetForm = iota // /path?query
	AbsoluteForm                    // http://authority/path?query
	AuthorityForm                   // host:port, for CONNECT
	AsteriskForm                    // *, for OPTIONS
)

// Request is a parsed request head. Byte slices refer to the Reader's
// buffer: valid until the Reader reads the next message or is released.
type Request struct {
	Method []byte
	Target []byte // as received
	Minor  int    // HTTP/1.Minor: 0 or 1
	Header header.Header

	Form TargetForm
	// Authority is the authority of an absolute-form or authority-form
	// target, which takes precedence over Host (RFC 9112 §3.2.2).
	Authority []byte
	Host      []byte // the Host field's value; nil without one

	Framing       Framing
	ContentLength int64 // with LengthBody; otherwise 0

	// KeepAlive reports whether the connection may carry another request
	// after this one: HTTP/1.1 without "Connection: close", or HTTP/1.0 with
	// "Connection: keep-alive".
	KeepAlive      bool
	ExpectContinue bool   // Expect: 100-continue
	Upgrade        []byte // the Upgrade field, when Connection lists "upgrade"
	// Conn marks the connection's own fields in Header, as parsed.
	Conn hop.Marks
}

// ReadRequest reads the next request head into req. It returns io.EOF if
// the connection closed cleanly before a new request began, and an *Error
// for a request that must be refused with Error.Status (and the connection
// closed).
func (r *Reader) ReadRequest(req *Request) error {
	r.beginMessage(true)
	r.body.reset(NoBody, 0)
	req.Header.Reset()
	if err := r.readHead(); err != nil {
		return err
	}
	if err := r.parseRequest(req); err != nil {
		return err
	}
	r.body.reset(req.Framing, req.ContentLength)
	return nil
}

func (r *Reader) parseRequest(req *Request) error {
	s := &r.scan
	line := r.buf[s.lineBeg:s.lineEnd:s.lineEnd]

	// method SP request-target SP HTTP-version, single spaces only.
	i := 0
	for i < len(line) && isTchar[line[i]] {
		i++
	}
	if i == 0 {
		return ErrMethod
	}
	if i == len(line) || line[i] != ' ' {
		return ErrRequestLine
	}
	req.Method = line[:i:i]
	j := i + 1
	for j < len(line) && isTargetChar[line[j]] {
		j++
	}
	if j == i+1 {
		return ErrRequestLine
	}
	if j == len(line) {
		return ErrRequestLine // HTTP/0.9 (no version) is not served
	}
	if line[j] != ' ' {
		return ErrTarget
	}
	req.Target = line[i+1 : j : j]
	minor, err := parseVersion(line[j+1:])
	if err != nil {
		return err
	}
	req.Minor = minor

	r.live = true
	r.head = s.pos
	r.r = s.pos
	r.indexFields(&req.Header)
	if err := parseTarget(req); err != nil {
		return err
	}
	return r.requestFraming(req)
}

// indexFields adds the scanned fields to h, referring into the buffer.
func (r *Reader) indexFields(h *header.Header) {
	for _, sp := range r.scan.spans {
		h.AddChecked(r.buf[sp.name:sp.colon:sp.colon], r.buf[sp.valBeg:sp.valEnd:sp.valEnd])
	}
}

// parseVersion parses "HTTP/1.0" or "HTTP/1.1" and returns the minor
// version. Other well-formed versions get 505.
func parseVersion(v []byte) (int, error) {
	if len(v) != 8 || string(v[:5]) != "HTTP/" || v[6] != '.' || !isDigit(v[5]) || !isDigit(v[7]) {
		for _, c := range v {
			if c == ' ' {
				return 0, ErrRequestLine
			}
		}
		return 0, ErrVersion
	}
	if v[5] != '1' || (v[7] != '0' && v[7] != '1') {
		return 0, ErrVersionNotSupp
	}
	return int(v[7] - '0'), nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// parseTarget classifies the request-target and checks it.
func parseTarget(req *Request) error {
	t := req.Target
	req.Authority = nil
	connect := string(req.Method) == "CONNECT"
	switch {
	case connect:
		if !validHost(t, true) {
			return ErrTarget
		}
		req.Form, req.Authority = AuthorityForm, t
	case t[0] == '/':
		req.Form = OriginForm
	case len(t) == 1 && t[0] == '*':
		if string(req.Method) != "OPTIONS" {
			return ErrTarget
		}
		req.Form = AsteriskForm
	default:
		auth, ok := absoluteAuthority(t)
		if !ok {
			return ErrTarget
		}
		req.Form, req.Authority = AbsoluteForm, auth
	}
	if !validPercent(t) {
		return ErrTarget
	}
	return nil
}

// absoluteAuthority returns the authority of an http or https absolute-form
// target. Userinfo is refused (RFC 9110 §4.2.4).
func absoluteAuthority(t []byte) ([]byte, bool) {
	var rest []byte
	switch {
	case len(t) > 7 && header.EqualFold(t[:7], "http://"):
		rest = t[7:]
	case len(t) > 8 && header.EqualFold(t[:8], "https://"):
		rest = t[8:]
	default:
		return nil, false
	}
	end := len(rest)
	for i, c := range rest {
		if c == '/' || c == '?' {
			end = i
			break
		}
	}
	auth := rest[:end:end]
	if len(auth) == 0 || !validHost(auth, false) {
		return nil, false
	}
	return auth, true
}

// validPercent reports whether every '%' starts a two-digit hex escape.
func validPercent(b []byte) bool {
	for i := 0; i < len(b); i++ {
		if b[i] == '%' {
			if i+2 >= len(b) || !isHexDigit[b[i+1]] || !isHexDigit[b[i+2]] {
				return false
			}
			i += 2
		}
	}
	return true
}

// validHost reports whether b is uri-host [":" port] (RFC 9110 §7.2, RFC
// 3986 §3.2.2), with a port of at most 65535. An empty value is valid: a
// client sends one when the target URI has no authority.
func validHost(b []byte, requirePort bool) bool {
	host, port := b, []byte(nil)
	hasPort := false
	if len(b) > 0 && b[0] == '[' {
		end := -1
		for i, c := range b {
			if c == ']' {
				end = i
				break
			}
		}
		if end < 0 || !validIPLiteral(b[1:end]) {
			return false
		}
		host = b[:end+1]
		switch rest := b[end+1:]; {
		case len(rest) == 0:
		case rest[0] == ':':
			port, hasPort = rest[1:], true
		default:
			return false
		}
	} else {
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] == ':' {
				host, port, hasPort = b[:i], b[i+1:], true
				break
			}
		}
		if !validRegName(host) {
			return false
		}
	}
	if requirePort && (!hasPort || len(host) == 0) {
		return false
	}
	return !hasPort || validPort(port, requirePort)
}

// validRegName accepts RFC 3986 reg-name characters except '%': a
// percent-escape in a host name has no use in HTTP, and decoders disagree
// on it ("internal.example%2f.evil.example" routes differently by who
// decodes), so it is refused.
func validRegName(b []byte) bool {
	for _, c := range b {
		if !isRegNameChar[c] {
			return false
		}
	}
	return true
}

// validIPLiteral reports whether b is an IPv6address of RFC 3986 §3.2.2:
// eight groups of 1–4 hex digits, the last two of which may be an IPv4
// address, with at most one "::" standing for one or more zero groups.
// (IPvFuture is not accepted: nothing sends it.)
func validIPLiteral(b []byte) bool {
	groups, elided := 0, false
	if len(b) >= 2 && b[0] == ':' && b[1] == ':' {
		elided, b = true, b[2:]
	}
	for len(b) > 0 {
		n := 0
		for n < len(b) && n < 5 && isHexDigit[b[n]] {
			n++
		}
		if n < len(b) && b[n] == '.' { // an embedded IPv4, last
			if !validIPv4(b) {
				return false
			}
			groups += 2
			b = nil
			break
		}
		if n == 0 || n > 4 {
			return false
		}
		groups++
		b = b[n:]
		switch {
		case len(b) == 0:
		case len(b) >= 2 && b[0] == ':' && b[1] == ':':
			if elided {
				return false
			}
			elided, b = true, b[2:]
		case b[0] == ':' && len(b) > 1:
			b = b[1:]
		default:
			return false
		}
	}
	if elided {
		return groups <= 7
	}
	return groups == 8
}

// validIPv4 reports whether b is a dotted-decimal IPv4 address.
func validIPv4(b []byte) bool {
	for i := range 4 {
		n, v := 0, 0
		for n < len(b) && isDigit(b[n]) {
			v = v*10 + int(b[n]-'0')
			n++
		}
		if n == 0 || n > 3 || v > 255 || (n > 1 && b[0] == '0') {
			return false
		}
		b = b[n:]
		if i < 3 {
			if len(b) == 0 || b[0] != '.' {
				return false
			}
			b = b[1:]
		}
	}
	return len(b) == 0
}

func validPort(p []byte, required bool) bool {
	if len(p) == 0 {
		return !required
	}
	if len(p) > 5 {
		return false
	}
	n := 0
	for _, c := range p {
		if !isDigit(c) {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n <= 65535
}

// ValidHost reports whether b may be a Host field's value (RFC 9110 §7.2),
// as this package reads one: for what another protocol carries (HTTP/2's
// :authority) to become an HTTP/1.1 request it reads the same.
func ValidHost(b []byte) bool { return validHost(b, false) }

// ValidTarget reports whether t holds only what a request target may
// (RFC 9112 §3.2), its percent-encodings complete, as ValidHost does for
// Host.
func ValidTarget(t []byte) bool {
	for _, c := range t {
		if !isTargetChar[c] {
			return false
		}
	}
	return len(t) > 0 && validPercent(t)
}
