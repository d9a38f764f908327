package grpcwire

import (
	"bytes"
	"encoding/base64"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/straitproxy/strait/header"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
)

func TestClassify(t *testing.T) {
	for ct, want := range map[string]Kind{
		"application/grpc":                     GRPC,
		"application/grpc+proto":               GRPC,
		"Application/GRPC+json":                GRPC,
		"application/grpc;charset=utf-8":       GRPC,
		"application/grpc-web":                 Web,
		"application/grpc-web+proto":           Web,
		"application/grpc-web-text":            WebText,
		"application/grpc-web-text+proto":      WebText,
		"application/grpcx":                    NotGRPC,
		"application/grpc-webby":               NotGRPC,
		"application/json":                     NotGRPC,
		"application/gr":                       NotGRPC,
		"":                                     NotGRPC,
		"application/grpc-web-textual":         NotGRPC,
		"application/grpc-web-text+proto;q=10": WebText,
	} {
		if got := Classify([]byte(ct)); got != want {
			t.Errorf("Classify(%q) = %d, want %d", ct, got, want)
		}
	}
	if got := UpstreamContentType([]byte("application/grpc-web-text+proto")); got != "application/grpc+proto" {
		t.Errorf("UpstreamContentType = %q", got)
	}
	if got := WebContentType([]byte("application/grpc"), WebText); got != "application/grpc-web-text" {
		t.Errorf("WebContentType = %q", got)
	}
}

func TestTimeout(t *testing.T) {
	for v, want := range map[string]time.Duration{
		"1S": time.Second, "100m": 100 * time.Millisecond, "5u": 5 * time.Microsecond, "7n": 7,
		"2M": 2 * time.Minute, "1H": time.Hour, "99999999H": 1<<63 - 1, "0m": 0,
	} {
		if got, ok := ParseTimeout([]byte(v)); !ok || got != want {
			t.Errorf("ParseTimeout(%q) = %v %v, want %v", v, got, ok, want)
		}
	}
	for _, v := range []string{"", "S", "1", "1s", "123456789S", "-1S", "1.5S", " 1S"} {
		if _, ok := ParseTimeout([]byte(v)); ok {
			t.Errorf("ParseTimeout(%q) accepted", v)
		}
	}
	for _, d := range []time.Duration{time.Nanosecond, 1500 * time.Microsecond, time.Second, 200 * time.Hour} {
		got, ok := ParseTimeout(AppendTimeout(nil, d))
		if !ok || got < d || got > d+time.Second {
			t.Errorf("AppendTimeout(%v) = %s: %v", d, AppendTimeout(nil, d), got)
		}
	}
}

func TestCodes(t *testing.T) {
	for s, want := range map[string]Code{"unavailable": Unavailable, "UNAVAILABLE": Unavailable, "14": Unavailable,
		"canceled": Canceled, "cancelled": Canceled, "resource_exhausted": ResourceExhausted} {
		if got, ok := ParseCode(s); !ok || got != want {
			t.Errorf("ParseCode(%q) = %v %v", s, got, ok)
		}
	}
	for _, s := range []string{"17", "-1", "bogus", ""} {
		if _, ok := ParseCode(s); ok {
			t.Errorf("ParseCode(%q) accepted", s)
		}
	}
	if got := string(AppendMessage(nil, "a 100% ok\r\n\u00e9")); got != "a 100%25 ok%0D%0A%C3%A9" {
		t.Errorf("AppendMessage = %q", got)
	}
}

func TestTrailerFrame(t *testing.T) {
	var h header.Header
	h.Add("Grpc-Status", "0")
	h.Add("grpc-message", "fine")
	got := AppendTrailerFrame([]byte("x"), &h)
	want := "x\x80\x00\x00\x00\x24grpc-status: 0\r\ngrpc-message: fine\r\n"
	if string(got) != want {
		t.Errorf("AppendTrailerFrame = %q, want %q", got, want)
	}
}

// decodeWhole is the oracle: padded groups decoded one by one.
func decodeWhole(p []byte) ([]byte, bool) {
	if len(p)%4 != 0 || bytes.ContainsAny(p, "\r\n") { // line breaks are not gRPC-Web's
		return nil, false
	}
	var out []byte
	for ; len(p) > 0; p = p[4:] {
		var err error
		if out, err = base64.StdEncoding.AppendDecode(out, p[:4]); err != nil {
			return nil, false
		}
	}
	return out, true
}

// decodeSplit decodes p in pieces cut at random.
func decodeSplit(p []byte, r *rand.Rand) ([]byte, error) {
	var d TextDecoder
	var out []byte
	for len(p) > 0 {
		n := 1 + r.IntN(len(p))
		var err error
		if out, err = d.Decode(out, p[:n]); err != nil {
			return nil, err
		}
		p = p[n:]
	}
	return out, d.End()
}

func TestTextDecoder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		// Pieces encoded each with its padding, one after another.
		var text, want []byte
		for range 1 + r.IntN(5) {
			p := make([]byte, r.IntN(40))
			for j := range p {
				p[j] = byte(r.Uint32())
			}
			want = append(want, p...)
			text = AppendText(text, p)
		}
		got, err := decodeSplit(text, r)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("case %d: %q decoded to %x, %v; want %x", i, text, got, err, want)
		}
	}
	for _, bad := range []string{"AAA", "A===", "AB=C", "####", "AAAAA"} {
		if _, err := decodeSplit([]byte(bad), r); err == nil {
			t.Errorf("%q decoded without error", bad)
		}
	}
}

func FuzzTextDecoder(f *testing.F) {
	f.Add([]byte("AAECAw=="), uint64(1))
	f.Add([]byte("AQ==AgM=BAUG"), uint64(7))
	f.Add([]byte("AAAA\x80"), uint64(3))
	f.Fuzz(func(t *testing.T, text []byte, seed uint64) {
		want, ok := decodeWhole(text)
		got, err := decodeSplit(text, rand.New(rand.NewPCG(seed, seed)))
		if ok != (err == nil) || ok && !bytes.Equal(got, want) {
			t.Fatalf("%q: split %x %v, whole %x %v", text, got, err, want, ok)
		}
	})
}

func FuzzParseTimeout(f *testing.F) {
	for _, s := range []string{"1S", "99999999H", "0n", "12345678m"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		d, ok := ParseTimeout(v)
		if ok && d < 0 {
			t.Fatalf("%q: %v", v, d)
		}
	})
}

// TestHealthMessages checks the health messages against the protobuf
// library's own encoding.
func TestHealthMessages(t *testing.T) {
	for _, svc := range []string{"", "grpc.testing.TestService", string(make([]byte, 300))} {
		var m grpc_health_v1.HealthCheckRequest
		req := HealthRequest(svc)
		if err := proto.Unmarshal(req[5:], &m); err != nil || m.Service != svc || int(req[4])|int(req[3])<<8 != len(req)-5 {
			t.Errorf("HealthRequest(%d bytes): %v %q", len(svc), err, m.Service)
		}
	}
	for _, st := range []grpc_health_v1.HealthCheckResponse_ServingStatus{0, 1, 2, 3} {
		msg, _ := proto.Marshal(&grpc_health_v1.HealthCheckResponse{Status: st})
		msg = append(msg, 0x12, 2, 'h', 'i') // a field the check does not know
		framed := append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...)
		if got, err := HealthStatus(framed); err != nil || got != int(st) {
			t.Errorf("HealthStatus(%v) = %d %v", st, got, err)
		}
	}
	for _, bad := range [][]byte{nil, {0, 0, 0, 0, 5, 8}, {1, 0, 0, 0, 0}, {0, 0, 0, 0, 2, 8, 0x80}} {
		if _, err := HealthStatus(bad); err == nil {
			t.Errorf("HealthStatus(%x) accepted", bad)
		}
	}
}

func TestMessages(t *testing.T) {
	body := []byte("\x00\x00\x00\x00\x03abc\x00\x00\x00\x00\x00\x01\x00\x00\x00\x02hi")
	for cut := 0; cut <= len(body); cut++ {
		for split := 0; split <= cut; split++ {
			var m Messages
			m.Advance(body[:split])
			m.Advance(body[split:cut])
			want := cut == 0 || cut == 8 || cut == 13 || cut == 20
			if m.Between() != want {
				t.Errorf("cut at %d (split %d): Between %v", cut, split, m.Between())
			}
		}
	}
}
