package park

import (
	"net"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/internal/sockio"
)

// owner records what the parker asks of a connection.
type owner struct{ resumed, closed chan struct{} }

func newOwner() *owner {
	return &owner{resumed: make(chan struct{}, 1), closed: make(chan struct{}, 1)}
}

func (o *owner) Resume() { o.resumed <- struct{}{} }
func (o *owner) Close()  { o.closed <- struct{}{} }

// waiter returns a Waiter for the server end of a loopback connection, and
// the client end.
func waiter(t *testing.T, o *owner, idleFor time.Duration) (*Waiter, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	w := &Waiter{}
	w.Init(sockio.FD(server), o)
	w.IdleSince = mono.Now()
	w.IdleEnd = w.IdleSince + idleFor
	return w, client
}

func newParker(t *testing.T) *Parker {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.CloseAll(false) })
	return p
}

func expect(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(3 * time.Second):
		t.Fatalf("not %s within 3 s", what)
	}
}

// TestWait: a hot wait ends Readable when the next request comes, and Idle
// after After without one.
func TestWait(t *testing.T) {
	p := newParker(t)
	w, client := waiter(t, newOwner(), time.Minute)
	go func() {
		time.Sleep(5 * time.Millisecond)
		client.Write([]byte("GET"))
	}()
	if got := p.Wait(w); got != Readable {
		t.Fatalf("Wait with a request coming = %d, want Readable", got)
	}
	if w.WokeAt == 0 {
		t.Fatal("WokeAt not set")
	}

	w2, _ := waiter(t, newOwner(), time.Minute)
	start := time.Now()
	if got := p.Wait(w2); got != Idle {
		t.Fatalf("Wait without a request = %d, want Idle", got)
	}
	if d := time.Since(start); d < After/2 || d > After+time.Second {
		t.Fatalf("Idle after %v, want about %v", d, After)
	}
	var nilParker *Parker
	if got := nilParker.Wait(w2); got != Unavailable {
		t.Fatalf("nil parker's Wait = %d, want Unavailable", got)
	}
}

// TestPark: a parked connection is resumed when its next request comes,
// closed when its idle time ends, and, when the parker closes, closed, or
// resumed if its request has begun and serve is asked.
func TestPark(t *testing.T) {
	p := newParker(t)
	o := newOwner()
	w, client := waiter(t, o, time.Minute)
	if !p.Park(w) {
		t.Fatal("Park refused")
	}
	client.Write([]byte("GET"))
	expect(t, o.resumed, "resumed")

	o2 := newOwner()
	w2, _ := waiter(t, o2, 10*time.Millisecond)
	if !p.Park(w2) {
		t.Fatal("Park refused")
	}
	expect(t, o2.closed, "closed at its idle end") // by the sweep, within sweepEvery

	o3, o4 := newOwner(), newOwner()
	w3, _ := waiter(t, o3, time.Minute)
	w4, client4 := waiter(t, o4, time.Minute)
	p.Park(w3)
	p.Park(w4)
	p.mu.Lock() // an edge the parker has not handed on yet
	client4.Write([]byte("GET"))
	time.Sleep(20 * time.Millisecond)
	p.mu.Unlock()
	p.CloseAll(true)
	expect(t, o3.closed, "closed by CloseAll")
	select {
	case <-o4.resumed:
	case <-o4.closed:
		t.Fatal("a connection with its request begun was closed by CloseAll(serve)")
	case <-time.After(3 * time.Second):
		t.Fatal("a connection with its request begun was neither resumed nor closed")
	}
	if p.Park(w3) {
		t.Fatal("a closed parker took a connection")
	}
}
