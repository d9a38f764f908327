package route

import (
	"bytes"
	"regexp"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/proxy"
)

// Match is what a route asks of a request; every part set must hold. The
// zero Match takes every request.
type Match struct {
	// Host is the request's host without its port, lower case: a name,
	// "*.example.com" for any subdomain (not the apex), or "" for any.
	Host    string
	Path    string         // the whole path, exactly
	Prefix  string         // the start of the path (a string prefix: /api takes /apix)
	Regex   *regexp.Regexp // RE2, matched against the whole path
	Methods []string       // any of these, compared exactly
	Headers []Field        // header fields, by name without regard to case
	Query   []Field        // query parameters, by name exactly
}

// Field asks for a header field or query parameter by name: with a value
// equal to Exact, or matched whole by Regex, or (neither set) present with
// any value. A field that appears several times matches if any of its
// values does. Query values are compared percent-decoded, + as a space.
type Field struct {
	Name  string
	Exact string
	Regex *regexp.Regexp
}

// Matches reports whether r, whose normalised path and query (without its
// "?") are path and query, is one this route takes. OPTIONS * is taken
// only by a route for every path (Prefix "/" or none, no Path or Regex).
func (m *Match) Matches(r *proxy.Request, path, query []byte) bool {
	if m.Host != "" && !hostMatches(m.Host, hostOnly(r.Authority)) {
		return false
	}
	if string(path) == "*" {
		if m.Path != "" || m.Regex != nil || m.Prefix != "" && m.Prefix != "/" {
			return false
		}
	} else {
		switch {
		case m.Path != "" && string(path) != m.Path:
			return false
		case m.Prefix != "" && !bytes.HasPrefix(path, []byte(m.Prefix)):
			return false
		case m.Regex != nil && !m.Regex.Match(path):
			return false
		}
	}
	if len(m.Methods) > 0 && !methodIn(r.Method, m.Methods) {
		return false
	}
	for i := range m.Headers {
		if !m.Headers[i].inHeader(&r.Header) {
			return false
		}
	}
	for i := range m.Query {
		if !m.Query[i].inQuery(query) {
			return false
		}
	}
	return true
}

func hostMatches(want string, host []byte) bool {
	if rest, ok := bytes.CutPrefix([]byte(want), []byte("*.")); ok {
		// "*.example.com" takes a.example.com, not example.com.
		return len(host) > len(rest)+1 && host[len(host)-len(rest)-1] == '.' &&
			header.EqualFold(host[len(host)-len(rest):], string(rest))
	}
	return header.EqualFold(host, want)
}

// hostOnly strips the port from an authority, and the trailing dot of a
// fully qualified name, which names the same host ("example.com.").
func hostOnly(a []byte) []byte {
	if len(a) > 0 && a[0] == '[' {
		if i := bytes.IndexByte(a, ']'); i > 0 {
			return a[:i+1]
		}
		return a
	}
	if i := bytes.LastIndexByte(a, ':'); i >= 0 {
		a = a[:i]
	}
	return bytes.TrimSuffix(a, []byte{'.'})
}

func methodIn(m string, ms []string) bool {
	for _, x := range ms {
		if m == x {
			return true
		}
	}
	return false
}

func (f *Field) value(v []byte) bool {
	switch {
	case f.Regex != nil:
		return f.Regex.Match(v)
	case f.Exact != "":
		return string(v) == f.Exact
	}
	return true
}

func (f *Field) inHeader(h *header.Header) bool {
	for i := 0; i < h.Len(); i++ {
		if x := h.Field(i); header.EqualFold(x.Name, f.Name) && f.value(x.Value) {
			return true
		}
	}
	return false
}

func (f *Field) inQuery(query []byte) bool {
	var buf [128]byte
	for len(query) > 0 {
		var pair []byte
		pair, query, _ = bytes.Cut(query, []byte{'&'})
		name, value, _ := bytes.Cut(pair, []byte{'='})
		if string(unescape(buf[:0], name)) != f.Name {
			continue
		}
		if f.value(unescape(buf[:0], value)) {
			return true
		}
	}
	return false
}

// unescape appends s, percent-decoded and with + as a space, to dst. A
// malformed escape is kept as it is.
func unescape(dst, s []byte) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '+':
			c = ' '
		case '%':
			if i+2 < len(s) {
				hi, ok1 := unhex(s[i+1])
				lo, ok2 := unhex(s[i+2])
				if ok1 && ok2 {
					c = hi<<4 | lo
					i += 2
				}
			}
		}
		dst = append(dst, c)
	}
	return dst
}
