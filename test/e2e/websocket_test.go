package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestWebSocket echoes text and binary messages through strait's upgrade
// tunnel.
func TestWebSocket(t *testing.T) {
	const maxMsg = 256 << 10
	serverErr := make(chan error, 1)
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			serverErr <- err
			return
		}
		defer ws.CloseNow()
		ws.SetReadLimit(maxMsg + 1024)
		ctx := r.Context()
		for {
			typ, rd, err := ws.Reader(ctx)
			if err != nil {
				if websocket.CloseStatus(err) == websocket.StatusNormalClosure {
					serverErr <- nil
				} else {
					serverErr <- err
				}
				return
			}
			wr, err := ws.Writer(ctx, typ)
			if err != nil {
				serverErr <- err
				return
			}
			if _, err := io.Copy(wr, rd); err != nil {
				serverErr <- err
				return
			}
			if err := wr.Close(); err != nil {
				serverErr <- err
				return
			}
		}
	}))
	px := startStrait(t, clusterYAML(origin), nil)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "ws://"+px.Addr+"/ws", &websocket.DialOptions{
		HTTPClient:      newClient(false),
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		t.Fatalf("dial through strait: %v", err)
	}
	defer ws.CloseNow()
	if resp.StatusCode != 101 {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	ws.SetReadLimit(maxMsg + 1024)

	sizes := []int{0, 1, 2, 125, 126, 127, 1000, 4095, 4096, 65535, 65536, 65537, 100000, 200000, maxMsg - 1, maxMsg, 3, 70000, 32 << 10, 17}
	total := 0
	for i, n := range sizes {
		typ := websocket.MessageBinary
		var msg []byte
		if i%2 == 0 {
			typ = websocket.MessageText
			msg = []byte(strings.Repeat("abcdefghijklmnopqrstuvwxyz", n/26+1)[:n])
		} else {
			msg = randomBytes(n)
		}
		if err := ws.Write(ctx, typ, msg); err != nil {
			t.Fatalf("message %d (%d bytes): write: %v", i, n, err)
		}
		gotTyp, got, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("message %d (%d bytes): read: %v", i, n, err)
		}
		if gotTyp != typ || !bytes.Equal(got, msg) {
			t.Fatalf("message %d: got %v of %d bytes, sent %v of %d bytes (equal=%v)", i, gotTyp, len(got), typ, n, bytes.Equal(got, msg))
		}
		total += n
	}
	if err := ws.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Fatalf("close: %v", err)
	}
	select {
	case err := <-serverErr:
		if err != nil {
			t.Fatalf("origin: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the origin did not see the close")
	}
	// The tunnel ends once both sides closed.
	deadline := time.Now().Add(5 * time.Second)
	for px.Srv.Counters().ConnsOpen.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("strait still holds %d client connections after the WebSocket closed", px.Srv.Counters().ConnsOpen.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	log := px.waitAccessLog(t, 1)
	if len(log) != 1 || log[0].Status != 101 {
		t.Fatalf("access log %+v, want one 101", log)
	}
	if log[0].Error != "" {
		t.Errorf("the tunnel ended with an error: %s", log[0].Error)
	}
	t.Logf("%d messages, %d payload bytes each way, echoed exactly; access log: in=%d out=%d error=%q",
		len(sizes), total, log[0].BytesIn, log[0].BytesOut, log[0].Error)
}
