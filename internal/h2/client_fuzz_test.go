package h2

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/straitproxy/strait/internal/mono"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/http1"
)

// FuzzRequestToH2 translates a request's fields, as an HTTP/1.1 client's
// head could hold them, to an HTTP/2 header block, and decodes it as the
// origin would: every field that goes is a lower-case token with a valid
// value, none HTTP/2 forbids, in order and unchanged; or the head is
// refused whole.
func FuzzRequestToH2(f *testing.F) {
	f.Add(encodeFields("Accept", "*/*", "X-A", "1"))
	f.Add(encodeFields("Host", "a.test", "Connection", "close", "Keep-Alive", "5", "TE", "trailers, deflate"))
	f.Add(encodeFields("Transfer-Encoding", "chunked", "Content-Length", "5", "Upgrade", "h2c"))
	f.Add(encodeFields("X-Bad", "a\r\nb", "x y", "z"))
	f.Add(encodeFields("Cookie", "a=1", "cookie", "b=2", "X-Empty", ""))
	f.Fuzz(func(t *testing.T, in []byte) {
		var h header.Header
		for _, hf := range fieldList(in) {
			h.Add(hf.Name, hf.Value)
		}
		b, _, ok := appendHeader(nil, &h, nil, requestField)
		if !ok {
			return
		}
		got, err := hpack.NewDecoder(4096, nil).DecodeFull(b)
		if err != nil {
			t.Fatalf("strait's block does not decode: %v", err)
		}
		var want []hpack.HeaderField
		for _, hf := range h.Fields() {
			name := strings.ToLower(string(hf.Name))
			switch {
			case name == "", name == "host", name == "te", name == "content-length", connectionSpecific([]byte(name)):
				continue
			}
			want = append(want, hpack.HeaderField{Name: name, Value: string(hf.Value)})
		}
		if len(got) != len(want) {
			t.Fatalf("%d fields went, want %d: %v, want %v", len(got), len(want), got, want)
		}
		for i, hf := range got {
			if hf.Name != want[i].Name || hf.Value != want[i].Value {
				t.Fatalf("field %d: %q: %q, want %q: %q", i, hf.Name, hf.Value, want[i].Name, want[i].Value)
			}
			for j := 0; j < len(hf.Name); j++ {
				if c := hf.Name[j]; !isTokenChar(c) || 'A' <= c && c <= 'Z' {
					t.Fatalf("field name %q went to an HTTP/2 origin", hf.Name)
				}
			}
			if !validValue([]byte(hf.Value)) {
				t.Fatalf("field value %q went to an HTTP/2 origin", hf.Value)
			}
		}
	})
}

// FuzzResponseFromH2 decodes a response head an HTTP/2 origin could send,
// any fields at all, as a ClientConn does, and writes what it takes as an
// HTTP/1.1 head: net/http must read back the same fields from it, so that
// nothing in an HTTP/2 response can split or smuggle one for an HTTP/1.1
// client.
func FuzzResponseFromH2(f *testing.F) {
	f.Add(encodeFields(":status", "200", "content-type", "text/plain", "content-length", "5"))
	f.Add(encodeFields(":status", "103", "link", "</a>"))
	f.Add(encodeFields(":status", "200", "x", "a\r\nSet-Cookie: evil=1", "y", "b\x00"))
	f.Add(encodeFields(":status", "200", "Upper", "1", "connection", "close", "transfer-encoding", "chunked"))
	f.Add(encodeFields("x", "1", ":status", "200", ":path", "/"))
	f.Add(encodeFields(":status", "2000", "content-length", "1", "content-length", "2"))
	f.Fuzz(func(t *testing.T, in []byte) {
		s := &clientStream{clientStreamFields: clientStreamFields{length: -1}}
		s.cond.L = &s.mu
		s.beginBlock(false)
		for _, hf := range fieldList(in) {
			if err := s.field(hf, false, 64<<10); err != nil {
				return // the stream is reset
			}
		}
		if err := s.endBlock(false); err != nil {
			return
		}
		h := &s.heads[0].hdr
		head, err := http1.AppendHeader([]byte("HTTP/1.1 200 OK\r\n"), h)
		if err != nil {
			return // strait refuses to write it
		}
		head = append(head, "\r\n"...)
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), nil)
		if err != nil {
			t.Fatalf("an HTTP/2 head strait took (%q) wrote an HTTP/1.1 head net/http refuses: %v\n%q", in, err, head)
		}
		n := 0
		for _, vs := range resp.Header {
			n += len(vs)
		}
		if n != h.Len() {
			t.Fatalf("%d fields taken, net/http reads %d from %q", h.Len(), n, head)
		}
	})
}

// FuzzClientFrames feeds a ClientConn with one stream open whatever
// frames an origin could send after its SETTINGS: it must neither panic
// nor hang, and the stream ends one way or another (a response, a reset,
// the connection failing).
func FuzzClientFrames(f *testing.F) {
	frame := func(typ http2.FrameType, flags http2.Flags, id uint32, payload []byte) []byte {
		var b bytes.Buffer
		fr := http2.NewFramer(&b, nil)
		fr.WriteRawFrame(typ, flags, id, payload)
		return b.Bytes()
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	enc.WriteField(hpack.HeaderField{Name: "grpc-status", Value: "0"})
	block := hb.Bytes()
	end := http2.FlagHeadersEndHeaders | http2.FlagHeadersEndStream
	f.Add(frame(http2.FrameHeaders, end, 1, block))
	f.Add(append(frame(http2.FrameHeaders, 0, 1, block[:1]), frame(http2.FrameContinuation, http2.FlagContinuationEndHeaders, 1, block[1:])...))
	f.Add(append(frame(http2.FrameHeaders, 0, 1, block[:1]), frame(http2.FrameContinuation, http2.FlagContinuationEndHeaders, 3, block[1:])...))
	f.Add(append(frame(http2.FrameHeaders, 0, 1, block[:1]), frame(http2.FrameWindowUpdate, 0, 0, []byte{0, 0, 0, 1})...))
	f.Add(frame(http2.FrameHeaders, end|http2.FlagHeadersPadded|http2.FlagHeadersPriority, 1, append([]byte{3, 0, 0, 0, 0, 9}, append(block, 0, 0, 0)...)))
	f.Add(frame(http2.FrameHeaders, end|http2.FlagHeadersPadded, 1, []byte{200}))
	f.Add(append(frame(http2.FrameWindowUpdate, 0, 1, []byte{0, 0, 0, 0}), frame(http2.FrameWindowUpdate, 0, 0, []byte{0x7f, 0xff, 0xff, 0xff})...))
	f.Add(frame(http2.FrameWindowUpdate, 0, 0, []byte{0, 0, 1}))
	f.Add(frame(http2.FrameContinuation, http2.FlagContinuationEndHeaders, 1, block))
	f.Add(frame(http2.FrameHeaders, end, 0, block))
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		defer a.Close()
		go func() {
			defer b.Close()
			go io.Copy(io.Discard, b)
			fr := http2.NewFramer(b, nil)
			fr.WriteSettings()
			fr.WriteSettingsAck()
			b.Write(in)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		cc, err := NewClientConn(ctx, a, ClientOptions{})
		if err != nil {
			return
		}
		defer cc.Close()
		up := cc.NewStream()
		up.Begin(mono.Now()+2*time.Second, time.Second, time.Second)
		var h header.Header
		if err := up.WriteHead("GET", []byte("/"), &h, "origin.test", 0, nil); err != nil {
			return
		}
		up.Flush()
		if resp, err := up.ReadHead("GET", mono.Now(), time.Second); err == nil && resp.Length != 0 {
			for {
				if _, err := up.ReadBody(); err != nil {
					break
				}
			}
		}
		up.Finish(false)
	})
}
