package http1

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"unsafe"

	"github.com/straitproxy/strait/header"
)

// btRandom returns n pseudo-random bytes, the same for a given seed.
func btRandom(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// btSpy wraps a source and records where each Read was asked to write, to
// tell reads into the Reader's buffer from reads straight into the caller's
// slice.
type btSpy struct {
	src   io.Reader
	dests [][]byte
}

func (s *btSpy) Read(p []byte) (int, error) {
	s.dests = append(s.dests, p)
	return s.src.Read(p)
}

// btWithin reports whether p points into q.
func btWithin(p, q []byte) bool {
	if len(p) == 0 || len(q) == 0 {
		return false
	}
	a, lo := uintptr(unsafe.Pointer(&p[0])), uintptr(unsafe.Pointer(&q[0]))
	return a >= lo && a < lo+uintptr(cap(q))
}

func btRequest(t *testing.T, src io.Reader) *Reader {
	t.Helper()
	r := NewReader(src, Limits{})
	var req Request
	if err := r.ReadRequest(&req); err != nil {
		t.Fatalf("ReadRequest: %v", err)
	}
	return r
}

// btChunked frames data as a chunked body with chunks of the given sizes
// (cycled), every third with an extension, and the trailer fields given.
func btChunked(data []byte, sizes []int, trailer string) []byte {
	var b bytes.Buffer
	for i := 0; len(data) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(data))
		if i%3 == 2 {
			fmt.Fprintf(&b, "%X;i=%d;q=\"c\\\"k\"\r\n", n, i)
		} else {
			fmt.Fprintf(&b, "%x\r\n", n)
		}
		b.Write(data[:n])
		b.WriteString("\r\n")
		data = data[n:]
	}
	b.WriteString("0\r\n" + trailer + "\r\n")
	return b.Bytes()
}

// TestBodyLengthReads reads a Content-Length body with slices of every size
// class: small ones go through the Reader's buffer, large ones (from 2 KiB)
// straight from the connection into the caller's slice once the buffer is
// drained. Both must give the body exactly, end with io.EOF alongside the
// last bytes, and leave the next message intact.
func TestBodyLengthReads(t *testing.T) {
	body := btRandom(100_000, 1)
	const next = "GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
	msg := append([]byte(fmt.Sprintf("PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))), body...)
	msg = append(msg, next...)
	for _, size := range []int{1, 7, 100, directReadMin - 1, directReadMin, 4096, 65536, 200_000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			spy := &btSpy{src: bytes.NewReader(msg)}
			r := btRequest(t, spy)
			b := r.Body()
			p := make([]byte, size)
			var got []byte
			direct := 0
			for {
				before := len(spy.dests)
				n, err := b.Read(p)
				for _, d := range spy.dests[before:] {
					if btWithin(d, p) {
						direct++
					}
				}
				got = append(got, p[:n]...)
				if err == io.EOF {
					if n == 0 {
						t.Errorf("io.EOF came alone, not with the last bytes")
					}
					break
				}
				if err != nil {
					t.Fatalf("Read: %v", err)
				}
				if n == 0 {
					t.Fatalf("Read returned 0, nil")
				}
				if len(got) > len(body) {
					t.Fatalf("read %d bytes of a %d-byte body", len(got), len(body))
				}
			}
			if !bytes.Equal(got, body) {
				t.Fatalf("body differs: %d bytes, want %d", len(got), len(body))
			}
			if size >= directReadMin && direct == 0 {
				t.Errorf("no read went straight into the caller's %d-byte slice", size)
			}
			if size < directReadMin && direct > 0 {
				t.Errorf("%d reads went straight into a %d-byte slice (below directReadMin)", direct, size)
			}
			if !b.Done() {
				t.Error("Done() = false at the end")
			}
			if n, err := b.Read(p); n != 0 || err != io.EOF {
				t.Errorf("Read after the end: %d, %v", n, err)
			}
			var req Request
			if err := r.ReadRequest(&req); err != nil || string(req.Target) != "/next" {
				t.Fatalf("next request: %q, %v", req.Target, err)
			}
		})
	}
}

// btWriter records the writes it gets and fails once it has taken failAt
// bytes (if failAt > 0). It is not an io.ReaderFrom, so io.Copy uses the
// Body's WriteTo.
type btWriter struct {
	buf    bytes.Buffer
	writes int
	failAt int
}

var errBtWrite = errors.New("downstream write failed")

func (w *btWriter) Write(p []byte) (int, error) {
	w.writes++
	if w.failAt > 0 && w.buf.Len()+len(p) >= w.failAt {
		n := w.failAt - w.buf.Len()
		w.buf.Write(p[:n])
		return n, errBtWrite
	}
	return w.buf.Write(p)
}

// TestBodyWriteTo copies bodies of each framing with io.Copy (the Body's
// WriteTo), from sources that deliver them whole and in small pieces.
func TestBodyWriteTo(t *testing.T) {
	data := btRandom(300_000, 2)
	cases := []struct {
		name, head string
		body       []byte
		response   bool
	}{
		{"length", fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(data)), data, false},
		{"chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", btChunked(data, []int{1, 5000, 70000, 333}, ""), false},
		{"close", "HTTP/1.1 200 OK\r\n\r\n", data, true},
	}
	for _, c := range cases {
		for _, src := range []struct {
			name string
			wrap func(io.Reader) io.Reader
		}{{"whole", func(r io.Reader) io.Reader { return r }}, {"half", iotest.HalfReader}, {"onebyte", iotest.OneByteReader}} {
			t.Run(c.name+"/"+src.name, func(t *testing.T) {
				r := NewReader(src.wrap(bytes.NewReader(append([]byte(c.head), c.body...))), Limits{})
				var err error
				if c.response {
					var resp Response
					err = r.ReadResponse(&resp, []byte("GET"))
				} else {
					var req Request
					err = r.ReadRequest(&req)
				}
				if err != nil {
					t.Fatal(err)
				}
				var w btWriter
				n, err := io.Copy(&w, r.Body())
				if err != nil || n != int64(len(data)) || !bytes.Equal(w.buf.Bytes(), data) {
					t.Fatalf("io.Copy: %d bytes, %v; want %d bytes, nil (content equal: %v)", n, err, len(data), bytes.Equal(w.buf.Bytes(), data))
				}
				if !r.Body().Done() {
					t.Error("Done() = false after WriteTo")
				}
				if n, err := r.Body().WriteTo(&w); n != 0 || err != nil {
					t.Errorf("WriteTo after the end: %d, %v", n, err)
				}
			})
		}
	}

	t.Run("writer-error", func(t *testing.T) {
		head := fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(data))
		r := btRequest(t, bytes.NewReader(append([]byte(head), data...)))
		w := btWriter{failAt: 10_000}
		n, err := r.Body().WriteTo(&w)
		if err != errBtWrite {
			t.Errorf("WriteTo error = %v, want the writer's own error", err)
		}
		if n != 10_000 || !bytes.Equal(w.buf.Bytes(), data[:10_000]) {
			t.Errorf("WriteTo = %d bytes, want 10000", n)
		}
	})

	t.Run("no-body", func(t *testing.T) {
		r := btRequest(t, strings.NewReader("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		var w btWriter
		if n, err := r.Body().WriteTo(&w); n != 0 || err != nil || w.writes != 0 {
			t.Errorf("WriteTo on no body: %d, %v, %d writes", n, err, w.writes)
		}
		if n, err := r.Body().Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Errorf("Read on no body: %d, %v", n, err)
		}
		if !r.Body().Done() || r.Body().Framing() != NoBody {
			t.Errorf("no body: Done() = %v, Framing() = %v", r.Body().Done(), r.Body().Framing())
		}
	})
}

// TestBodyNext reads bodies with Next, which hands out slices of the
// Reader's buffer, and checks the pieces add up to the body.
func TestBodyNext(t *testing.T) {
	data := btRandom(50_000, 3)
	for _, c := range []struct{ name, head string }{
		{"length", fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(data))},
		{"chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg := []byte(c.head)
			if c.name == "chunked" {
				msg = append(msg, btChunked(data, []int{100, 9000, 1}, "X-T: v\r\n")...)
			} else {
				msg = append(msg, data...)
			}
			r := btRequest(t, iotest.HalfReader(bytes.NewReader(msg)))
			var got []byte
			for {
				piece, err := r.Body().Next()
				if len(piece) > 0 && !btWithin(piece, r.buf) {
					t.Fatal("Next returned a slice outside the Reader's buffer")
				}
				got = append(got, piece...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(piece) == 0 {
					t.Fatal("Next returned nothing and no error")
				}
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("Next pieces: %d bytes, want %d", len(got), len(data))
			}
			if piece, err := r.Body().Next(); piece != nil || err != io.EOF {
				t.Errorf("Next after the end: %d bytes, %v", len(piece), err)
			}
		})
	}
}

// TestBodyUnexpectedEOF cuts bodies short at every stage of their framing:
// Read, WriteTo and Next must all report io.ErrUnexpectedEOF, and keep
// reporting it.
func TestBodyUnexpectedEOF(t *testing.T) {
	const chunkedHead = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	cases := []struct{ name, msg, want string }{
		{"length-mid-body", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello", "hello"},
		{"length-no-body", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", ""},
		{"chunked-no-body", chunkedHead, ""},
		{"chunked-mid-size", chunkedHead + "1", ""},
		{"chunked-size-no-lf", chunkedHead + "5\r", ""},
		{"chunked-mid-data", chunkedHead + "5\r\nhel", "hel"},
		{"chunked-before-data-crlf", chunkedHead + "5\r\nhello", "hello"},
		{"chunked-mid-data-crlf", chunkedHead + "5\r\nhello\r", "hello"},
		{"chunked-before-last-chunk", chunkedHead + "5\r\nhello\r\n", "hello"},
		{"chunked-after-last-chunk", chunkedHead + "5\r\nhello\r\n0\r\n", "hello"},
		{"chunked-mid-trailer", chunkedHead + "5\r\nhello\r\n0\r\nX-T: v", "hello"},
		{"chunked-after-trailer", chunkedHead + "5\r\nhello\r\n0\r\nX-T: v\r\n", "hello"},
		{"chunked-final-cr", chunkedHead + "5\r\nhello\r\n0\r\n\r", "hello"},
	}
	readers := []struct {
		name string
		read func(*Body) ([]byte, error)
	}{
		{"read-small", func(b *Body) ([]byte, error) { return pfReadLoop(b, 3) }},
		{"read-large", func(b *Body) ([]byte, error) { return pfReadLoop(b, 64<<10) }},
		{"writeto", func(b *Body) ([]byte, error) {
			var buf bytes.Buffer
			_, err := b.WriteTo(&buf)
			return buf.Bytes(), err
		}},
		{"next", func(b *Body) ([]byte, error) {
			var out []byte
			for {
				p, err := b.Next()
				out = append(out, p...)
				if err == io.EOF {
					return out, nil
				}
				if err != nil {
					return out, err
				}
			}
		}},
	}
	for _, c := range cases {
		for _, rd := range readers {
			for _, oneByte := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/onebyte=%v", c.name, rd.name, oneByte), func(t *testing.T) {
					var src io.Reader = strings.NewReader(c.msg)
					if oneByte {
						src = iotest.OneByteReader(src)
					}
					r := btRequest(t, src)
					got, err := rd.read(r.Body())
					if err != io.ErrUnexpectedEOF {
						t.Errorf("got %v, want io.ErrUnexpectedEOF", err)
					}
					if string(got) != c.want {
						t.Errorf("data %q, want %q", got, c.want)
					}
					if n, err := r.Body().Read(make([]byte, 10)); n != 0 || err != io.ErrUnexpectedEOF {
						t.Errorf("Read again: %d, %v; want the same error", n, err)
					}
					if r.Body().Done() {
						t.Error("Done() = true for a body cut short")
					}
				})
			}
		}
	}

	// A failure of the connection other than its end is passed on as is.
	t.Run("source-error", func(t *testing.T) {
		errReset := errors.New("connection reset")
		src := io.MultiReader(strings.NewReader("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello"), iotest.ErrReader(errReset))
		r := btRequest(t, src)
		got, err := io.ReadAll(r.Body())
		if err != errReset || string(got) != "hello" {
			t.Errorf("got %q, %v; want \"hello\", the source's error", got, err)
		}
	})
}

// btDeadline is a source that fails once with a deadline error in the
// middle of its data, as a net.Conn whose read deadline passed.
type btDeadline struct {
	data  []byte
	at    int
	fired bool
}

func (d *btDeadline) Read(p []byte) (int, error) {
	if !d.fired && d.at == 0 {
		d.fired = true
		return 0, os.ErrDeadlineExceeded
	}
	n := len(d.data)
	if !d.fired {
		n = min(n, d.at)
	}
	if n == 0 {
		return 0, io.EOF
	}
	n = copy(p, d.data[:n])
	d.data = d.data[n:]
	if !d.fired {
		d.at -= n
	}
	return n, nil
}

// TestBodyDeadline: a read deadline is not the end of the connection
// (reader.go's setErr keeps it from being final, so that "the caller may
// extend it and read on"). That must hold for a body as for a head.
func TestBodyDeadline(t *testing.T) {
	const head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
	t.Run("head", func(t *testing.T) {
		src := &btDeadline{data: []byte(head + "helloworld"), at: 20}
		r := NewReader(src, Limits{})
		var req Request
		if err := r.ReadRequest(&req); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("first ReadRequest: %v, want the deadline", err)
		}
		if err := r.ReadRequest(&req); err != nil {
			t.Fatalf("ReadRequest after the deadline: %v", err)
		}
		if body, err := io.ReadAll(r.Body()); err != nil || string(body) != "helloworld" {
			t.Fatalf("body: %q, %v", body, err)
		}
	})
	t.Run("body", func(t *testing.T) {
		src := &btDeadline{data: []byte(head + "helloworld"), at: len(head) + 5}
		r := btRequest(t, src)
		p := make([]byte, 64)
		n, err := r.Body().Read(p)
		if string(p[:n]) != "hello" || err != nil {
			t.Fatalf("first Read: %q, %v", p[:n], err)
		}
		if _, err := r.Body().Read(p); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("second Read: %v, want the deadline", err)
		}
		rest, err := io.ReadAll(r.Body())
		if err != nil || string(rest) != "world" {
			t.Errorf("Read after the deadline: %q, %v; want \"world\", nil", rest, err)
		}
	})
}

// TestBodyCloseDelimited reads response bodies that end with the
// connection, through every read path.
func TestBodyCloseDelimited(t *testing.T) {
	data := btRandom(100_000, 4)
	msg := append([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n"), data...)
	for _, mode := range pfModes {
		t.Run(mode.name, func(t *testing.T) {
			r := NewReader(mode.wrap(bytes.NewReader(msg)), Limits{})
			var resp Response
			if err := r.ReadResponse(&resp, []byte("GET")); err != nil {
				t.Fatal(err)
			}
			if resp.Framing != CloseBody || resp.KeepAlive {
				t.Fatalf("Framing = %v, KeepAlive = %v; want close-delimited, not kept alive", resp.Framing, resp.KeepAlive)
			}
			got, err := mode.read(r.Body())
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("body: %d bytes, %v; want %d bytes", len(got), err, len(data))
			}
			if !r.Body().Done() {
				t.Error("Done() = false at the close")
			}
			if err := r.ReadResponse(&resp, []byte("GET")); err != io.EOF {
				t.Errorf("ReadResponse after the close: %v, want io.EOF", err)
			}
		})
	}
	t.Run("empty", func(t *testing.T) {
		r := NewReader(strings.NewReader("HTTP/1.0 200 OK\r\n\r\n"), Limits{})
		var resp Response
		if err := r.ReadResponse(&resp, []byte("GET")); err != nil {
			t.Fatal(err)
		}
		if n, err := r.Body().Read(make([]byte, 4096)); n != 0 || err != io.EOF {
			t.Errorf("Read: %d, %v; want 0, io.EOF", n, err)
		}
	})
}

// TestBodyChunkedLarge decodes 1 MiB of random data framed in chunks of
// varied sizes (1 byte to 100 KiB, some with extensions), much larger than
// the Reader's buffer, through every combination of source and read path,
// and checks that the data comes out exactly, with its trailer, and that
// the Reader's buffer stays small: chunked bodies stream.
func TestBodyChunkedLarge(t *testing.T) {
	data := btRandom(1<<20, 5)
	sizes := []int{1, 2, 15, 16, 17, 4095, 4096, 4097, 100 << 10, 333, 65536, 7, 12345}
	msg := append([]byte("POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
		btChunked(data, sizes, "X-Checksum: sha256=abc\r\nX-Count: 42\r\n")...)
	msg = append(msg, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n"...)

	sources := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"half", iotest.HalfReader},
		{"onebyte", iotest.OneByteReader},
		{"segments", func(r io.Reader) io.Reader {
			all, _ := io.ReadAll(r)
			rng := rand.New(rand.NewPCG(6, 7))
			var segs [][]byte
			for len(all) > 0 {
				n := min(1+rng.IntN(9000), len(all))
				segs = append(segs, all[:n])
				all = all[n:]
			}
			return &pfSegments{segs: segs}
		}},
	}
	reads := []struct {
		name string
		read func(*Body) ([]byte, error)
	}{
		{"writeto", func(b *Body) ([]byte, error) {
			var buf bytes.Buffer
			_, err := io.Copy(&buf, b)
			return buf.Bytes(), err
		}},
		{"read-1", func(b *Body) ([]byte, error) { return pfReadLoop(b, 1) }},
		{"read-1000", func(b *Body) ([]byte, error) { return pfReadLoop(b, 1000) }},
		{"read-64k", func(b *Body) ([]byte, error) { return pfReadLoop(b, 64<<10) }},
		{"read-2m", func(b *Body) ([]byte, error) { return pfReadLoop(b, 2<<20) }},
	}
	for _, src := range sources {
		for _, rd := range reads {
			if testing.Short() && src.name == "onebyte" && rd.name != "read-1" {
				continue
			}
			t.Run(src.name+"/"+rd.name, func(t *testing.T) {
				r := NewReader(src.wrap(bytes.NewReader(msg)), Limits{})
				var req Request
				if err := r.ReadRequest(&req); err != nil {
					t.Fatal(err)
				}
				got, err := rd.read(r.Body())
				if err != nil {
					t.Fatalf("body: %v after %d bytes", err, len(got))
				}
				if !bytes.Equal(got, data) {
					i := 0
					for i < min(len(got), len(data)) && got[i] == data[i] {
						i++
					}
					t.Fatalf("body: %d bytes, want %d; first difference at %d", len(got), len(data), i)
				}
				tr := &r.Body().Trailer
				if tr.Len() != 2 || string(tr.Get("x-checksum")) != "sha256=abc" || string(tr.Get("X-Count")) != "42" {
					t.Errorf("trailer: %d fields, X-Checksum %q, X-Count %q", tr.Len(), tr.Get("X-Checksum"), tr.Get("X-Count"))
				}
				if len(r.buf) > bodyBufSize { // bounded, whatever the body's length
					t.Errorf("the Reader's buffer grew to %d bytes for a streamed body", len(r.buf))
				}
				if err := r.ReadRequest(&req); err != nil || string(req.Target) != "/after" {
					t.Fatalf("next request: %q, %v", req.Target, err)
				}
			})
		}
	}
}

// TestBodyChunkedEOFWithLastData: when the last chunk is already buffered
// after the data, the Read that returns the last data returns io.EOF too.
func TestBodyChunkedEOFWithLastData(t *testing.T) {
	r := btRequest(t, strings.NewReader("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
	p := make([]byte, 100)
	n, err := r.Body().Read(p)
	if string(p[:n]) != "hello" || err != io.EOF {
		t.Errorf("Read = %q, %v; want \"hello\", io.EOF", p[:n], err)
	}
	if r.Buffered() != 0 {
		t.Errorf("Buffered() = %d after the body, want 0", r.Buffered())
	}
	// Read(nil) in the middle of a body reads nothing and fails nothing.
	r = btRequest(t, strings.NewReader("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"))
	if n, err := r.Body().Read(nil); n != 0 || err != nil {
		t.Errorf("Read(nil) = %d, %v; want 0, nil", n, err)
	}
	if b, err := io.ReadAll(r.Body()); string(b) != "hello" || err != nil {
		t.Errorf("body after Read(nil): %q, %v", b, err)
	}
}

// TestBodyTrailersCopied checks that trailer fields own their bytes: they
// point into no read buffer, and what a caller took from them stays intact
// while the Reader reads the next message over the buffer the trailer
// section arrived in.
func TestBodyTrailersCopied(t *testing.T) {
	first := "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5\r\nhello\r\n0\r\nX-Checksum: abc123\r\nX-Other:  spaced value \r\n\r\n"
	// The next request is larger than the first message, so parsing it
	// overwrites every byte the trailer section occupied in the buffer.
	second := "POST /b HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("z", 6000) + "\r\nContent-Length: 3\r\n\r\nxyz"
	for _, mode := range pfModes {
		t.Run(mode.name, func(t *testing.T) {
			r := NewReader(mode.wrap(strings.NewReader(first+second)), Limits{})
			var req Request
			if err := r.ReadRequest(&req); err != nil {
				t.Fatal(err)
			}
			if body, err := mode.read(r.Body()); err != nil || string(body) != "hello" {
				t.Fatalf("body: %q, %v", body, err)
			}
			tr := &r.Body().Trailer
			sum, other := tr.Get("X-Checksum"), tr.Get("x-other")
			name := tr.Fields()[0].Name
			if string(sum) != "abc123" || string(other) != "spaced value" {
				t.Fatalf("trailer: %q, %q", sum, other)
			}
			for _, f := range tr.Fields() {
				if btWithin(f.Name, r.buf) || btWithin(f.Value, r.buf) {
					t.Errorf("trailer field %q points into the Reader's buffer", f.Name)
				}
			}
			var kept header.Header
			kept.CopyFrom(tr)

			if err := r.ReadRequest(&req); err != nil || string(req.Target) != "/b" {
				t.Fatalf("second request: %q, %v", req.Target, err)
			}
			if body, err := mode.read(r.Body()); err != nil || string(body) != "xyz" {
				t.Fatalf("second body: %q, %v", body, err)
			}
			if string(sum) != "abc123" || string(other) != "spaced value" || string(name) != "X-Checksum" {
				t.Errorf("trailer bytes changed by the next message: %q: %q, %q", name, sum, other)
			}
			if kept.Len() != 2 || string(kept.Get("X-Checksum")) != "abc123" {
				t.Errorf("copied trailer changed: %d fields, %q", kept.Len(), kept.Get("X-Checksum"))
			}
			if tr.Len() != 0 {
				t.Errorf("Trailer holds %d fields after a message without trailers", tr.Len())
			}
		})
	}
}

// TestBodySticky checks that a framing error ends the body for good.
func TestBodySticky(t *testing.T) {
	r := btRequest(t, strings.NewReader("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n"))
	got, err := io.ReadAll(r.Body())
	if err != ErrChunkData || string(got) != "abc" {
		t.Fatalf("got %q, %v; want \"abc\", ErrChunkData", got, err)
	}
	for range 3 {
		if n, err := r.Body().Read(make([]byte, 10)); n != 0 || err != ErrChunkData {
			t.Errorf("Read again: %d, %v", n, err)
		}
		if n, err := r.Body().WriteTo(io.Discard); n != 0 || err != ErrChunkData {
			t.Errorf("WriteTo again: %d, %v", n, err)
		}
	}
}

// TestBodyReady: Ready says whether body data is buffered, not whether any
// bytes are: framing alone (a chunk's CRLF, the next size line, a partial
// trailer section) is not data, so a proxy flushes what it has relayed.
func TestBodyReady(t *testing.T) {
	const head = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	for _, tc := range []struct {
		name, rest string // buffered after the first chunk's data "hello" has been taken
		want       bool
	}{
		{"nothing", "", false},
		{"the chunk's CR", "\r", false},
		{"the chunk's CRLF", "\r\n", false},
		{"a partial size line", "\r\n5", false},
		{"a size line without data", "\r\n5\r\n", false},
		{"a size line with extension, no data", "\r\n5;a=b\r\n", false},
		{"the next chunk's data", "\r\n5\r\nw", true},
		{"the last chunk, trailers to come", "\r\n0\r\n", false},
		{"the last chunk, a trailer line", "\r\n0\r\nX: y\r\n", false},
		{"the whole end", "\r\n0\r\nX: y\r\n\r\n", true},
		{"the plain end", "\r\n0\r\n\r\n", true},
		{"the plain end with a 00 size", "\r\n00\r\n\r\n", true},
		{"bad framing: an error is ready", "xx", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(head+"5\r\nhello"+tc.rest), Limits{})
			var req Request
			if err := r.ReadRequest(&req); err != nil {
				t.Fatal(err)
			}
			// Take "hello" without reading further.
			if data, err := r.Body().Next(); string(data) != "hello" || (err != nil && err != io.EOF) {
				t.Fatalf("Next: %q %v", data, err)
			}
			if got := r.Body().Ready(); got != tc.want {
				t.Errorf("Ready() = %v, want %v", got, tc.want)
			}
		})
	}
}
