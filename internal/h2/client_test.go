package h2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/mono"
	istream "github.com/straitproxy/strait/internal/stream"
)

// goH2Origin serves h with Go's HTTP/2 server, cleartext with prior
// knowledge, and returns its address.
func goH2Origin(t *testing.T, conf *http.HTTP2Config, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protos, HTTP2: conf}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func dialClient(t *testing.T, addr string) *ClientConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := NewClientConn(context.Background(), nc, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

type exchangeResult struct {
	interim []int
	status  int
	header  map[string]string
	body    []byte
	trailer map[string]string
}

// exchange sends one request on a new stream of cc and reads the whole
// response, as the forwarding path drives an upstream.
func exchange(cc *ClientConn, method, path string, fields []string, body []byte, trailer []string) (exchangeResult, error) {
	var r exchangeResult
	up := cc.NewStream()
	defer up.Finish(true)
	up.Begin(0, 5*time.Second, 5*time.Second)
	var h header.Header
	for i := 0; i+1 < len(fields); i += 2 {
		h.Add(fields[i], fields[i+1])
	}
	n := int64(len(body))
	if len(trailer) > 0 {
		n = -1
	}
	if err := up.WriteHead(method, []byte(path), &h, "origin.test", n, nil); err != nil {
		return r, err
	}
	if len(body) > 0 {
		if err := up.WriteBody(body); err != nil {
			return r, err
		}
	}
	var tr header.Header
	for i := 0; i+1 < len(trailer); i += 2 {
		tr.Add(trailer[i], trailer[i+1])
	}
	if n != 0 {
		if err := up.EndBody(&tr); err != nil {
			return r, err
		}
	}
	if err := up.Flush(); err != nil {
		return r, err
	}
	var resp *istream.Response
	for {
		var err error
		if resp, err = up.ReadHead(method, mono.Now(), 5*time.Second); err != nil {
			return r, err
		}
		if resp.Status >= 200 {
			break
		}
		r.interim = append(r.interim, resp.Status)
	}
	r.status = resp.Status
	r.header = map[string]string{}
	for _, f := range resp.Header.Fields() {
		r.header[string(f.Name)] = string(f.Value)
	}
	if resp.Length != 0 {
		for {
			p, err := up.ReadBody()
			r.body = append(r.body, p...)
			if err == io.EOF {
				break
			}
			if err != nil {
				return r, err
			}
		}
	}
	r.trailer = map[string]string{}
	for _, f := range up.Trailer().Fields() {
		r.trailer[string(f.Name)] = string(f.Value)
	}
	return r, nil
}

// echo answers with what it received: method, path, authority, a field,
// the body's length and digest, and the request's trailer; a response
// trailer too on /trailer, and a body of ?n bytes on /big.
func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	if r.URL.Path == "/trailer" {
		w.Header().Set("Trailer", "X-Sum")
	}
	sum := sha256.Sum256(body)
	w.Header().Set("X-Seen", fmt.Sprintf("%s %s %s te=%q x=%q len=%d sum=%x req-trailer=%q",
		r.Method, r.RequestURI, r.Host, r.Header.Get("Te"), r.Header.Get("X-A"), len(body), sum[:4], r.Trailer.Get("X-Req-T")))
	if r.URL.Path == "/big" {
		var n int
		fmt.Sscan(r.URL.RawQuery, &n)
		w.Write(bytes.Repeat([]byte("b"), n))
		return
	}
	io.WriteString(w, "hello")
	if r.URL.Path == "/trailer" {
		w.Header().Set("X-Sum", fmt.Sprintf("%x", sum[:4]))
	}
}

// TestClientExchanges: requests with and without bodies, larger than
// every window both ways, and trailers both ways, on one connection to
// Go's HTTP/2 server, several at once.
func TestClientExchanges(t *testing.T) {
	cc := dialClient(t, goH2Origin(t, nil, http.HandlerFunc(echo)))

	r, err := exchange(cc, "GET", "/x?y=1", []string{"X-A", "1", "Connection", "close", "Te", "trailers", "Host", "h.test"}, nil, nil)
	if err != nil || r.status != 200 || string(r.body) != "hello" ||
		r.header["x-seen"] != `GET /x?y=1 h.test te="trailers" x="1" len=0 sum=e3b0c442 req-trailer=""` {
		t.Fatalf("GET: %+v %v", r, err)
	}

	big := bytes.Repeat([]byte("u"), 3<<20) // over the peer's windows
	sum := sha256.Sum256(big)
	r, err = exchange(cc, "POST", "/trailer", []string{"Trailer", "X-Req-T"}, big, []string{"X-Req-T", "rt"})
	want := fmt.Sprintf(`POST /trailer origin.test te="trailers" x="" len=%d sum=%x req-trailer="rt"`, len(big), sum[:4])
	if err != nil || r.status != 200 || r.header["x-seen"] != want || r.trailer["x-sum"] != fmt.Sprintf("%x", sum[:4]) {
		t.Fatalf("POST with trailers: %+v %v", r, err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := (i + 1) << 16 // up to 1.25 MiB: past the stream and connection windows
			r, err := exchange(cc, "GET", fmt.Sprintf("/big?%d", n), nil, nil, nil)
			if err == nil && (r.status != 200 || len(r.body) != n) {
				err = fmt.Errorf("status %d, %d bytes, want %d", r.status, len(r.body), n)
			}
			if err != nil {
				errs <- fmt.Errorf("download %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	cc.mu.Lock()
	open := len(cc.streams)
	cc.mu.Unlock()
	if open != 0 || !cc.Usable() {
		t.Errorf("after the exchanges: %d streams open, usable %v", open, cc.Usable())
	}
}

// TestClientInterim: interim responses come before the final one.
func TestClientInterim(t *testing.T) {
	cc := dialClient(t, goH2Origin(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(103)
		io.WriteString(w, "done")
	})))
	r, err := exchange(cc, "GET", "/", nil, nil, nil)
	if err != nil || len(r.interim) != 1 || r.interim[0] != 103 || r.status != 200 || string(r.body) != "done" {
		t.Fatalf("%+v %v", r, err)
	}
}

// TestClientMaxStreams: the peer's SETTINGS_MAX_CONCURRENT_STREAMS is what
// Streams reports, and a stream past it is refused as unprocessed.
func TestClientMaxStreams(t *testing.T) {
	release := make(chan struct{})
	cc := dialClient(t, goH2Origin(t, &http.HTTP2Config{MaxConcurrentStreams: 3}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "ok")
	})))
	for deadline := time.Now().Add(2 * time.Second); cc.Streams() != 3; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Streams %d, want the peer's 3", cc.Streams())
		}
	}
	results := make(chan error, 3)
	for range 3 {
		go func() {
			r, err := exchange(cc, "GET", "/", nil, nil, nil)
			if err == nil && string(r.body) != "ok" {
				err = fmt.Errorf("%+v", r)
			}
			results <- err
		}()
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
		cc.mu.Lock()
		n := len(cc.streams)
		cc.mu.Unlock()
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d streams open, want 3", n)
		}
	}
	if _, err := exchange(cc, "GET", "/", nil, nil, nil); !errors.Is(err, istream.ErrUnprocessed) {
		t.Errorf("a fourth stream: %v, want ErrUnprocessed", err)
	}
	close(release)
	for range 3 {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
}

// TestClientResetMidBody: a stream the origin resets mid-body fails, and
// the connection goes on.
func TestClientResetMidBody(t *testing.T) {
	cc := dialClient(t, goH2Origin(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/reset" {
			w.Write(bytes.Repeat([]byte("x"), 1000))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		io.WriteString(w, "ok")
	})))
	r, err := exchange(cc, "GET", "/reset", nil, nil, nil)
	if !errors.Is(err, errUpstreamReset) {
		t.Errorf("a reset mid-body: %+v %v, want a reset error", r, err)
	}
	if r, err := exchange(cc, "GET", "/after", nil, nil, nil); err != nil || string(r.body) != "ok" || !cc.Usable() {
		t.Errorf("the next request: %+v %v", r, err)
	}
}

// TestClientGoAway: streams above the GOAWAY's last stream id fail as
// unprocessed; the one below it completes; no new stream opens.
func TestClientGoAway(t *testing.T) {
	addr := rawH2Origin(t, func(nc net.Conn, fr *http2.Framer) {
		var ids []uint32
		for len(ids) < 2 {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if h, ok := f.(*http2.HeadersFrame); ok {
				ids = append(ids, h.StreamID)
			}
		}
		fr.WriteGoAway(ids[0], http2.ErrCodeNo, nil)
		var hb bytes.Buffer
		hb.Write(appendStatus(nil, 200))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: ids[0], BlockFragment: hb.Bytes(), EndHeaders: true})
		fr.WriteData(ids[0], true, []byte("first"))
		io.Copy(io.Discard, nc)
	})
	cc := dialClient(t, addr)
	type result struct {
		r   exchangeResult
		err error
	}
	first := make(chan result, 1)
	go func() {
		r, err := exchange(cc, "GET", "/1", nil, nil, nil)
		first <- result{r, err}
	}()
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
		cc.mu.Lock()
		n := len(cc.streams)
		cc.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first stream did not open")
		}
	}
	_, err := exchange(cc, "GET", "/2", nil, nil, nil)
	if !errors.Is(err, istream.ErrUnprocessed) || !strings.Contains(err.Error(), "GOAWAY") {
		t.Errorf("the stream above GOAWAY's last id: %v, want ErrUnprocessed", err)
	}
	if r := <-first; r.err != nil || string(r.r.body) != "first" {
		t.Errorf("the stream below it: %+v %v", r.r, r.err)
	}
	if cc.Usable() {
		t.Error("the connection still takes streams after GOAWAY")
	}
	if _, err := exchange(cc, "GET", "/3", nil, nil, nil); !errors.Is(err, istream.ErrUnprocessed) {
		t.Errorf("a stream after GOAWAY: %v, want ErrUnprocessed", err)
	}
}

// TestClientAbandon: an exchange finished before its response is whole
// resets its stream, and the connection goes on.
func TestClientAbandon(t *testing.T) {
	cc := dialClient(t, goH2Origin(t, nil, http.HandlerFunc(echo)))
	up := cc.NewStream()
	up.Begin(0, time.Second, time.Second)
	if err := up.WriteHead("GET", []byte("/big?10000000"), nil, "a", 0, nil); err != nil {
		t.Fatal(err)
	}
	up.Flush()
	if _, err := up.ReadHead("GET", mono.Now(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := up.ReadBody(); err != nil {
		t.Fatal(err)
	}
	if !up.Finish(false) {
		t.Fatal("the connection is not reusable after one stream was abandoned")
	}
	for range 5 {
		if r, err := exchange(cc, "GET", "/", nil, nil, nil); err != nil || string(r.body) != "hello" {
			t.Fatalf("after an abandoned stream: %+v %v", r, err)
		}
	}
}

// TestClientPing: a quiet connection is checked with PING; one whose peer
// answers stays, one whose peer does not is closed.
func TestClientPing(t *testing.T) {
	good := goH2Origin(t, nil, http.HandlerFunc(echo))
	addr := rawH2Origin(t, func(nc net.Conn, fr *http2.Framer) { // answers SETTINGS, and nothing else
		for {
			if _, err := fr.ReadFrame(); err != nil {
				return
			}
		}
	})
	dial := func(addr string) *ClientConn {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := NewClientConn(context.Background(), nc, ClientOptions{Ping: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	alive, dead := dial(good), dial(addr)
	time.Sleep(600 * time.Millisecond)
	if !alive.Usable() {
		t.Error("a connection whose peer answers PING was closed")
	}
	if dead.Usable() {
		t.Error("a connection whose peer never answers PING is still used")
	}
	if r, err := exchange(alive, "GET", "/", nil, nil, nil); err != nil || string(r.body) != "hello" {
		t.Errorf("after the PINGs: %+v %v", r, err)
	}
}

// TestClientFramesAfterEnd: an origin that sends more HEADERS and DATA on
// a stream after its END_STREAM, as strait finishes and reuses the
// stream, changes no other exchange (and crashes nothing: the reader once
// decoded into a stream being reused).
func TestClientFramesAfterEnd(t *testing.T) {
	addr := rawH2Origin(t, func(nc net.Conn, fr *http2.Framer) {
		eachRequest(fr, func(h *http2.HeadersFrame, path string) {
			var hb bytes.Buffer
			enc := hpack.NewEncoder(&hb)
			enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			enc.WriteField(hpack.HeaderField{Name: "x-path", Value: path})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, BlockFragment: hb.Bytes(), EndHeaders: true})
			fr.WriteData(h.StreamID, true, []byte(path))
			for range 3 { // after END_STREAM
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: true})
				fr.WriteData(h.StreamID, true, []byte("stray"))
			}
		})
	})
	cc := dialClient(t, addr)
	var wg sync.WaitGroup
	for g := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				path := fmt.Sprintf("/%d/%d", g, i)
				r, err := exchange(cc, "GET", path, nil, nil, nil)
				if err != nil || r.status != 200 || string(r.body) != path || r.header["x-path"] != path {
					t.Errorf("%s: %+v %v", path, r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestClientWriteDeadlineFresh: a body larger than the write buffer, on a
// connection quiet for longer than the write timeout, goes whole (the
// buffer's own flushes once met the deadline the last flush had set).
func TestClientWriteDeadlineFresh(t *testing.T) {
	addr := goH2Origin(t, nil, http.HandlerFunc(echo))
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := NewClientConn(context.Background(), nc, ClientOptions{Write: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := exchange(cc, "GET", "/", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	body := bytes.Repeat([]byte("p"), 200<<10)
	r, err := exchange(cc, "POST", "/p", nil, body, nil)
	if err != nil || !strings.Contains(r.header["x-seen"], "len=204800") {
		t.Fatalf("a 200 KiB body after a quiet spell: %+v %v", r.header, err)
	}
}

// rawH2Origin accepts one connection, reads the client preface, sends an
// empty SETTINGS and hands the connection to serve, which speaks raw
// frames; it returns the address.
func rawH2Origin(t *testing.T, serve func(nc net.Conn, fr *http2.Framer)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		if _, err := io.ReadFull(nc, make([]byte, len(ClientPreface))); err != nil {
			return
		}
		fr := http2.NewFramer(nc, nc)
		fr.WriteSettings()
		serve(nc, fr)
	}()
	return ln.Addr().String()
}

// TestClientGRPCEnds: the ways a gRPC origin ends a response, which
// strait once got wrong: a head with Content-Length 0 (as Go's server
// sends it) and trailers after it, whose trailers were dropped (Length
// 0 said nothing came after the head); and RST_STREAM NO_ERROR after the
// whole response, while the request still streams (RFC 9113 §8.1), which
// turned the response into an error. A head with END_STREAM is Length 0.
func TestClientGRPCEnds(t *testing.T) {
	addr := rawH2Origin(t, func(nc net.Conn, fr *http2.Framer) {
		eachRequest(fr, func(h *http2.HeadersFrame, path string) {
			block := func(kv ...string) []byte {
				var b bytes.Buffer
				enc := hpack.NewEncoder(&b)
				for i := 0; i < len(kv); i += 2 {
					enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
				}
				return b.Bytes()
			}
			head := block(":status", "200", "content-type", "application/grpc", "content-length", "0")
			trailers := block("grpc-status", "13", "grpc-message", "boom")
			switch path {
			case "/trailers-only":
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, BlockFragment: block(":status", "200", "grpc-status", "5"), EndHeaders: true, EndStream: true})
			case "/length-0-trailers":
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, BlockFragment: head, EndHeaders: true})
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, BlockFragment: trailers, EndHeaders: true, EndStream: true})
			case "/reset-after":
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, BlockFragment: block(":status", "200"), EndHeaders: true})
				fr.WriteData(h.StreamID, false, []byte("\x00\x00\x00\x00\x02hi"))
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, BlockFragment: trailers, EndHeaders: true, EndStream: true})
				fr.WriteRSTStream(h.StreamID, http2.ErrCodeNo)
			}
		})
	})
	cc := dialClient(t, addr)
	for _, tc := range []struct {
		path, body, status string
		length             int64
	}{
		{"/trailers-only", "", "", 0},
		{"/length-0-trailers", "", "13", -1},
		{"/reset-after", "\x00\x00\x00\x00\x02hi", "13", -1},
	} {
		up := cc.NewStream()
		up.Begin(0, 5*time.Second, 5*time.Second)
		var h header.Header
		if err := up.WriteHead("POST", []byte(tc.path), &h, "origin.test", -1, nil); err != nil {
			t.Fatal(err)
		}
		up.WriteBody([]byte("\x00\x00\x00\x00\x00")) // the request stays open
		up.Flush()
		resp, err := up.ReadHead("POST", mono.Now(), 5*time.Second)
		if err != nil || resp.Length != tc.length {
			t.Fatalf("%s: head %v, length %d, want %d", tc.path, err, resp.Length, tc.length)
		}
		var body []byte
		for resp.Length != 0 {
			p, err := up.ReadBody()
			body = append(body, p...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: body: %v", tc.path, err)
			}
		}
		if string(body) != tc.body || string(up.Trailer().Get("grpc-status")) != tc.status {
			t.Errorf("%s: body %q, grpc-status %q; want %q, %q", tc.path, body, up.Trailer().Get("grpc-status"), tc.body, tc.status)
		}
		up.Finish(false)
	}
}

// eachRequest reads the frames a client sends and calls answer with each
// request's HEADERS and :path, until the connection ends.
func eachRequest(fr *http2.Framer, answer func(h *http2.HeadersFrame, path string)) {
	dec := hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		h, ok := f.(*http2.HeadersFrame)
		if !ok {
			continue
		}
		fields, _ := dec.DecodeFull(h.HeaderBlockFragment())
		path := ""
		for _, hf := range fields {
			if hf.Name == ":path" {
				path = hf.Value
			}
		}
		answer(h, path)
	}
}
