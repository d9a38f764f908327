package tunnel

import (
	"io"
	"net"
	"testing"
	"time"
)

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestRelayHalfClose: bytes read ahead go first, a half-close is passed
// on while the other direction keeps flowing, and the counts are what
// moved.
func TestRelayHalfClose(t *testing.T) {
	client, a := pair(t)
	b, origin := pair(t)
	done := make(chan Result, 1)
	go func() { done <- Relay(a, b, []byte("pre-a "), []byte("pre-b "), 5*time.Second) }()

	client.Write([]byte("hello"))
	client.CloseWrite()
	got, err := io.ReadAll(origin) // to the client's half-close
	if err != nil || string(got) != "pre-a hello" {
		t.Fatalf("origin read %q, %v", got, err)
	}
	origin.Write([]byte("world")) // the other way still flows
	origin.Close()
	got, err = io.ReadAll(client)
	if err != nil || string(got) != "pre-b world" {
		t.Fatalf("client read %q, %v", got, err)
	}
	select {
	case r := <-done:
		if r.AtoB != 11 || r.BtoA != 11 || r.AErr != nil || r.BErr != nil || r.Idle {
			t.Fatalf("result %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Relay did not return after both sides closed")
	}
}

// TestRelayIdle: a tunnel with nothing moving either way is closed after
// the idle timeout.
func TestRelayIdle(t *testing.T) {
	client, a := pair(t)
	b, origin := pair(t)
	start := time.Now()
	r := Relay(a, b, nil, nil, 100*time.Millisecond)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("idle tunnel ended after %v", d)
	}
	if !r.Idle || r.AErr != nil || r.BErr != nil {
		t.Fatalf("idle end reported as %+v, want Idle and no side at fault", r)
	}
	// Both peers see their connections end.
	for _, c := range []net.Conn{client, origin} {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("a peer's connection stayed open")
		}
	}
}

// TestRelayBlame: a client that stops reading while the other side sends
// is the side at fault (its write timed out), not the sender.
func TestRelayBlame(t *testing.T) {
	client, a := pair(t)
	b, origin := pair(t)
	client.SetReadBuffer(4096)
	a.SetWriteBuffer(4096)
	go func() {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := origin.Write(chunk); err != nil {
				return
			}
		}
	}()
	r := Relay(a, b, nil, nil, 200*time.Millisecond)
	if r.AErr == nil || r.BErr != nil {
		t.Fatalf("a client that stopped reading: %+v, want the error on a only", r)
	}
}
