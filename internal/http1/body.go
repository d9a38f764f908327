package http1

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"

	"github.com/straitproxy/strait/header"
)

// Body reads the body of the message a Reader last parsed, with its framing
// removed. It streams: it holds at most the Reader's buffer, however long
// the body. Read returns io.EOF with the last bytes (or alone) at the end;
// a body cut short by the peer gives io.ErrUnexpectedEOF, bad chunked
// framing an *Error.
type Body struct {
	rd      *Reader
	framing Framing
	n       int64 // bytes left: of the body (LengthBody) or of the chunk (ChunkedBody)
	state   chunkState
	err     error // sticky: io.EOF once the body has ended

	// Trailer holds the trailer fields of a chunked body once Read has
	// returned io.EOF. Unlike heads, trailers are copied: they own their bytes.
	Trailer header.Header
}

type chunkState uint8

const (
	stateSize    chunkState = iota // expecting a chunk-size line
	stateData                      // inside chunk data
	stateDataEnd                   // expecting the CRLF after chunk data
)

// bodyBufSize is what the read buffer grows to for a body that does not fit
// the room left after its head: 32 KiB moves a 64 KiB response in two reads
// instead of sixteen, and returns to the pool with the message.
const bodyBufSize = 32 << 10

// directReadMin is the smallest read that goes from the connection straight
// into the caller's slice when nothing is buffered, saving a copy.
const directReadMin = 2 << 10

func (b *Body) reset(f Framing, n int64) {
	b.framing, b.n, b.state, b.err = f, n, stateSize, nil
	b.Trailer.Reset()
	switch f {
	case NoBody:
		b.err = io.EOF
	case CloseBody:
		b.n = math.MaxInt64
	}
}

// Framing returns how the body is delimited.
func (b *Body) Framing() Framing { return b.framing }

// Done reports whether the body has been read to its end without error.
func (b *Body) Done() bool { return b.err == io.EOF }

func (b *Body) Read(p []byte) (int, error) {
	limit, err := b.ready()
	if err != nil || len(p) == 0 {
		return 0, err
	}
	n, err := b.rd.readData(p, limit)
	b.consumed(n)
	if err != nil {
		return n, b.fail(b.atClose(err))
	}
	return n, b.err
}

// Next returns the next piece of the body as a slice of the Reader's
// buffer, without copying: valid until the next call on the Reader or the
// Body. With the last piece, or alone, it returns io.EOF.
func (b *Body) Next() ([]byte, error) {
	limit, err := b.ready()
	if err != nil {
		return nil, err
	}
	r := b.rd
	if r.r == r.w && len(r.buf) < bodyBufSize && (b.framing != LengthBody || b.n > int64(len(r.buf)-r.head)) {
		// A body longer than the room left moves in fewer, larger reads.
		r.grow(bodyBufSize)
	}
	if err := r.need(1); err != nil {
		return nil, b.fail(b.atClose(err))
	}
	k := int(min(int64(r.w-r.r), limit))
	data := r.buf[r.r : r.r+k : r.r+k]
	r.r += k
	b.consumed(k)
	return data, b.err
}

// WriteTo copies the rest of the body to w straight from the Reader's
// buffer, without a buffer of its own; io.Copy uses it. Errors from w are
// returned as they are, so the caller can tell which side failed.
func (b *Body) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		data, err := b.Next()
		if len(data) > 0 {
			n, werr := w.Write(data)
			total += int64(n)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// atClose turns the end of the connection into the end of a close-delimited
// body.
func (b *Body) atClose(err error) error {
	if b.framing == CloseBody && err == io.ErrUnexpectedEOF {
		return io.EOF
	}
	return err
}

// fail records a terminal error (io.EOF included) and returns the body's
// error. A read deadline is not terminal: nothing was consumed, so the
// caller may extend the deadline and read on.
func (b *Body) fail(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	if b.err == nil {
		b.err = err
	}
	return b.err
}

// ready steps through chunk framing until body data can be taken, and
// returns how many bytes of data may be taken before the next framing.
func (b *Body) ready() (int64, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.framing != ChunkedBody {
		return b.n, nil
	}
	r := b.rd
	for {
		switch b.state {
		case stateData:
			return b.n, nil
		case stateSize:
			size, err := r.readChunkSize()
			if err != nil {
				return 0, b.fail(err)
			}
			if size == 0 {
				// Trailer lines are consumed as they are read: an error
				// here, a deadline included, ends the body.
				err := r.readTrailers(&b.Trailer)
				if b.err == nil {
					b.err = err
				}
				return 0, b.err
			}
			b.n, b.state = size, stateData
		case stateDataEnd:
			if err := r.need(2); err != nil {
				return 0, b.fail(err)
			}
			if r.buf[r.r] != '\r' || r.buf[r.r+1] != '\n' {
				return 0, b.fail(ErrChunkData)
			}
			r.r += 2
			b.state = stateSize
		}
	}
}

// lastChunk is the end of a chunked body without extensions or trailers,
// as it follows the last chunk's data.
const lastChunk = "\r\n0\r\n\r\n"

// consumed accounts for n bytes of data taken from the body. When a chunked
// body's data ends and its plain terminator is already buffered, the body
// ends now, so the caller learns it with the last data and not a read later.
func (b *Body) consumed(n int) {
	b.n -= int64(n)
	if b.n > 0 {
		return
	}
	switch b.framing {
	case LengthBody:
		b.err = io.EOF
	case ChunkedBody:
		b.state = stateDataEnd
		r := b.rd
		if r.w-r.r >= len(lastChunk) && string(r.buf[r.r:r.r+len(lastChunk)]) == lastChunk {
			r.r += len(lastChunk)
			b.err = io.EOF
		}
	}
}

// Ready reports whether the next Next or Read returns without waiting for
// the connection: body data (or the end, or an error) is already buffered.
// A proxy flushes what it has relayed when the body is not Ready, so a
// stream reaches its reader as it arrives: a chunk's trailing CRLF or the
// next chunk's size line alone does not count as data.
func (b *Body) Ready() bool {
	if b.err != nil {
		return true
	}
	r := b.rd
	buf := r.buf[r.r:r.w]
	if b.framing != ChunkedBody || b.state == stateData {
		return len(buf) > 0
	}
	if b.state == stateDataEnd {
		if len(buf) < 2 {
			return false
		}
		if buf[0] != '\r' || buf[1] != '\n' {
			return true // an error, which Next returns at once
		}
		buf = buf[2:]
	}
	i := bytes.IndexByte(buf, '\n')
	if i < 0 {
		return len(buf) > maxChunkLine // too long: Next fails at once
	}
	rest := buf[i+1:]
	if isLastChunkLine(buf[:i]) {
		// Ready once the trailer section is complete.
		return bytes.HasPrefix(rest, crlf) || bytes.Contains(rest, crlfcrlf)
	}
	return len(rest) > 0
}

var crlf, crlfcrlf = []byte("\r\n"), []byte("\r\n\r\n")

// isLastChunkLine reports whether a chunk-size line (without its LF) has
// size zero.
func isLastChunkLine(line []byte) bool {
	i := 0
	for i < len(line) && line[i] == '0' {
		i++
	}
	return i > 0 && (i == len(line) || !isHexDigit[line[i]])
}

// readData copies up to limit (> 0) bytes of body data into p: first what
// is buffered, else with one read from the connection.
func (r *Reader) readData(p []byte, limit int64) (int, error) {
	if int64(len(p)) > limit {
		p = p[:limit]
	}
	if r.r == r.w && len(p) >= directReadMin {
		if r.srcErr != nil {
			return 0, eofUnexpected(r.srcErr)
		}
		n, err := r.src.Read(p)
		if err != nil {
			r.setErr(err)
			if n > 0 {
				err = nil
			}
		}
		return n, eofUnexpected(err)
	}
	if err := r.need(1); err != nil {
		return 0, err
	}
	n := copy(p, r.buf[r.r:r.w])
	r.r += n
	return n, nil
}

func eofUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// need reads until at least n bytes are buffered after the head. The end of
// the connection is io.ErrUnexpectedEOF: a body ends by its framing.
func (r *Reader) need(n int) error {
	for r.w-r.r < n {
		r.makeRoom(n)
		if err := r.fill(); err != nil {
			return eofUnexpected(err)
		}
	}
	return nil
}

// makeRoom arranges free space at the end of the buffer for at least n
// unconsumed bytes, keeping the head in place.
func (r *Reader) makeRoom(n int) {
	if r.r == r.w {
		r.r, r.w = r.head, r.head
	}
	if r.w < len(r.buf) && len(r.buf)-r.r >= n {
		return
	}
	if r.r > r.head {
		r.w = r.head + copy(r.buf[r.head:], r.buf[r.r:r.w])
		r.r = r.head
	}
	if len(r.buf)-r.r < n || r.w == len(r.buf) {
		r.grow(max(2*len(r.buf), r.head+n))
	}
}

// readChunkSize reads a chunk-size line: 1*HEXDIG [chunk-ext] CRLF.
func (r *Reader) readChunkSize() (int64, error) {
	line, err := r.readLine(maxChunkLine, ErrChunkLineTooBig)
	if err != nil {
		return 0, err
	}
	var size int64
	i := 0
	for ; i < len(line) && isHexDigit[line[i]]; i++ {
		if size > (1<<59)-1 {
			return 0, ErrChunkSize // more than 2^63-1
		}
		size = size<<4 | unhex(line[i])
	}
	if i == 0 {
		return 0, ErrChunkSize
	}
	if !validChunkExt(line[i:]) {
		return 0, ErrChunkExt
	}
	return size, nil
}

// readLine returns the next CRLF-terminated line without its CRLF and
// consumes it. The line is valid until the next read.
func (r *Reader) readLine(limit int, tooLong error) ([]byte, error) {
	scanned := 0
	for {
		// The line ends within limit bytes and its CRLF: look no further, so
		// that what is found does not depend on how many bytes have arrived.
		win := min(r.w, r.r+limit+2)
		if i := bytes.IndexByte(r.buf[r.r+scanned:win], '\n'); i >= 0 {
			end := r.r + scanned + i
			if end == r.r || r.buf[end-1] != '\r' {
				return nil, ErrBareLF
			}
			line := r.buf[r.r : end-1]
			if end-1-r.r > limit {
				return nil, tooLong
			}
			if bytes.IndexByte(line, '\r') >= 0 {
				return nil, ErrBareCR
			}
			r.r = end + 1
			return line, nil
		}
		scanned = win - r.r
		if scanned == limit+2 {
			return nil, tooLong
		}
		if err := r.need(scanned + 1); err != nil {
			return nil, err
		}
	}
}

// validChunkExt checks *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
// (RFC 9112 §7.1.1); ext-val is a token or a quoted-string.
func validChunkExt(b []byte) bool {
	ws := func() {
		for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
			b = b[1:]
		}
	}
	token := func() bool {
		n := 0
		for n < len(b) && isTchar[b[n]] {
			n++
		}
		b = b[n:]
		return n > 0
	}
	for len(b) > 0 {
		ws()
		if len(b) == 0 || b[0] != ';' {
			return false
		}
		b = b[1:]
		ws()
		if !token() {
			return false
		}
		ws()
		if len(b) == 0 || b[0] != '=' {
			continue
		}
		b = b[1:]
		ws()
		if len(b) > 0 && b[0] == '"' {
			if b = quotedStringRest(b[1:]); b == nil {
				return false
			}
		} else if !token() {
			return false
		}
	}
	return true
}

// quotedStringRest returns what follows the quoted-string whose opening
// quote has been consumed, or nil if it is malformed.
func quotedStringRest(b []byte) []byte {
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return b[i+1:]
		case c == '\\':
			i++
			if i == len(b) || !isValueChar[b[i]] {
				return nil
			}
		case !isValueChar[c]:
			return nil
		}
	}
	return nil
}

// readTrailers reads the trailer section after the last chunk into t,
// copying each field, under the same limits as a head.
func (r *Reader) readTrailers(t *header.Header) error {
	total := 0
	for {
		line, err := r.readLine(r.limits.MaxHeaderBytes, ErrTrailerTooBig)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return io.EOF
		}
		total += len(line) + 2
		if total > r.limits.MaxHeaderBytes {
			return ErrTrailerTooBig
		}
		if t.Len() == r.limits.MaxHeaderCount {
			return ErrTooManyFields
		}
		nameEnd, vb, ve, err := parseFieldLine(line)
		if err != nil {
			return err
		}
		t.AddBytes(line[:nameEnd], line[vb:ve])
	}
}
