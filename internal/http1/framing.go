package http1

import (
	"bytes"
	"math"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/hop"
)

// fieldFacts are what the fields that govern framing and persistence say,
// gathered in one pass over the head.
type fieldFacts struct {
	clCount     int
	cl          int64
	clErr       error
	hasTE       bool
	teErr       error // the first problem with Transfer-Encoding, by precedence
	hostCount   int
	host        []byte
	connClose   bool
	connKeep    bool
	connUpgrade bool
	upgrade     []byte
	expect100   bool
	lookalike   bool
	hop         hop.Marks
}

// lookalike reports whether name is not Content-Length or Transfer-Encoding
// but reads as one to a peer that maps '_' to '-' or ignores punctuation
// (CGI-style servers do): "Transfer_Encoding", "Content---Length". Such a
// field would frame the message one way here and another way there.
func lookalike(name []byte) bool {
	// Cheap rejections first: this runs for every field.
	if len(name) < len("contentlength") {
		return false
	}
	first := name[0]
	for i := 0; (first == '-' || first == '_') && i+1 < len(name); i++ {
		first = name[i+1]
	}
	if first|0x20 != 'c' && first|0x20 != 't' {
		return false
	}
	var norm [24]byte
	n := 0
	for _, c := range name {
		if c == '-' || c == '_' {
			continue
		}
		if n == len(norm) {
			return false
		}
		norm[n] = c | 0x20
		n++
	}
	if string(norm[:n]) != "contentlength" && string(norm[:n]) != "transferencoding" {
		return false
	}
	return !header.EqualFold(name, "content-length") && !header.EqualFold(name, "transfer-encoding")
}

func gatherFacts(h *header.Header) (f fieldFacts) {
	var te teState
	n := h.Len()
	f.hop.Complete = n <= 64
	for i := range n {
		fld := h.Field(i)
		name, v := fld.Name, fld.Value
		hop, framing := false, false // framing: Content-Length or Transfer-Encoding itself
		switch len(name) {
		case 2:
			hop = header.EqualFold(name, "te")
		case 4:
			if header.EqualFold(name, "host") {
				f.hostCount++
				f.host = v
			}
		case 6:
			if header.EqualFold(name, "expect") {
				hop = true
				f.expect100 = f.expect100 || header.EqualFold(v, "100-continue")
			}
		case 7:
			if header.EqualFold(name, "upgrade") {
				hop = true
				f.upgrade = v
			}
		case 10:
			if header.EqualFold(name, "connection") {
				hop = true
				for tok := range header.Elements(v) {
					switch {
					case header.EqualFold(tok, "close"):
						f.connClose = true
					case header.EqualFold(tok, "keep-alive"):
						f.connKeep = true
					case header.EqualFold(tok, "upgrade"):
						f.connUpgrade = true
					default:
						f.hop.Complete = false // an option that names a field
					}
				}
			} else {
				hop = header.EqualFold(name, "keep-alive")
			}
		case 14:
			if header.EqualFold(name, "content-length") {
				hop, framing = true, true
				f.clCount++
				n, ok := parseContentLength(v)
				if !ok {
					f.clErr = ErrContentLength
				}
				f.cl = n
			}
		case 16:
			hop = header.EqualFold(name, "proxy-connection")
		case 17:
			if header.EqualFold(name, "transfer-encoding") {
				hop, framing = true, true
				f.hasTE = true
				te.add(v)
			}
		}
		if hop && i < 64 {
			f.hop.Mask |= 1 << i
		}
		if !framing && lookalike(name) {
			f.lookalike = true
		}
	}
	if f.hasTE {
		f.teErr = te.err()
	}
	return f
}

// parseContentLength parses 1*DIGIT. Signs, spaces, lists and values that
// overflow int64 are refused (RFC 9110 §8.6).
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// teState follows the transfer codings of every Transfer-Encoding field in
// order. strait decodes only chunked (RFC 9112 §7): a message that carries
// any other coding is refused, never forwarded with framing the next hop
// might read differently.
type teState struct {
	invalid bool // an element is empty or not a token
	chunked int  // how many times chunked appears
	last    bool // the last coding so far is chunked
	other   bool // a coding other than chunked appears
}

func (t *teState) add(v []byte) {
	for {
		elem, rest, more := bytes.Cut(v, []byte{','})
		elem = header.TrimSpace(elem)
		name, _, hasParams := bytes.Cut(elem, []byte{';'})
		name = header.TrimSpace(name)
		switch {
		case !isToken(name):
			t.invalid = true // an empty element, or not a token
		case header.EqualFold(name, "chunked"):
			t.invalid = t.invalid || hasParams // chunked takes no parameters
			t.chunked++
			t.last = true
		default:
			t.other = true
			t.last = false
		}
		if !more {
			return
		}
		v = rest
	}
}

func (t *teState) err() error {
	switch {
	case t.invalid || t.chunked > 1:
		return ErrTEInvalid
	case !t.last:
		return ErrTENotChunkedLast
	case t.other:
		return ErrTEUnsupported
	}
	return nil
}

func isToken(b []byte) bool {
	for _, c := range b {
		if !isTchar[c] {
			return false
		}
	}
	return len(b) > 0
}

// framingErr applies the rules shared by requests and responses.
func (f *fieldFacts) framingErr(minor int) error {
	switch {
	case f.lookalike:
		return ErrLookalikeField
	case f.hasTE && minor == 0:
		return ErrTEInHTTP10
	case f.hasTE && f.clCount > 0:
		return ErrCLAndTE
	case f.clCount > 1:
		return ErrMultipleCL
	case f.clErr != nil:
		return f.clErr
	case f.hasTE:
		return f.teErr
	}
	return nil
}

func (f *fieldFacts) keepAlive(minor int) bool {
	if minor == 0 {
		return f.connKeep && !f.connClose
	}
	return !f.connClose
}

// requestFraming decides how the request body is delimited and checks the
// fields RFC 9112 makes mandatory.
func (r *Reader) requestFraming(req *Request) error {
	f := gatherFacts(&req.Header)
	if err := f.framingErr(req.Minor); err != nil {
		return err
	}
	switch {
	case f.hostCount > 1:
		return ErrMultipleHost
	case f.hostCount == 0 && req.Minor == 1:
		return ErrMissingHost
	case f.hostCount == 1 && !validHost(f.host, false):
		return ErrInvalidHost
	}
	req.Host = f.host
	req.Conn = f.hop
	req.Framing, req.ContentLength = NoBody, 0
	if (f.hasTE || f.cl > 0) && req.Form == AuthorityForm {
		// What follows a CONNECT is tunnel data (RFC 9110 §9.3.6).
		return ErrConnectBody
	}
	switch {
	case f.hasTE:
		// A chunked body on GET or HEAD has no defined meaning, and peers
		// disagree on whether to read it: refuse rather than guess.
		if m := string(req.Method); m == "GET" || m == "HEAD" {
			return ErrBodyInGetHead
		}
		req.Framing = ChunkedBody
	case f.cl > 0:
		req.Framing, req.ContentLength = LengthBody, f.cl
	}
	req.KeepAlive = f.keepAlive(req.Minor)
	req.ExpectContinue = f.expect100 && req.Minor == 1
	req.Upgrade = nil
	if f.connUpgrade && len(f.upgrade) > 0 {
		req.Upgrade = f.upgrade
	}
	return nil
}
