package h1

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/sockio"

	"github.com/straitproxy/strait/internal/fdlimit"
	"github.com/straitproxy/strait/internal/stream"
)

// okHandler answers every request 200 "ok".
type okHandler struct{}

func (okHandler) Serve(ds stream.Downstream) stream.End {
	if body, err := ds.WriteHead(&stream.ResponseHead{Status: 200, Length: 2}); err == nil && body {
		ds.WriteBody([]byte("ok"))
	}
	return stream.Done
}

func (okHandler) Reject(ds stream.Downstream, r *stream.Rejection) {
	ds.WriteHead(&stream.ResponseHead{Status: r.Status, Length: 0})
	ds.Flush()
}

// startServer serves HTTP/1.1 with okHandler on a loopback port; noParker
// has idle connections wait on goroutines of their own (waitParked), as
// where the parker cannot be made.
func startServer(t *testing.T, noParker bool) (*Server, string) {
	t.Helper()
	srv := &Server{
		Handler:  okHandler{},
		Timeouts: Timeouts{Header: 10 * time.Second, Body: 10 * time.Second, Write: 10 * time.Second, Idle: 10 * time.Second},
		Logger:   slog.New(slog.DiscardHandler),
		Open:     new(atomic.Int64),
	}
	if noParker {
		srv.parkDone = true
	} else if srv.Parker() == nil {
		t.Skip("no parker on this platform")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var open atomic.Int64
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			fdlimit.TakeSocket()
			open.Add(1)
			srv.Serve(nc, &open, sockio.AddrPort(nc.RemoteAddr()), sockio.AddrPort(nc.LocalAddr()))
		}
	}()
	t.Cleanup(func() { ln.Close(); srv.Close() })
	return srv, ln.Addr().String()
}

// shutdown runs Shutdown(drainIdle) and Drain until no connection is left
// (or 5 s), and sends how long that took on the channel returned.
func shutdown(srv *Server, drainIdle time.Duration) <-chan time.Duration {
	done := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		srv.Shutdown(drainIdle)
		for srv.Drain() > 0 && time.Since(start) < 5*time.Second {
			time.Sleep(5 * time.Millisecond)
		}
		done <- time.Since(start)
	}()
	return done
}

func get(t *testing.T, c net.Conn, br *bufio.Reader) *http.Response {
	t.Helper()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	return resp
}

// TestShutdownDrainsIdle: a connection idle when Shutdown begins (waiting
// hot, parked, on a goroutine of its own, or not yet used) carries one
// more request within the drain, answered with Connection: close, and
// then closes; Drain reports none left as soon as it has, not at the end
// of the drain.
func TestShutdownDrainsIdle(t *testing.T) {
	for _, tc := range []struct {
		name     string
		noParker bool
		first    bool          // nothing sent before the shutdown
		idle     time.Duration // before Shutdown
		after    time.Duration // from Shutdown to the request
	}{
		// Within park.After of its last response: a hot wait.
		{name: "hot", after: 5 * time.Millisecond},
		{name: "parked", idle: 100 * time.Millisecond, after: 100 * time.Millisecond},
		{name: "own goroutine", noParker: true, idle: 100 * time.Millisecond, after: 100 * time.Millisecond},
		{name: "first request", first: true, idle: 100 * time.Millisecond, after: 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, addr := startServer(t, tc.noParker)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			if !tc.first {
				if resp := get(t, c, br); resp.Close {
					t.Fatal("the response before the shutdown closed the connection")
				}
			}
			time.Sleep(tc.idle)
			const drainIdle = 3 * time.Second
			done := shutdown(srv, drainIdle)
			time.Sleep(tc.after)
			resp := get(t, c, br)
			if resp.StatusCode != 200 || !resp.Close {
				t.Errorf("the request within the drain: %d, close %v; want 200 with Connection: close", resp.StatusCode, resp.Close)
			}
			if _, err := br.ReadByte(); err == nil {
				t.Error("the connection outlived its response")
			}
			if took := <-done; took > drainIdle/2 {
				t.Errorf("Drain found the connection gone after %v; want it soon after the response, not at the drain's end (%v)", took, drainIdle)
			}
		})
	}
}

// TestShutdownClosesIdleAfterDrain: a connection that sends nothing is
// closed once the drain is over, not before; with no drain, at once.
func TestShutdownClosesIdleAfterDrain(t *testing.T) {
	for _, tc := range []struct {
		name     string
		noParker bool
		drain    time.Duration
	}{
		{name: "parked", drain: 300 * time.Millisecond},
		{name: "own goroutine", noParker: true, drain: 300 * time.Millisecond},
		{name: "no drain", drain: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, addr := startServer(t, tc.noParker)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			get(t, c, br)
			time.Sleep(100 * time.Millisecond) // parked, or waiting on its goroutine
			start := time.Now()
			<-shutdown(srv, tc.drain)
			_, err = br.ReadByte()
			took := time.Since(start)
			if err == nil {
				t.Fatal("the idle connection got bytes")
			}
			lo, hi := max(tc.drain, 0), max(tc.drain, 0)+250*time.Millisecond
			if took < lo || took > hi {
				t.Errorf("the idle connection closed after %v, want %v-%v", took, lo, hi)
			}
		})
	}
}
