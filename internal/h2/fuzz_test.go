package h2

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/http1"
	"github.com/straitproxy/strait/internal/park"
	istream "github.com/straitproxy/strait/internal/stream"
)

// answerHandler answers every request itself: its body read whole (up to
// a bound), then a short response with a trailer.
type answerHandler struct{}

func (answerHandler) Serve(ds istream.Downstream) istream.End {
	for n := 0; n < 1<<20; {
		b, err := ds.ReadBody()
		n += len(b)
		if err != nil {
			break
		}
	}
	var h header.Header
	h.Add("X-Answer", "yes")
	if body, err := ds.WriteHead(&istream.ResponseHead{Status: 200, Header: &h, Length: -1}); err != nil || !body {
		return istream.Done
	}
	ds.WriteBody([]byte("ok"))
	var tr header.Header
	tr.Add("X-Trailer", "t")
	ds.EndBody(&tr)
	ds.Flush()
	return istream.Done
}

func (answerHandler) Reject(ds istream.Downstream, r *istream.Rejection) {
	ds.WriteHead(&istream.ResponseHead{Status: r.Status, Length: 0})
	ds.Flush()
}

// frames writes a client's frames with a Framer, as seeds are made.
func frames(write func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer)) []byte {
	var out, hb bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	fr.AllowIllegalWrites = true
	enc := hpack.NewEncoder(&hb)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	write(fr, enc, &hb)
	return out.Bytes()
}

func block(enc *hpack.Encoder, hb *bytes.Buffer, fields ...string) []byte {
	hb.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return append([]byte(nil), hb.Bytes()...)
}

var get = []string{":method", "GET", ":scheme", "http", ":path", "/", ":authority", "a"}

// connSeeds are client frame sequences, valid and not.
var connSeeds = map[string][]byte{
	"get": frames(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(enc, hb, get...), EndStream: true, EndHeaders: true})
	}),
	"post-trailers": frames(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true,
			BlockFragment: block(enc, hb, ":method", "POST", ":scheme", "http", ":path", "/p", ":authority", "a", "content-length", "5")})
		fr.WriteData(1, false, []byte("he"))
		fr.WriteDataPadded(1, false, []byte("llo"), make([]byte, 7))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(enc, hb, "x-t", "1"), EndStream: true, EndHeaders: true})
	}),
	"continuation": frames(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		b := block(enc, hb, append(get, "x-long", strings.Repeat("v", 300))...)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:10], EndStream: true})
		fr.WriteContinuation(1, false, b[10:100])
		fr.WriteContinuation(1, true, b[100:])
	}),
	"many-streams-reset": frames(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		for i := uint32(1); i < 40; i += 2 {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: i, BlockFragment: block(enc, hb, get...), EndHeaders: true})
			fr.WriteRSTStream(i, http2.ErrCodeCancel)
		}
	}),
	"control": frames(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		fr.WritePing(false, [8]byte{1})
		fr.WriteWindowUpdate(0, 1000)
		fr.WritePriority(1, http2.PriorityParam{StreamDep: 3, Weight: 9})
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 14})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(enc, hb, get...), EndStream: true, EndHeaders: true})
		fr.WriteWindowUpdate(3, 1)
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 16})
		fr.WriteGoAway(3, http2.ErrCodeNo, nil)
	}),
	"malformed": frames(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(enc, hb, append(get, "Upper", "x", "x", "a\r\nb")...), EndStream: true, EndHeaders: true})
		fr.WriteData(1, true, []byte("late"))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, BlockFragment: block(enc, hb, get...), EndStream: true, EndHeaders: true})
	}),
}

// FuzzConn feeds a connection the client preface and then the input, in
// pieces of sizes drawn from the input, and answers every request
// itself. It must not panic, and must end once its client is gone.
func FuzzConn(f *testing.F) {
	for _, s := range connSeeds {
		f.Add(s, uint8(0))
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		srv := &Server{Handler: answerHandler{}, Timeouts: Timeouts{Idle: time.Second, Body: time.Second, Write: time.Second, CalmHold: time.Millisecond}}
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			srv.ServeConn(Conn{NC: server})
			close(done)
		}()
		go io.Copy(io.Discard, client)
		client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		client.Write([]byte(ClientPreface))
		for rest := in; len(rest) > 0; {
			n := len(rest)
			if split > 0 {
				n = min(n, int(split))
			}
			if _, err := client.Write(rest[:n]); err != nil {
				break
			}
			rest = rest[n:]
		}
		time.Sleep(time.Millisecond)
		client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the connection did not end after its client closed")
		}
	})
}

// fieldList decodes a fuzzer's input into name, value pairs, each a length
// byte and that many bytes.
func fieldList(in []byte) []hpack.HeaderField {
	var fs []hpack.HeaderField
	next := func() (string, bool) {
		if len(in) == 0 {
			return "", false
		}
		n := min(int(in[0]), len(in)-1)
		s := string(in[1 : 1+n])
		in = in[1+n:]
		return s, true
	}
	for {
		name, ok := next()
		value, ok2 := next()
		if !ok || !ok2 {
			return fs
		}
		fs = append(fs, hpack.HeaderField{Name: name, Value: value})
	}
}

func encodeFields(kv ...string) []byte {
	var b []byte
	for _, s := range kv {
		b = append(append(b, byte(len(s))), s...)
	}
	return b
}

// FuzzFields checks the translation of a request to HTTP/1.1: whatever
// the field checks accept makes a request that strait's own HTTP/1.1
// parser reads back as the same method, target and fields, and nothing
// more: no field, value or pseudo-field can smuggle a second request or
// a field of its own.
func FuzzFields(f *testing.F) {
	f.Add(encodeFields(get...))
	f.Add(encodeFields(append(get, "cookie", "a=1", "cookie", "b=2", "te", "trailers")...))
	f.Add(encodeFields(append(get, "x", "a\r\nb: c")...))
	f.Add(encodeFields(":method", "GET", ":scheme", "http", ":path", "/a b HTTP/1.1\r\nX: y", ":authority", "a"))
	f.Add(encodeFields(append(get, "host", "b", "content-length", "0")...))
	f.Add(encodeFields(":method", "CONNECT", ":authority", "a:443"))
	f.Fuzz(checkFields)
}

func checkFields(t *testing.T, in []byte) {
	{
		var d decoded
		d.reset()
		var h header.Header
		for _, fl := range fieldList(in) {
			if d.field(fl, false, 64<<10) {
				h.Add(fl.Name, fl.Value)
			}
		}
		d.finish()
		if d.bad != "" || d.tooLarge || string(d.method) == "CONNECT" {
			return
		}
		if d.hasCookie {
			h.AddBytes([]byte("cookie"), d.cookies)
		}
		authority := d.authority
		if authority == nil {
			authority = d.host
		}
		var req bytes.Buffer
		fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\n", d.method, d.path, authority)
		for _, fl := range h.Fields() {
			fmt.Fprintf(&req, "%s: %s\r\n", fl.Name, fl.Value)
		}
		if d.contentLength >= 0 {
			fmt.Fprintf(&req, "Content-Length: %d\r\n", d.contentLength)
		}
		req.WriteString("\r\n")
		var r http1.Reader
		r.Reset(bufio.NewReader(bytes.NewReader(req.Bytes())), http1.Limits{MaxRequestLine: 1 << 20, MaxHeaderBytes: 1 << 20, MaxHeaderCount: 10000})
		var got http1.Request
		if err := r.ReadRequest(&got); err != nil {
			if len(authority) == 0 {
				return // no Host: strait sends the peer's
			}
			t.Fatalf("accepted over HTTP/2, refused as HTTP/1.1: %v\n%q", err, req.Bytes())
		}
		want := h.Len() + 1
		if d.contentLength >= 0 {
			want++
		}
		if string(got.Method) != string(d.method) || string(got.Target) != string(d.path) || got.Header.Len() != want || r.Buffered() != 0 {
			t.Fatalf("read back as %s %s with %d fields (%d bytes left), want %s %s with %d\n%q",
				got.Method, got.Target, got.Header.Len(), r.Buffered(), d.method, d.path, want, req.Bytes())
		}
	}
}

// TestFuzzSeeds keeps testdata/fuzz's seed files the seeds made here;
// STRAIT_WRITE_FUZZ_SEEDS=1 writes them.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzConn")
	for name, s := range connSeeds {
		want := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s)) + ")\nbyte('\\x00')\n"
		path := filepath.Join(dir, "seed-"+name)
		if os.Getenv("STRAIT_WRITE_FUZZ_SEEDS") == "1" {
			os.MkdirAll(dir, 0o755)
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("%s: not the seed made here (STRAIT_WRITE_FUZZ_SEEDS=1 go test -run TestFuzzSeeds writes it): %v", path, err)
		}
	}
}

// TestConnAnswers: the POST seed, with padding and trailers, is answered
// whole: :status 200, the body and the trailer. (The client leaves
// SETTINGS unacknowledged: a net.Pipe write waits for its reader.)
func TestConnAnswers(t *testing.T) {
	srv := &Server{Handler: answerHandler{}}
	client, server := net.Pipe()
	defer client.Close()
	go srv.ServeConn(Conn{NC: server})
	client.SetDeadline(time.Now().Add(5 * time.Second))
	go func() {
		client.Write([]byte(ClientPreface))
		client.Write(connSeeds["post-trailers"])
	}()
	fr := http2.NewFramer(client, client)
	var status, trailer, body string
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		switch f.Name {
		case ":status":
			status = f.Value
		case "x-trailer":
			trailer = f.Value
		}
	})
	for trailer == "" {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after status %q body %q: %v", status, body, err)
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			dec.Write(f.HeaderBlockFragment())
		case *http2.DataFrame:
			body += string(f.Data())
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			t.Fatalf("%v", f)
		}
	}
	if status != "200" || body != "ok" || trailer != "t" {
		t.Errorf("status %q, body %q, trailer %q", status, body, trailer)
	}
}

// TestSettingsTimeout: a client that does not acknowledge strait's
// SETTINGS gets GOAWAY SETTINGS_TIMEOUT when the timeout passes, whether
// it sends frames meanwhile or not; one that leaves half a frame is
// closed at the frame timeout, not the idle one. Each with its connection
// parked, and waiting in its read.
func TestSettingsTimeout(t *testing.T) {
	var parker *park.Parker
	t.Cleanup(func() {
		if parker != nil {
			parker.CloseAll(false)
		}
	})
	for _, parked := range []bool{false, true} {
		srv := &Server{Handler: answerHandler{},
			Timeouts: Timeouts{Settings: 300 * time.Millisecond, Frame: 300 * time.Millisecond, Idle: time.Minute}}
		if parked {
			p, err := park.New()
			if err != nil {
				t.Fatal(err)
			}
			parker = p
			srv.Parker = func() *park.Parker { return p }
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				go srv.ServeConn(Conn{NC: nc})
			}
		}()
		for _, mode := range []string{"ping", "silent", "preface", "partial"} {
			t.Run(fmt.Sprintf("%s/parked=%v", mode, parked), func(t *testing.T) {
				client, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer client.Close()
				start := time.Now()
				client.SetDeadline(start.Add(5 * time.Second))
				var out bytes.Buffer
				fr := http2.NewFramer(&out, nil)
				out.WriteString(ClientPreface)
				if mode != "preface" {
					fr.WriteSettings()
				}
				if mode == "partial" {
					fr.WriteSettingsAck()
					out.Write([]byte{0, 0, 8, byte(http2.FramePing), 0})
				}
				client.Write(out.Bytes())
				if mode == "ping" {
					time.Sleep(400 * time.Millisecond)
					out.Reset()
					fr.WritePing(false, [8]byte{})
					client.Write(out.Bytes())
				}
				want := http2.ErrCodeSettingsTimeout
				if mode == "partial" {
					want = http2.ErrCodeNo
				}
				rd := http2.NewFramer(io.Discard, client)
				for {
					f, err := rd.ReadFrame()
					if err != nil {
						t.Fatalf("no GOAWAY after %v: %v", time.Since(start), err)
					}
					if g, ok := f.(*http2.GoAwayFrame); ok {
						took := time.Since(start)
						if g.ErrCode != want || took < 250*time.Millisecond || took > 2500*time.Millisecond {
							t.Errorf("GOAWAY %v after %v, want %v after 300ms (or the parker's next sweep)", g.ErrCode, took, want)
						}
						return
					}
				}
			})
		}
	}
}
