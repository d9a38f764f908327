//lint:file-ignore SA1019 x/net's HTTP/2 Transport, deprecated, is the only Go client that sends an extended CONNECT

package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/http2"
)

// TestWebSocketOverHTTP2GoClient: Go's own HTTP/2 client (x/net's
// Transport, which waits for ENABLE_CONNECT_PROTOCOL before it sends an
// extended CONNECT) opens a WebSocket through strait to an HTTP/1.1 echo
// origin, as a browser does over HTTP/2.
func TestWebSocketOverHTTP2GoClient(t *testing.T) {
	origin, _ := wsEchoOrigin(t)
	plain, _, _, _ := h2Strait(t, origin, "")
	// net/http's Transport refuses the :protocol field its HTTP/2 code
	// would send (Go issue 71128); x/net's takes it.
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("CONNECT", "http://"+plain+"/chat", pr)
	req.Header.Set(":protocol", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("extended CONNECT: %d, want 200", resp.StatusCode)
	}
	for _, msg := range []string{"from Go's client", strings.Repeat("y", 100)} { // echoes under 126 bytes: one length byte
		frame := []byte{0x81, 0x80 | byte(len(msg)), 9, 8, 7, 6}
		for i := range len(msg) {
			frame = append(frame, msg[i]^[]byte{9, 8, 7, 6}[i%4])
		}
		if _, err := pw.Write(frame); err != nil {
			t.Fatal(err)
		}
		head := make([]byte, 2)
		if _, err := io.ReadFull(resp.Body, head); err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, head[1]&0x7f)
		if _, err := io.ReadFull(resp.Body, payload); err != nil {
			t.Fatal(err)
		}
		if head[0] != 0x81 || string(payload) != "echo: "+msg {
			t.Fatalf("echo of %q: % x %q", msg, head, payload)
		}
	}
	pw.Close()
}
