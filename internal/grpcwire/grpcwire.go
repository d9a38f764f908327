// Package grpcwire is gRPC as a proxy sees it on the wire: which requests
// are gRPC or gRPC-Web, the grpc-timeout field, the statuses strait
// answers with and their percent-encoded messages, gRPC-Web's trailer
// frame and base64 text, and the two messages of the health protocol.
//
// It is written here rather than taken from google.golang.org/grpc: a
// proxy reads a few fields and frame prefixes, never the messages, and
// most of this runs on the data path, where the library's shapes would
// allocate per call.
package grpcwire

import (
	"bytes"
	"strconv"
	"strings"
	"time"
)

// Kind is the gRPC protocol a request speaks, by its Content-Type.
type Kind uint8

const (
	NotGRPC Kind = iota
	GRPC         // application/grpc[+codec]
	Web          // application/grpc-web[+codec]
	WebText      // application/grpc-web-text[+codec]: the body in base64
)

// Classify says which gRPC protocol a Content-Type names.
func Classify(contentType []byte) Kind {
	const prefix = "application/grpc"
	ct := contentType
	if len(ct) < len(prefix) || !strings.EqualFold(string(ct[:len(prefix)]), prefix) {
		return NotGRPC
	}
	rest := ct[len(prefix):]
	kind := GRPC
	switch {
	case hasPrefixFold(rest, "-web-text"):
		kind, rest = WebText, rest[len("-web-text"):]
	case hasPrefixFold(rest, "-web"):
		kind, rest = Web, rest[len("-web"):]
	}
	if len(rest) == 0 || rest[0] == '+' || rest[0] == ';' {
		return kind
	}
	return NotGRPC
}

func hasPrefixFold(b []byte, p string) bool {
	return len(b) >= len(p) && strings.EqualFold(string(b[:len(p)]), p)
}

// Codec is what follows the protocol in a Content-Type: "+proto",
// "+json", or "" for the default (protobuf).
func Codec(contentType []byte) string {
	if i := bytes.IndexByte(contentType, ';'); i >= 0 {
		contentType = contentType[:i]
	}
	if i := bytes.IndexByte(contentType, '+'); i >= 0 {
		return string(contentType[i:])
	}
	return ""
}

// ParseTimeout parses a grpc-timeout value: at most eight digits and a
// unit (H, M, S, m, u, n).
func ParseTimeout(v []byte) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	var n int64
	for _, c := range v[:len(v)-1] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	if n > int64(1<<63-1)/int64(unit) {
		return 1<<63 - 1, true
	}
	return time.Duration(n) * unit, true
}

// AppendTimeout appends d as a grpc-timeout value, in milliseconds
// (rounded up, so that a deadline is never made shorter than it is).
func AppendTimeout(b []byte, d time.Duration) []byte {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	if ms > 99999999 {
		return append(strconv.AppendInt(b, int64((d+time.Second-1)/time.Second), 10), 'S')
	}
	return append(strconv.AppendInt(b, int64(ms), 10), 'm')
}

// Code is a gRPC status code.
type Code uint8

const (
	OK                 Code = 0
	Canceled           Code = 1
	Unknown            Code = 2
	InvalidArgument    Code = 3
	DeadlineExceeded   Code = 4
	NotFound           Code = 5
	AlreadyExists      Code = 6
	PermissionDenied   Code = 7
	ResourceExhausted  Code = 8
	FailedPrecondition Code = 9
	Aborted            Code = 10
	OutOfRange         Code = 11
	Unimplemented      Code = 12
	Internal           Code = 13
	Unavailable        Code = 14
	DataLoss           Code = 15
	Unauthenticated    Code = 16
)

var codeNames = [...]string{"ok", "cancelled", "unknown", "invalid_argument", "deadline_exceeded", "not_found",
	"already_exists", "permission_denied", "resource_exhausted", "failed_precondition", "aborted",
	"out_of_range", "unimplemented", "internal", "unavailable", "data_loss", "unauthenticated"}

func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "code " + strconv.Itoa(int(c))
}

// ParseCode parses a status code by number or by name, in either case
// ("unavailable", "UNAVAILABLE", "14"; "canceled" too).
func ParseCode(s string) (Code, bool) {
	if n, err := strconv.Atoi(s); err == nil {
		return Code(n), n >= 0 && n < len(codeNames)
	}
	s = strings.ToLower(s)
	if s == "canceled" {
		return Canceled, true
	}
	for i, name := range codeNames {
		if name == s {
			return Code(i), true
		}
	}
	return 0, false
}

// ParseStatus parses a grpc-status value.
func ParseStatus(v []byte) (Code, bool) {
	if len(v) == 0 || len(v) > 3 {
		return 0, false
	}
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return Code(n), n < 256
}

// AppendMessage appends msg percent-encoded for grpc-message: bytes
// outside printable ASCII, and '%', as %XX.
func AppendMessage(b []byte, msg string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b = append(b, '%', hex[c>>4], hex[c&15])
			continue
		}
		b = append(b, c)
	}
	return b
}

// Messages follows the length-prefixed messages of a gRPC body as it
// passes, without keeping them, to tell whether it stands between two
// messages: where a status may end it.
type Messages struct {
	left   uint64  // bytes left of the current message's data
	prefix [5]byte // a message prefix being read
	n      int     // bytes of prefix read; 0 between messages
}

// Reset readies m for another body.
func (m *Messages) Reset() { *m = Messages{} }

// Advance takes the next piece of the body.
func (m *Messages) Advance(p []byte) {
	for len(p) > 0 {
		if m.left > 0 {
			k := min(m.left, uint64(len(p)))
			m.left -= k
			p = p[k:]
			continue
		}
		k := copy(m.prefix[m.n:], p)
		m.n += k
		p = p[k:]
		if m.n == len(m.prefix) {
			m.left = uint64(m.prefix[1])<<24 | uint64(m.prefix[2])<<16 | uint64(m.prefix[3])<<8 | uint64(m.prefix[4])
			m.n = 0
		}
	}
}

// Between reports whether the body so far ends where a message does.
func (m *Messages) Between() bool { return m.left == 0 && m.n == 0 }
