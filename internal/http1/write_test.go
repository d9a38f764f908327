package http1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/straitproxy/strait/header"
)

// TestWriteAppendField checks that AppendField writes well-formed fields
// and refuses, leaving dst as it was, any name that is not a token and any
// value holding a byte that could end or split the line.
func TestWriteAppendField(t *testing.T) {
	for _, c := range []struct {
		name, value string
		want        string // output; "" when err is set
		err         error
	}{
		{"Host", "example.com", "Host: example.com\r\n", nil},
		{"x-lower-Case", "v", "x-lower-Case: v\r\n", nil},
		{"X-Empty", "", "X-Empty: \r\n", nil},
		{"X-Trim", " \t a  b \t ", "X-Trim: a  b\r\n", nil},
		{"X-Tab", "a\tb", "X-Tab: a\tb\r\n", nil},
		{"X-Obs", "caf\xc3\xa9 \x80\xff", "X-Obs: caf\xc3\xa9 \x80\xff\r\n", nil},
		{"X-Vchar", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "X-Vchar: !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\r\n", nil},
		{"!#$%&'*+-.^_`|~09AZaz", "v", "!#$%&'*+-.^_`|~09AZaz: v\r\n", nil},

		{"X-A", "a\r\nX-Injected: 1", "", ErrFieldValue},
		{"X-A", "a\rb", "", ErrFieldValue},
		{"X-A", "a\nb", "", ErrFieldValue},
		{"X-A", "a\r", "", ErrFieldValue},
		{"X-A", "\n", "", ErrFieldValue},
		{"X-A", "a\x00b", "", ErrFieldValue},
		{"X-A", "a\x7fb", "", ErrFieldValue},
		{"X-A", "a\x01b", "", ErrFieldValue},
		{"X-A", "a\x0bb", "", ErrFieldValue},
		{"X-A", "a\x1fb", "", ErrFieldValue},

		{"", "v", "", ErrFieldName},
		{"Bad Name", "v", "", ErrFieldName},
		{"X:Y", "v", "", ErrFieldName},
		{"X-A\r\nX-Injected", "v", "", ErrFieldName},
		{"X\x00", "v", "", ErrFieldName},
		{"X\t", "v", "", ErrFieldName},
		{"caf\xc3\xa9", "v", "", ErrFieldName},
		{"X(Y)", "v", "", ErrFieldName},
		{"X@Y", "v", "", ErrFieldName},
		{"X/Y", "v", "", ErrFieldName},
	} {
		t.Run(fmt.Sprintf("%q:%q", c.name, c.value), func(t *testing.T) {
			const prefix = "GET / HTTP/1.1\r\n"
			dst := []byte(prefix)
			got, err := AppendField(dst, []byte(c.name), []byte(c.value))
			if err != c.err {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
			if c.err != nil {
				if string(got) != prefix {
					t.Errorf("dst changed on error: %q", got)
				}
				return
			}
			if string(got) != prefix+c.want {
				t.Errorf("got %q, want %q", got, prefix+c.want)
			}
		})
	}
}

// TestWriteAppendHeader writes a whole header and reads it back: names,
// values, order and case survive.
func TestWriteAppendHeader(t *testing.T) {
	var h header.Header
	h.Add("Host", "example.com")
	h.Add("x-lower", "1")
	h.Add("X-Dup", "a")
	h.Add("X-UPPER", "2")
	h.Add("x-dup", "b")
	h.Add("X-Obs", "\x80\xff")
	dst, _ := AppendRequestLine(nil, []byte("PATCH"), []byte("/a?b=c"))
	dst, err := AppendHeader(dst, &h)
	if err != nil {
		t.Fatal(err)
	}
	dst = AppendContentLength(dst, 3)
	dst = append(dst, "\r\nabc"...)

	r := NewReader(bytes.NewReader(dst), Limits{})
	var req Request
	if err := r.ReadRequest(&req); err != nil {
		t.Fatalf("%v in %q", err, dst)
	}
	if string(req.Method) != "PATCH" || string(req.Target) != "/a?b=c" || req.Minor != 1 {
		t.Errorf("request line: %s %s 1.%d", req.Method, req.Target, req.Minor)
	}
	parsedChecked := req.Header.Checked()
	got := req.Header.Fields()
	want := append(append([]header.Field(nil), h.Fields()...), header.Field{Name: []byte("Content-Length"), Value: []byte("3")})
	if len(got) != len(want) {
		t.Fatalf("%d fields, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i].Name, want[i].Name) || !bytes.Equal(got[i].Value, want[i].Value) {
			t.Errorf("field %d: %q: %q, want %q: %q", i, got[i].Name, got[i].Value, want[i].Name, want[i].Value)
		}
	}
	if body, err := io.ReadAll(r.Body()); err != nil || string(body) != "abc" {
		t.Errorf("body %q, %v", body, err)
	}

	// The parsed fields are checked, and written back as they came; once
	// Fields has given them out, they are checked again when written.
	if parsedChecked != len(got) || req.Header.Checked() != 0 {
		t.Errorf("Checked() = %d of %d parsed fields, %d after Fields()", parsedChecked, len(got), req.Header.Checked())
	}
	head := dst[bytes.Index(dst, []byte("\r\n"))+2 : bytes.Index(dst, []byte("\r\n\r\n"))+2]
	if again, err := AppendHeader(nil, &req.Header); err != nil || !bytes.Equal(again, head) {
		t.Errorf("parsed fields written back: %q, %v; want %q", again, err, head)
	}
	// A checked field that is changed is checked again when written.
	req.Header.Set("x-lower", "a\r\nX-Injected: 1")
	if out, err := AppendHeader(nil, &req.Header); err != ErrFieldValue {
		t.Errorf("a checked field set to a bad value: %q, %v; want ErrFieldValue", out, err)
	}

	// A bad field stops AppendHeader with the field's error.
	h.Add("X-Bad", "a\r\nX-Injected: 1")
	h.Add("X-After", "v")
	out, err := AppendHeader(nil, &h)
	if err != ErrFieldValue {
		t.Fatalf("AppendHeader with a bad value: %v, want ErrFieldValue", err)
	}
	if bytes.Contains(out, []byte("Injected")) || bytes.Contains(out, []byte("X-After")) {
		t.Errorf("AppendHeader wrote past the bad field: %q", out)
	}
}

func TestWriteRequestLine(t *testing.T) {
	got, _ := AppendRequestLine([]byte("x"), []byte("OPTIONS"), []byte("*"))
	if string(got) != "xOPTIONS * HTTP/1.1\r\n" {
		t.Errorf("got %q", got)
	}
}

// TestWriteStatusLine checks the default reasons and that every status line
// written parses back to the same status and reason.
func TestWriteStatusLine(t *testing.T) {
	for _, c := range []struct {
		status int
		reason string
		want   string
	}{
		{200, "", "HTTP/1.1 200 OK\r\n"},
		{100, "", "HTTP/1.1 100 Continue\r\n"},
		{101, "", "HTTP/1.1 101 Switching Protocols\r\n"},
		{204, "", "HTTP/1.1 204 No Content\r\n"},
		{304, "", "HTTP/1.1 304 Not Modified\r\n"},
		{404, "", "HTTP/1.1 404 Not Found\r\n"},
		{418, "", "HTTP/1.1 418 I'm a teapot\r\n"},
		{431, "", "HTTP/1.1 431 Request Header Fields Too Large\r\n"},
		{502, "", "HTTP/1.1 502 Bad Gateway\r\n"},
		{505, "", "HTTP/1.1 505 HTTP Version Not Supported\r\n"},
		{599, "", "HTTP/1.1 599 \r\n"}, // no standard reason: empty
		{200, "Fine", "HTTP/1.1 200 Fine\r\n"},
		{404, "Gone Fishing", "HTTP/1.1 404 Gone Fishing\r\n"},
	} {
		got := AppendStatusLine([]byte(">"), c.status, []byte(c.reason))
		if string(got) != ">"+c.want {
			t.Errorf("AppendStatusLine(%d, %q) = %q, want %q", c.status, c.reason, got[1:], c.want)
			continue
		}
		var resp Response
		msg := append(got[1:], "Content-Length: 0\r\n\r\n"...)
		if err := NewReader(bytes.NewReader(msg), Limits{}).ReadResponse(&resp, []byte("GET")); err != nil {
			t.Errorf("%q does not parse: %v", got[1:], err)
			continue
		}
		wantReason := strings.TrimSuffix(strings.TrimPrefix(c.want, fmt.Sprintf("HTTP/1.1 %d ", c.status)), "\r\n")
		if resp.Status != c.status || string(resp.Reason) != wantReason {
			t.Errorf("%q parses as %d %q", got[1:], resp.Status, resp.Reason)
		}
	}
}

func TestWriteContentLength(t *testing.T) {
	for n, want := range map[int64]string{
		0:             "Content-Length: 0\r\n",
		13:            "Content-Length: 13\r\n",
		math.MaxInt64: "Content-Length: 9223372036854775807\r\n",
	} {
		if got := AppendContentLength(nil, n); string(got) != want {
			t.Errorf("AppendContentLength(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestWriteChunkedFraming checks ChunkedWriter's output byte for byte.
func TestWriteChunkedFraming(t *testing.T) {
	var out bytes.Buffer
	var cw ChunkedWriter
	cw.Reset(&out)
	if n, err := cw.Write([]byte("hello")); n != 5 || err != nil {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if n, err := cw.Write(nil); n != 0 || err != nil {
		t.Fatalf("empty Write: %d, %v", n, err)
	}
	if _, err := cw.Write(bytes.Repeat([]byte("x"), 255)); err != nil {
		t.Fatal(err)
	}
	if _, err := cw.Write(bytes.Repeat([]byte("y"), 4096)); err != nil {
		t.Fatal(err)
	}
	var tr header.Header
	tr.Add("X-Checksum", "abc")
	if err := cw.Close(&tr); err != nil {
		t.Fatal(err)
	}
	want := "5\r\nhello\r\n" + "ff\r\n" + strings.Repeat("x", 255) + "\r\n" + "1000\r\n" + strings.Repeat("y", 4096) + "\r\n" +
		"0\r\nX-Checksum: abc\r\n\r\n"
	if out.String() != want {
		t.Errorf("got %q\nwant %q", out.String(), want)
	}

	for _, tr := range []*header.Header{nil, {}} {
		out.Reset()
		cw.Reset(&out)
		if err := cw.Close(tr); err != nil || out.String() != "0\r\n\r\n" {
			t.Errorf("Close(%v) wrote %q, %v; want \"0\\r\\n\\r\\n\"", tr, out.String(), err)
		}
	}
}

// TestWriteChunkedRoundTrip writes bodies with ChunkedWriter, with and
// without trailers, behind a head written by the append functions, and
// reads them back through the Reader.
func TestWriteChunkedRoundTrip(t *testing.T) {
	data := btRandom(200_000, 11)
	pieces := []int{1, 0, 2, 100, 4096, 0, 65536, 7, 30000}
	for _, withTrailer := range []bool{false, true} {
		for _, response := range []bool{false, true} {
			t.Run(fmt.Sprintf("trailer=%v/response=%v", withTrailer, response), func(t *testing.T) {
				var wire bytes.Buffer
				bw := bufio.NewWriter(&wire)
				var h header.Header
				h.Add("Host", "example.com")
				h.Add("Transfer-Encoding", "chunked")
				var head []byte
				if response {
					head = AppendStatusLine(nil, 200, nil)
				} else {
					head, _ = AppendRequestLine(nil, []byte("POST"), []byte("/upload"))
				}
				head, err := AppendHeader(head, &h)
				if err != nil {
					t.Fatal(err)
				}
				bw.Write(append(head, "\r\n"...))
				var cw ChunkedWriter
				cw.Reset(bw)
				rest := data
				for i := 0; len(rest) > 0; i++ {
					n := min(pieces[i%len(pieces)], len(rest))
					if k, err := cw.Write(rest[:n]); k != n || err != nil {
						t.Fatalf("Write(%d bytes): %d, %v", n, k, err)
					}
					rest = rest[n:]
				}
				var tr *header.Header
				if withTrailer {
					tr = new(header.Header)
					tr.Add("X-Checksum", "sha256-0123456789abcdef")
					tr.Add("grpc-status", "0")
					tr.Add("X-Obs", "\t\x80 x")
				}
				if err := cw.Close(tr); err != nil {
					t.Fatal(err)
				}
				bw.Flush()

				r := NewReader(bytes.NewReader(wire.Bytes()), Limits{})
				if response {
					var resp Response
					if err := r.ReadResponse(&resp, []byte("POST")); err != nil || resp.Framing != ChunkedBody {
						t.Fatalf("ReadResponse: %v, framing %v", err, resp.Framing)
					}
				} else {
					var req Request
					if err := r.ReadRequest(&req); err != nil || req.Framing != ChunkedBody {
						t.Fatalf("ReadRequest: %v, framing %v", err, req.Framing)
					}
				}
				body, err := io.ReadAll(r.Body())
				if err != nil || !bytes.Equal(body, data) {
					t.Fatalf("body: %d bytes, %v; want %d bytes", len(body), err, len(data))
				}
				got := &r.Body().Trailer
				if !withTrailer {
					if got.Len() != 0 {
						t.Errorf("%d trailer fields, want none", got.Len())
					}
				} else {
					if got.Len() != tr.Len() {
						t.Fatalf("%d trailer fields, want %d", got.Len(), tr.Len())
					}
					for i, f := range tr.Fields() {
						g := got.Fields()[i]
						if !bytes.Equal(g.Name, f.Name) || !bytes.Equal(g.Value, header.TrimSpace(f.Value)) {
							t.Errorf("trailer %d: %q: %q, want %q: %q", i, g.Name, g.Value, f.Name, f.Value)
						}
					}
				}
				if r.Buffered() != 0 {
					t.Errorf("%d bytes left after the body", r.Buffered())
				}
			})
		}
	}
}

// TestWriteChunkedErrors checks that ChunkedWriter refuses a bad trailer
// and passes on the writer's errors.
func TestWriteChunkedErrors(t *testing.T) {
	var out bytes.Buffer
	var cw ChunkedWriter
	cw.Reset(&out)
	var tr header.Header
	tr.Add("X-Bad", "a\r\nX-Injected: 1")
	if err := cw.Close(&tr); err != ErrFieldValue {
		t.Errorf("Close with a bad trailer: %v, want ErrFieldValue", err)
	}
	if bytes.Contains(out.Bytes(), []byte("Injected")) {
		t.Errorf("a refused trailer reached the wire: %q", out.Bytes())
	}

	errBroken := errors.New("broken pipe")
	for fail := 1; fail <= 3; fail++ {
		w := &wtFailing{failOn: fail, err: errBroken}
		cw.Reset(w)
		if _, err := cw.Write([]byte("hello")); err != errBroken {
			t.Errorf("Write failing on write %d: %v, want the writer's error", fail, err)
		}
	}
	for fail := 1; fail <= 3; fail++ {
		w := &wtFailing{failOn: fail, err: errBroken}
		cw.Reset(w)
		tr := new(header.Header)
		tr.Add("X-T", "v")
		if err := cw.Close(tr); err != errBroken {
			t.Errorf("Close failing on write %d: %v, want the writer's error", fail, err)
		}
	}
}

type wtFailing struct {
	n, failOn int
	err       error
}

func (w *wtFailing) Write(p []byte) (int, error) {
	w.n++
	if w.n == w.failOn {
		return 0, w.err
	}
	return len(p), nil
}

// TestWriteAllocs pins the serializers at no allocation once dst has room.
func TestWriteAllocs(t *testing.T) {
	var h header.Header
	h.Add("Host", "example.com")
	h.Add("Content-Type", "text/plain; charset=utf-8")
	h.Add("X-Request-Id", "0123456789abcdef")
	dst := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() {
		b, _ := AppendRequestLine(dst[:0], []byte("GET"), []byte("/index.html"))
		b = AppendStatusLine(b, 404, nil)
		b, _ = AppendHeader(b, &h)
		b = AppendContentLength(b, 12345)
		_, _ = AppendField(b, []byte("X-A"), []byte("v"))
	}); n != 0 {
		t.Errorf("append functions: %v allocations, want 0", n)
	}

	var out bytes.Buffer
	out.Grow(64 << 10)
	var cw ChunkedWriter
	chunk := make([]byte, 1000)
	if n := testing.AllocsPerRun(100, func() {
		out.Reset()
		cw.Reset(&out)
		cw.Write(chunk)
		cw.Write(chunk[:10])
		cw.Close(nil)
	}); n != 0 {
		t.Errorf("ChunkedWriter without trailers: %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		out.Reset()
		cw.Reset(&out)
		cw.Write(chunk)
		cw.Close(&h)
	}); n != 0 {
		// Close serializes trailers into its 20-byte scratch array, so any
		// trailer section longer than that allocates; reported, not pinned.
		t.Logf("ChunkedWriter.Close with %d trailer fields: %v allocations per body", h.Len(), n)
	}
}

// TestAppendLinesRefuseInjection: a method, target or reason a program set
// with CR, LF, SP or controls never reaches the wire.
func TestAppendLinesRefuseInjection(t *testing.T) {
	for _, tc := range []struct {
		method, target string
		want           error
	}{
		{"GET", "/a\r\nX-Injected: 1", ErrTarget},
		{"GET", "/a b", ErrTarget},
		{"GET", "", ErrTarget},
		{"GE T", "/", ErrMethod},
		{"GET\r\n", "/", ErrMethod},
		{"", "/", ErrMethod},
	} {
		out, err := AppendRequestLine([]byte("keep"), []byte(tc.method), []byte(tc.target))
		if err != tc.want || string(out) != "keep" {
			t.Errorf("AppendRequestLine(%q, %q) = %q, %v; want %v and nothing appended", tc.method, tc.target, out, err, tc.want)
		}
	}
	if got := string(AppendStatusLine(nil, 200, []byte("OK\r\nX-Injected: 1"))); got != "HTTP/1.1 200 OK\r\n" {
		t.Errorf("AppendStatusLine with CRLF in the reason = %q, want the standard reason", got)
	}
}
