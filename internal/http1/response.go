package http1

import (
	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/hop"
)

// Response is a parsed response head. Byte slices refer to the Reader's
// buffer: valid until the Reader reads the next message or is released.
type Response struct {
	Minor  int // HTTP/1.Minor: 0 or 1
	Status int
	Reason []byte
	Header header.Header

	Framing       Framing
	ContentLength int64 // with LengthBody; otherwise 0
	// KeepAlive reports whether the upstream connection may carry another
	// request once this response's body has been read to its end.
	KeepAlive bool
	// Conn marks the connection's own fields in Header, as parsed.
	Conn hop.Marks
}

// ReadResponse reads the next response head into resp. method is the method
// of the request it answers: a response to HEAD has no body. Interim (1xx)
// responses are returned like any other; the caller reads on until a final
// one.
func (r *Reader) ReadResponse(resp *Response, method []byte) error {
	r.beginMessage(false)
	r.body.reset(NoBody, 0)
	resp.Header.Reset()
	if err := r.readHead(); err != nil {
		return err
	}
	if err := r.parseResponse(resp, string(method)); err != nil {
		return err
	}
	r.body.reset(resp.Framing, resp.ContentLength)
	return nil
}

func (r *Reader) parseResponse(resp *Response, method string) error {
	s := &r.scan
	line := r.buf[s.lineBeg:s.lineEnd:s.lineEnd]
	// HTTP-version SP 3DIGIT [SP reason-phrase]. The space before an empty
	// reason is often left out; that is accepted.
	if len(line) < 12 || line[8] != ' ' {
		return ErrStatusLine
	}
	minor, err := parseVersion(line[:8])
	if err != nil {
		return ErrStatusLine
	}
	d := line[9:12]
	if !isDigit(d[0]) || !isDigit(d[1]) || !isDigit(d[2]) || d[0] == '0' {
		return ErrStatusLine
	}
	resp.Minor = minor
	resp.Status = int(d[0]-'0')*100 + int(d[1]-'0')*10 + int(d[2]-'0')
	resp.Reason = nil
	if len(line) > 12 {
		if line[12] != ' ' {
			return ErrStatusLine
		}
		if valueEnd(line[13:]) < len(line)-13 {
			return ErrStatusLine
		}
		resp.Reason = line[13:len(line):len(line)]
	}

	r.live = true
	r.head = s.pos
	r.r = s.pos
	r.indexFields(&resp.Header)
	f := gatherFacts(&resp.Header)
	if err := f.framingErr(minor); err != nil {
		return err
	}
	resp.KeepAlive = f.keepAlive(minor)
	resp.Conn = f.hop
	resp.Framing, resp.ContentLength = NoBody, 0
	switch {
	case method == "HEAD" || resp.Status < 200 || resp.Status == 204 || resp.Status == 304:
		// No body, whatever the fields say (RFC 9112 §6.3 rule 1).
	case method == "CONNECT" && resp.Status < 300:
		// A tunnel follows, whatever the fields say (rule 2).
		resp.KeepAlive = false
	case f.hasTE:
		resp.Framing = ChunkedBody
	case f.clCount == 1:
		if f.cl > 0 {
			resp.Framing, resp.ContentLength = LengthBody, f.cl
		}
	default:
		resp.Framing = CloseBody
		resp.KeepAlive = false
	}
	return nil
}
