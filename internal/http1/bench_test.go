package http1

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"
	"testing"
)

// Inputs shared by the benchmarks and TestParseAllocs.

// bnBrowserGET is a top-level navigation as Chrome sends it over HTTP/1.1:
// 16 fields.
var bnBrowserGET = []byte(strings.ReplaceAll(`GET /search?q=strait+proxy&hl=en&source=hp HTTP/1.1
Host: www.example.com
Connection: keep-alive
sec-ch-ua: "Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"
sec-ch-ua-mobile: ?0
sec-ch-ua-platform: "Windows"
Upgrade-Insecure-Requests: 1
User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7
Sec-Fetch-Site: same-origin
Sec-Fetch-Mode: navigate
Sec-Fetch-User: ?1
Sec-Fetch-Dest: document
Referer: https://www.example.com/
Accept-Encoding: gzip, deflate, br, zstd
Accept-Language: en-US,en;q=0.9
Cookie: _ga=GA1.1.1234567890.1700000000; session=6f1c2a9e8b7d4c3f; theme=dark

`, "\n", "\r\n"))

// bnSmallResponse is a small 200 with 6 fields and a 13-byte body.
var bnSmallResponse = []byte(strings.ReplaceAll(`HTTP/1.1 200 OK
Date: Sun, 22 Nov 2026 03:42:33 GMT
Server: strait-origin
Content-Type: text/plain; charset=utf-8
Cache-Control: no-cache
Connection: keep-alive
Content-Length: 13

`, "\n", "\r\n") + "Hello, world!")

// bnChunkedHead and bnChunkedBody: a 16 KiB upload in 10 chunks of varied
// sizes, then a trailer.
var (
	bnChunkedHead = []byte("POST /upload HTTP/1.1\r\nHost: www.example.com\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
	bnChunkSizes  = []int{1000, 2000, 1500, 1800, 1200, 2200, 1600, 1400, 2100, 1584} // 16384 bytes
	bnChunkedBody = func() []byte {
		var b bytes.Buffer
		for i, n := range bnChunkSizes {
			fmt.Fprintf(&b, "%x\r\n", n)
			b.Write(bytes.Repeat([]byte{'a' + byte(i)}, n))
			b.WriteString("\r\n")
		}
		b.WriteString("0\r\nX-Checksum: sha256-4f1c2a9e8b7d4c3f\r\n\r\n")
		return b.Bytes()
	}()
	bnChunkedMsg  = append(append([]byte(nil), bnChunkedHead...), bnChunkedBody...)
	bnChunkedData = 16384
)

// bnCodec returns one step of parsing msg with the codec, in steady state:
// the same Reader, Request and Response are reused, and the input is
// rewound, not copied. The step checks what it parsed.
func bnCodec(kind string, msg []byte) func() error {
	src := bytes.NewReader(msg)
	r := NewReader(src, Limits{})
	var req Request
	var resp Response
	get := []byte("GET")
	switch kind {
	case "request":
		return func() error {
			src.Reset(msg)
			r.Reset(src, Limits{})
			if err := r.ReadRequest(&req); err != nil {
				return err
			}
			if req.Header.Len() != 16 || req.Framing != NoBody || !req.KeepAlive {
				return fmt.Errorf("parsed %d fields, framing %v", req.Header.Len(), req.Framing)
			}
			return nil
		}
	case "response":
		return func() error {
			src.Reset(msg)
			r.Reset(src, Limits{})
			if err := r.ReadResponse(&resp, get); err != nil {
				return err
			}
			n, err := io.Copy(io.Discard, r.Body())
			if err != nil || n != 13 || resp.Header.Len() != 6 {
				return fmt.Errorf("body %d bytes, %v; %d fields", n, err, resp.Header.Len())
			}
			return nil
		}
	case "chunked":
		return func() error {
			src.Reset(msg)
			r.Reset(src, Limits{})
			if err := r.ReadRequest(&req); err != nil {
				return err
			}
			n, err := io.Copy(io.Discard, r.Body())
			if err != nil || n != int64(bnChunkedData) || r.Body().Trailer.Len() != 1 {
				return fmt.Errorf("body %d bytes, %v; %d trailer fields", n, err, r.Body().Trailer.Len())
			}
			return nil
		}
	}
	panic(kind)
}

func bnRun(b *testing.B, step func() error, bytes int) {
	if err := step(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(bytes))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := step(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseRequest(b *testing.B) {
	bnRun(b, bnCodec("request", bnBrowserGET), len(bnBrowserGET))
}

func BenchmarkParseResponse(b *testing.B) {
	bnRun(b, bnCodec("response", bnSmallResponse), len(bnSmallResponse))
}

// BenchmarkParseChunked parses the small head and decodes the chunked body
// and its trailer. SetBytes counts the chunked body only, as
// BenchmarkStdChunked does.
func BenchmarkParseChunked(b *testing.B) {
	bnRun(b, bnCodec("chunked", bnChunkedMsg), len(bnChunkedBody))
}

// The same through net/http, with a reused bufio.Reader over a rewound
// bytes.Reader.

func BenchmarkStdRequest(b *testing.B) {
	src := bytes.NewReader(bnBrowserGET)
	br := bufio.NewReader(src)
	bnRun(b, func() error {
		src.Reset(bnBrowserGET)
		br.Reset(src)
		req, err := http.ReadRequest(br)
		if err != nil {
			return err
		}
		if len(req.Header) != 15 { // Host is moved out of the map
			return fmt.Errorf("%d fields", len(req.Header))
		}
		return req.Body.Close()
	}, len(bnBrowserGET))
}

func BenchmarkStdResponse(b *testing.B) {
	src := bytes.NewReader(bnSmallResponse)
	br := bufio.NewReader(src)
	bnRun(b, func() error {
		src.Reset(bnSmallResponse)
		br.Reset(src)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil || n != 13 {
			return fmt.Errorf("body %d bytes, %v", n, err)
		}
		return resp.Body.Close()
	}, len(bnSmallResponse))
}

// BenchmarkStdChunked decodes the chunked body alone with
// httputil.NewChunkedReader and reads the trailer with textproto, as
// net/http does; it parses no head.
func BenchmarkStdChunked(b *testing.B) {
	src := bytes.NewReader(bnChunkedBody)
	br := bufio.NewReader(src)
	tp := textproto.NewReader(br)
	bnRun(b, func() error {
		src.Reset(bnChunkedBody)
		br.Reset(src)
		n, err := io.Copy(io.Discard, httputil.NewChunkedReader(br))
		if err != nil || n != int64(bnChunkedData) {
			return fmt.Errorf("body %d bytes, %v", n, err)
		}
		tr, err := tp.ReadMIMEHeader()
		if err != nil || len(tr) != 1 {
			return fmt.Errorf("trailer %v, %v", tr, err)
		}
		return nil
	}, len(bnChunkedBody))
}

// BenchmarkStdChunkedRequest is BenchmarkParseChunked's exact counterpart:
// http.ReadRequest of the same message, head included, body and trailer
// read to the end.
func BenchmarkStdChunkedRequest(b *testing.B) {
	src := bytes.NewReader(bnChunkedMsg)
	br := bufio.NewReader(src)
	bnRun(b, func() error {
		src.Reset(bnChunkedMsg)
		br.Reset(src)
		req, err := http.ReadRequest(br)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, req.Body)
		if err != nil || n != int64(bnChunkedData) || len(req.Trailer) != 1 {
			return fmt.Errorf("body %d bytes, %v; trailer %v", n, err, req.Trailer)
		}
		return req.Body.Close()
	}, len(bnChunkedBody))
}

// bnLoop is an endless connection carrying msg back to back.
type bnLoop struct {
	msg []byte
	off int
}

func (l *bnLoop) Read(p []byte) (int, error) {
	n := copy(p, l.msg[l.off:])
	l.off = (l.off + n) % len(l.msg)
	return n, nil
}

// bnKeepAlive returns one step of parsing the next message of a kept-alive
// connection that carries msg again and again: no Reset between messages.
func bnKeepAlive(kind string, msg []byte) func() error {
	r := NewReader(&bnLoop{msg: msg}, Limits{})
	var req Request
	var resp Response
	get := []byte("GET")
	return func() error {
		var err error
		if kind == "response" {
			err = r.ReadResponse(&resp, get)
		} else {
			err = r.ReadRequest(&req)
		}
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, r.Body())
		return err
	}
}

// TestParseAllocs pins the codec's promise: once a connection's Reader,
// Request and Response have been used, parsing a message (head, body and
// trailer) allocates nothing. "reset" rewinds the input and Resets the
// Reader for each message, as the benchmarks do (and as a server that
// pools Readers does for each connection); "keepalive" reads message after
// message from one endless connection.
func TestParseAllocs(t *testing.T) {
	for _, c := range []struct {
		kind string
		msg  []byte
	}{
		{"request", bnBrowserGET},
		{"response", bnSmallResponse},
		{"chunked", bnChunkedMsg},
	} {
		for _, feed := range []struct {
			name string
			step func(string, []byte) func() error
		}{{"reset", bnCodec}, {"keepalive", bnKeepAlive}} {
			t.Run(c.kind+"/"+feed.name, func(t *testing.T) {
				step := feed.step(c.kind, c.msg)
				for range 3 { // warm up: buffers, field slices, trailer arena
					if err := step(); err != nil {
						t.Fatal(err)
					}
				}
				var err error
				allocs := testing.AllocsPerRun(200, func() {
					if e := step(); e != nil && err == nil {
						err = e
					}
				})
				if err != nil {
					t.Fatal(err)
				}
				if allocs != 0 {
					t.Errorf("%v allocations per message in steady state, want 0", allocs)
				}
			})
		}
	}
}
