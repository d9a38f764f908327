package http1

import (
	"bytes"
	"errors"
	"io"
	"os"
)

// Reader reads HTTP/1 messages from a connection. It parses each head in
// place: the Request or Response it fills refers to the Reader's buffer and
// stays valid until the next ReadRequest, ReadResponse or Release.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	src    io.Reader
	limits Limits

	bufp *[]byte // from the pool; nil while released
	buf  []byte  // *bufp
	head int     // end of the current head: body bytes start here
	r, w int     // buf[r:w] holds bytes read but not yet consumed
	live bool    // a parsed head refers into buf
	// retired holds buffers that were replaced by larger ones while a head
	// still referred into them; they return to the pool with the message.
	retired []*[]byte
	srcErr  error // first error from src; it is sticky

	scan headScan
	body Body
}

// headScan is the resumable state of a head being parsed. Offsets are from
// the start of the buffer, where every message head begins.
type headScan struct {
	pos       int  // start of the first line not yet complete
	next      int  // where the search for the end of that line resumes
	lineBeg   int  // start of the start line (after leading CRLFs)
	lineEnd   int  // end of the start line, without CRLF
	haveLine  bool // the start line has been read
	isRequest bool
	spans     []fieldSpan
}

type fieldSpan struct{ name, colon, valBeg, valEnd int32 }

// NewReader returns a Reader of src with the given limits (zero fields take
// the defaults). It takes no buffer until the first read.
func NewReader(src io.Reader, limits Limits) *Reader {
	r := &Reader{}
	r.Reset(src, limits)
	return r
}

// Reset makes r read from src, dropping anything buffered. It keeps the
// buffer, so a Reader can serve one connection after another.
func (r *Reader) Reset(src io.Reader, limits Limits) {
	r.src = src
	r.limits = limits.withDefaults()
	r.r, r.w, r.head = 0, 0, 0
	r.srcErr = nil
	r.endMessage()
	tr := r.body.Trailer // keep its memory
	tr.Reset()
	r.body = Body{rd: r, Trailer: tr, err: io.EOF}
}

// Buffered returns the number of bytes read from the connection but not yet
// consumed. After a response body has been read to its end, a non-zero value
// means the upstream sent more than one response: the connection must not
// be reused.
func (r *Reader) Buffered() int { return r.w - r.r }

// Peek returns the bytes read but not consumed, without consuming them.
// Valid until the next read.
func (r *Reader) Peek() []byte { return r.buf[r.r:r.w] }

// TakeBuffered returns the bytes read but not consumed, and consumes them:
// after an upgrade they belong to the tunnel. Valid until the next read.
func (r *Reader) TakeBuffered() []byte {
	b := r.buf[r.r:r.w]
	r.r = r.w
	return b
}

// Release gives the buffer back to the pool if nothing is buffered, so an
// idle connection holds no buffer. The last parsed head is invalid
// afterwards. It reports whether the buffer was released.
func (r *Reader) Release() bool {
	if r.bufp == nil {
		return true
	}
	if r.r != r.w || r.body.err == nil { // bytes buffered, or a body unfinished
		return false
	}
	r.endMessage()
	putBuf(r.bufp)
	r.bufp, r.buf = nil, nil
	r.r, r.w, r.head = 0, 0, 0
	return true
}

// Trim gives a buffer larger than the smallest size back to the pool, as
// Release does, and keeps a small one: a connection that goes on serving
// saves two pool operations per message by keeping it, while one that read
// a large head or body does not hold the large buffer.
func (r *Reader) Trim() {
	if r.bufp != nil && len(r.buf) > minBufSize {
		r.Release()
	}
}

// endMessage forgets the current head: its buffer space may be reused.
func (r *Reader) endMessage() {
	r.live = false
	for i, p := range r.retired {
		putBuf(p)
		r.retired[i] = nil
	}
	r.retired = r.retired[:0]
}

// beginMessage moves unconsumed bytes (a pipelined next message) to the
// start of the buffer, where the next head is parsed.
func (r *Reader) beginMessage(isRequest bool) {
	r.endMessage()
	if r.bufp == nil {
		r.bufp = getBuf(minBufSize)
		r.buf = *r.bufp
	}
	if r.r > 0 {
		r.w = copy(r.buf, r.buf[r.r:r.w])
		r.r = 0
	}
	r.head = 0
	r.scan = headScan{isRequest: isRequest, spans: r.scan.spans[:0]}
}

// fill reads once from src into the free end of the buffer.
func (r *Reader) fill() error {
	if r.srcErr != nil {
		return r.srcErr
	}
	for range 100 {
		n, err := r.src.Read(r.buf[r.w:])
		r.w += n
		if err != nil {
			r.setErr(err)
			if n > 0 {
				return nil
			}
			return err
		}
		if n > 0 {
			return nil
		}
	}
	r.srcErr = io.ErrNoProgress
	return r.srcErr
}

// setErr records a read error as final, except a deadline: the caller may
// extend it and read on.
func (r *Reader) setErr(err error) {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		r.srcErr = err
	}
}

// grow replaces the buffer with one of at least n bytes, keeping its
// contents and offsets.
func (r *Reader) grow(n int) {
	p := getBuf(n)
	copy(*p, r.buf[:r.w])
	switch {
	case r.bufp == nil:
	case r.live:
		r.retired = append(r.retired, r.bufp)
	default:
		putBuf(r.bufp)
	}
	r.bufp, r.buf = p, *p
}

// readHead reads until a whole head is buffered and scanned.
func (r *Reader) readHead() error {
	for {
		done, err := r.scanHead()
		if err != nil || done {
			return err
		}
		lim := r.limits.MaxHeaderBytes
		// scanHead found no end within the windows the limits allow: fail
		// on the limit whose window the buffered bytes overran first, so
		// the error does not depend on how the bytes arrived.
		if !r.scan.haveLine && r.scan.isRequest {
			lineEnd := r.scan.lineBeg + r.limits.MaxRequestLine + 2 // line, CR, LF
			if r.w >= lineEnd && lineEnd <= lim+1 {
				return ErrRequestLineTooBig
			}
		}
		if r.w > lim {
			return ErrHeaderTooBig
		}
		if r.w == len(r.buf) {
			// Room for the whole head and a little body, so that a head
			// one byte short of the limit can still be completed.
			r.grow(min(2*len(r.buf), lim+minBufSize))
		}
		if err := r.fill(); err != nil {
			if err == io.EOF {
				if r.w == 0 || (!r.scan.haveLine && isOnlyCRLF(r.buf[:r.w])) {
					return io.EOF // closed between messages
				}
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
}

func isOnlyCRLF(b []byte) bool {
	for _, c := range b {
		if c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

// scanHead checks the lines of the head buffered so far, resuming where it
// stopped. It reports done once the empty line ending the head is read. The
// search for line ends resumes where it stopped too, so a head that arrives
// a byte at a time is still scanned in linear time.
func (r *Reader) scanHead() (done bool, err error) {
	s := &r.scan
	lim := r.limits
	// A head ends within MaxHeaderBytes: look no further, so that what is
	// found does not depend on how many bytes have arrived.
	b := r.buf[:min(r.w, lim.MaxHeaderBytes)]
	if !s.haveLine {
		// RFC 9112 §2.2: ignore empty lines before a request line. Some
		// servers also send one after an interim response; a status line
		// cannot be empty either, so skipping is unambiguous.
		for s.pos == s.lineBeg && len(b)-s.pos >= 2 && b[s.pos] == '\r' && b[s.pos+1] == '\n' {
			s.pos += 2
			s.lineBeg, s.next = s.pos, s.pos
			if s.pos > lim.MaxRequestLine {
				return false, ErrRequestLineTooBig
			}
		}
	}
	for {
		win := b
		if !s.haveLine && s.isRequest {
			// The request line ends within MaxRequestLine and its CRLF.
			win = b[:min(len(b), s.lineBeg+lim.MaxRequestLine+2)]
		}
		i := bytes.IndexByte(win[s.next:], '\n')
		if i < 0 {
			s.next = len(win)
			return false, nil
		}
		end := s.next + i
		if end == s.pos || b[end-1] != '\r' {
			return false, ErrBareLF
		}
		line := b[s.pos : end-1]
		switch {
		case !s.haveLine:
			if s.isRequest && len(line) > lim.MaxRequestLine {
				return false, ErrRequestLineTooBig
			}
			if bytes.IndexByte(line, '\r') >= 0 {
				return false, ErrBareCR
			}
			s.lineEnd, s.haveLine = end-1, true
		case len(line) == 0:
			if end+1 > lim.MaxHeaderBytes {
				return false, ErrHeaderTooBig
			}
			s.pos = end + 1
			return true, nil
		default:
			if len(s.spans) == lim.MaxHeaderCount {
				return false, ErrTooManyFields
			}
			nameEnd, vb, ve, err := parseFieldLine(line)
			if err != nil {
				return false, err
			}
			p := int32(s.pos)
			s.spans = append(s.spans, fieldSpan{p, p + int32(nameEnd), p + int32(vb), p + int32(ve)})
		}
		s.pos, s.next = end+1, end+1
		if s.pos > lim.MaxHeaderBytes {
			return false, ErrHeaderTooBig
		}
	}
}

// parseFieldLine checks a field line (without its CRLF) and returns where
// the name ends and where the value, without surrounding whitespace, begins
// and ends.
func parseFieldLine(line []byte) (nameEnd, valBeg, valEnd int, err error) {
	if line[0] == ' ' || line[0] == '\t' {
		return 0, 0, 0, ErrObsFold
	}
	i := 0
	for i < len(line) && isTchar[line[i]] {
		i++
	}
	switch {
	case i == len(line):
		return 0, 0, 0, ErrMissingColon
	case line[i] == ' ' || line[i] == '\t':
		return 0, 0, 0, ErrSpaceBeforeColon
	case line[i] != ':' || i == 0:
		return 0, 0, 0, ErrFieldName
	}
	if v, j := line[i+1:], valueEnd(line[i+1:]); j < len(v) {
		if v[j] == '\r' {
			return 0, 0, 0, ErrBareCR
		}
		return 0, 0, 0, ErrFieldValue
	}
	vb, ve := i+1, len(line)
	for vb < ve && (line[vb] == ' ' || line[vb] == '\t') {
		vb++
	}
	for ve > vb && (line[ve-1] == ' ' || line[ve-1] == '\t') {
		ve--
	}
	return i, vb, ve, nil
}

// Body returns the reader of the body of the message last read. The same
// Body is reused for every message.
func (r *Reader) Body() *Body { return &r.body }
