package e2e

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestHTTP2FlowControl: a client that stops reading one stream holds back
// that stream's upstream (the origin cannot write more than socket
// buffers and strait's own bounded ones hold), while the other streams of
// the connection go on; the stalled stream ends at the write timeout.
func TestHTTP2FlowControl(t *testing.T) {
	var written atomic.Int64
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/big" {
			io.WriteString(w, "small")
			return
		}
		chunk := make([]byte, 64<<10)
		for range 1024 { // 64 MiB, if the client reads it
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	plain, _, _, _ := h2Strait(t, origin, "timeouts: {write: 2s}\n")
	c := dialH2(t, plain)
	c.fr.WriteWindowUpdate(0, 1<<30) // the connection's window stays open; stream 1's does not
	get := func(id uint32, path string) {
		c.headers(id, true, ":method", "GET", ":scheme", "http", ":path", path, ":authority", "a.test")
	}
	get(1, "/big")
	// Stream 1 gets its 64 KiB window's worth, then waits.
	var got1 int
	for got1 < 65535 {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 {
			got1 += len(d.Data())
		}
	}
	get(3, "/small")
	if got := c.outcome(3); got != "status 200" {
		t.Errorf("a stream beside the stalled one: %s", got)
	}
	time.Sleep(500 * time.Millisecond)
	if w := written.Load(); w > 16<<20 {
		t.Errorf("the origin wrote %d MiB while the client read 64 KiB: not held back", w>>20)
	}
	t.Logf("stream 1 stalled after %d bytes; the origin had written %d KiB", got1, written.Load()>>10)
	// The write timeout ends the stalled stream.
	start := time.Now()
	if got := c.outcome(1); !strings.HasPrefix(got, "rst ") || time.Since(start) > 5*time.Second {
		t.Errorf("the stalled stream: %s after %v, want a reset after the 2 s write timeout", got, time.Since(start))
	}

	// A client whose window is zero from the start gets the head, no
	// body, and the reset at the write timeout.
	z := dialH2(t, plain)
	z.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	z.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/small", ":authority", "a.test")
	start = time.Now()
	if got := z.outcome(1); !strings.HasPrefix(got, "rst ") || time.Since(start) > 5*time.Second {
		t.Errorf("a zero window: %s after %v", got, time.Since(start))
	}
}

// TestHTTP2Shutdown: on SIGTERM strait sends GOAWAY in two steps (the
// highest stream id first, so that streams the client opens meanwhile
// are served; then, a round trip later, the last stream it took), the
// stream in flight finishes, and the connection then closes.
func TestHTTP2Shutdown(t *testing.T) {
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
		io.WriteString(w, "late")
	}))
	plain, _, _, p := h2Strait(t, origin, "")
	c := dialH2(t, plain)
	c.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/", ":authority", "a.test")
	time.Sleep(200 * time.Millisecond)
	p.signal(syscall.SIGTERM)
	var goAways []*http2.GoAwayFrame
	status, body := "", ""
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == ":status" {
			status = f.Value
		}
	})
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			break // closed, once the stream is done
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			goAways = append(goAways, f)
		case *http2.PingFrame:
			if !f.IsAck() {
				c.fr.WritePing(true, f.Data)
			}
		case *http2.HeadersFrame:
			dec.Write(f.HeaderBlockFragment())
		case *http2.DataFrame:
			body += string(f.Data())
		}
	}
	if len(goAways) != 2 || goAways[0].ErrCode != http2.ErrCodeNo || goAways[0].LastStreamID != 1<<31-1 ||
		goAways[1].ErrCode != http2.ErrCodeNo || goAways[1].LastStreamID != 1 {
		t.Errorf("GOAWAYs: %v, want NO_ERROR with last stream 2^31-1, then 1", goAways)
	}
	if status != "200" || body != "late" {
		t.Errorf("the stream in flight: %s %q, want 200 late\n%s", status, body, p.stderr.String())
	}
	if !p.wait(5 * time.Second) {
		t.Errorf("strait did not exit")
	}

}
