package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSSE: server-sent events go through strait as they are sent, not
// when a buffer fills.
func TestSSE(t *testing.T) {
	const (
		events = 8
		gap    = 200 * time.Millisecond
		// maxDelay bounds the time from the origin's flush to the client's
		// read of an event.
		maxDelay = 100 * time.Millisecond
	)
	var mu sync.Mutex
	sent := make([]time.Time, events)
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(200)
		f := w.(http.Flusher)
		f.Flush()
		for i := range events {
			if i > 0 {
				select {
				case <-time.After(gap):
				case <-r.Context().Done():
					return
				}
			}
			fmt.Fprintf(w, "data: %d\n\n", i)
			mu.Lock()
			sent[i] = time.Now()
			mu.Unlock()
			f.Flush()
		}
	}))
	px := startStrait(t, clusterYAML(origin), nil)

	resp, err := newClient(false).Get(px.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	received := make([]time.Time, 0, events)
	sc := bufio.NewScanner(resp.Body)
	for len(received) < events && sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		now := time.Now()
		want := fmt.Sprintf("data: %d", len(received))
		if line != want {
			t.Fatalf("got line %q, want %q", line, want)
		}
		received = append(received, now)
	}
	if len(received) != events {
		t.Fatalf("received %d events, want %d (scan error: %v)", len(received), events, sc.Err())
	}
	mu.Lock()
	defer mu.Unlock()
	var delays []string
	var worst time.Duration
	for i := range events {
		d := received[i].Sub(sent[i])
		worst = max(worst, d)
		delays = append(delays, d.Round(10*time.Microsecond).String())
		if d > maxDelay {
			t.Errorf("event %d arrived %v after the origin sent it (want under %v): strait buffers the stream", i, d, maxDelay)
		}
		if i+1 < events && !received[i].Before(sent[i+1]) {
			t.Errorf("event %d arrived only after event %d was sent", i, i+1)
		}
	}
	t.Logf("per-event delay origin flush → client read: %s (worst %v)", strings.Join(delays, " "), worst)
}

// TestStreamingUpload: pieces of a chunked request body reach the origin
// as the client sends them.
func TestStreamingUpload(t *testing.T) {
	const (
		pieces   = 8
		gap      = 150 * time.Millisecond
		maxDelay = 100 * time.Millisecond
	)
	got := make(chan time.Time, pieces)
	done := make(chan error, 1)
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 4096)
		var acc []byte
		n := 0
		for {
			k, err := r.Body.Read(buf)
			acc = append(acc, buf[:k]...)
			for n < pieces && strings.Contains(string(acc), fmt.Sprintf("<piece %d>", n)) {
				got <- time.Now()
				n++
			}
			if err != nil {
				if err.Error() != "EOF" {
					done <- err
					return
				}
				break
			}
		}
		done <- nil
		fmt.Fprintf(w, "got %d pieces\n", n)
	}))
	// Not buffered: the route streams bodies as they come.
	px := startStrait(t, strings.Replace(clusterYAML(origin), "- cluster: origin", "- {cluster: origin, request_buffering: off}", 1), nil)
	c := dialPipeline(t, px.Addr)
	c.write("POST /upload HTTP/1.1\r\nHost: e2e\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n")
	var delays []string
	for i := range pieces {
		p := fmt.Sprintf("<piece %d>", i)
		sentAt := time.Now()
		c.write(fmt.Sprintf("%x\r\n%s\r\n", len(p), p))
		select {
		case at := <-got:
			d := at.Sub(sentAt)
			delays = append(delays, d.Round(10*time.Microsecond).String())
			if d > maxDelay {
				t.Errorf("piece %d reached the origin %v after the client sent it (want under %v)", i, d, maxDelay)
			}
		case <-time.After(gap):
			delays = append(delays, ">"+gap.String())
			t.Errorf("piece %d had not reached the origin %v after the client sent it: strait holds the request body back", i, gap)
		}
	}
	c.write("0\r\n\r\n")
	c.expect("POST", "/upload", []byte(fmt.Sprintf("got %d pieces\n", pieces)))
	if err := <-done; err != nil {
		t.Fatalf("origin: %v", err)
	}
	t.Logf("per-piece delay client write → origin read: %s", strings.Join(delays, " "))
}
