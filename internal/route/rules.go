package route

import (
	"bytes"
	"errors"
	"strings"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/proxy"
)

// Rules change a message's header fields: Remove first, then Set (which
// replaces every field of the name), then Add.
type Rules struct {
	Remove []string
	Set    []Value
	Add    []Value
}

// Value is a field to write, its value a template: literal text and the
// variables ${client_addr} (the client's IP address), ${request_id} and
// ${host} (the request's host, without port).
type Value struct {
	Name  []byte
	parts []part
}

type part struct {
	lit string
	v   variable
}

type variable uint8

const (
	literal variable = iota
	clientAddr
	requestID
	host
)

var variables = map[string]variable{"client_addr": clientAddr, "request_id": requestID, "host": host}

// ParseValue parses a field's value template.
func ParseValue(name, tmpl string) (Value, error) {
	v := Value{Name: []byte(name)}
	for tmpl != "" {
		i := strings.Index(tmpl, "${")
		if i < 0 {
			v.parts = append(v.parts, part{lit: tmpl})
			break
		}
		if i > 0 {
			v.parts = append(v.parts, part{lit: tmpl[:i]})
		}
		j := strings.IndexByte(tmpl[i:], '}')
		if j < 0 {
			return Value{}, errors.New("${ without }")
		}
		name := tmpl[i+2 : i+j]
		x, ok := variables[name]
		if !ok {
			return Value{}, errors.New("unknown variable ${" + name + "} (known: ${client_addr}, ${request_id}, ${host})")
		}
		v.parts = append(v.parts, part{v: x})
		tmpl = tmpl[i+j+1:]
	}
	return v, nil
}

// expand appends v's value for the request of s to dst.
func (v *Value) expand(dst []byte, s *proxy.Session) []byte {
	for _, p := range v.parts {
		switch p.v {
		case literal:
			dst = append(dst, p.lit...)
		case clientAddr:
			dst = s.ClientAddr.Addr().Unmap().AppendTo(dst)
		case requestID:
			dst = append(dst, s.RequestID...)
		case host:
			dst = append(dst, hostOnly(s.Request.Authority)...)
		}
	}
	return dst
}

// Empty reports whether r changes nothing.
func (r *Rules) Empty() bool { return len(r.Remove)+len(r.Set)+len(r.Add) == 0 }

// Apply changes h, a header of the request of s, by the rules.
func (r *Rules) Apply(h *header.Header, s *proxy.Session) {
	for _, name := range r.Remove {
		h.Del(name)
	}
	var buf [256]byte
	for i := range r.Set {
		h.Del(string(r.Set[i].Name))
		h.AddBytes(r.Set[i].Name, r.Set[i].expand(buf[:0], s))
	}
	for i := range r.Add {
		h.AddBytes(r.Add[i].Name, r.Add[i].expand(buf[:0], s))
	}
}

// Redirect answers a request with a redirect to a URL made from the
// request's: each part set here replaces the request's own.
type Redirect struct {
	Status int    // 301, 302, 303, 307 or 308
	Scheme string // "http" or "https"
	Host   string // host[:port]
	Path   string // the whole path
	// PrefixRewrite replaces the part of the path the route's Prefix
	// matched.
	PrefixRewrite string
	StripQuery    bool
}

// ErrNoHost is a redirect that would take its host from a request that
// named none: its target would be relative to the scheme ("http:///x"),
// which browsers read as another host.
var ErrNoHost = errors.New("a redirect to the request's own host, which it did not name")

// Location returns the redirect's target for a request whose normalised
// path and query (with its "?") are path and query, and which matched
// prefix.
func (rd *Redirect) Location(r *proxy.Request, path, query []byte, prefix string, o PathOptions) (string, error) {
	var b strings.Builder
	scheme := rd.Scheme
	if scheme == "" {
		scheme = r.Scheme
	}
	b.WriteString(scheme)
	b.WriteString("://")
	switch {
	case rd.Host != "":
		b.WriteString(rd.Host)
	case len(r.Authority) == 0:
		return "", ErrNoHost
	default:
		b.Write(r.Authority)
	}
	switch {
	case rd.Path != "":
		b.WriteString(rd.Path)
	case rd.PrefixRewrite != "":
		p, err := RewritePrefix(path, prefix, rd.PrefixRewrite, o)
		if err != nil {
			return "", err
		}
		b.Write(p)
	default:
		b.Write(path)
	}
	if !rd.StripQuery {
		b.Write(query)
	}
	return b.String(), nil
}

// ErrRewriteEscapes is a path whose rewritten form climbs out of the
// prefix it was rewritten to ("/static../x" under /static rewritten to
// /public/ is /public/../x).
var ErrRewriteEscapes = errors.New("the rewritten path climbs out of its new prefix")

// RewritePrefix returns the normalised request target (path and query)
// with the prefix the route matched replaced by with, normalised again:
// what follows the prefix may begin with dots that make dot-segments of
// it. A result outside with is an error.
func RewritePrefix(target []byte, prefix, with string, o PathOptions) ([]byte, error) {
	out := make([]byte, 0, len(target)-len(prefix)+len(with)+1)
	out = append(out, with...)
	out = append(out, target[len(prefix):]...)
	if len(out) == 0 || out[0] != '/' {
		out = append([]byte{'/'}, out...)
	}
	out, err := Normalize(out, o)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(out, []byte(with)) {
		return nil, ErrRewriteEscapes
	}
	return out, nil
}
