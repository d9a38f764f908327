package pool

import (
	"testing"
	"time"
)

type fakeConn struct {
	id     int
	closed bool
}

func (c *fakeConn) Close() error { c.closed = true; return nil }

func TestGetPutLIFOAndLimits(t *testing.T) {
	p := New[*fakeConn](Limits{MaxIdlePerPeer: 2, IdleTimeout: time.Minute, MaxLifetime: time.Hour})
	now := 1000 * time.Second
	a, b, c := &fakeConn{id: 1}, &fakeConn{id: 2}, &fakeConn{id: 3}
	if !p.Put("k", a, now, now) || !p.Put("k", b, now, now) {
		t.Fatal("Put refused under the limit")
	}
	if p.Put("k", c, now, now) || !c.closed {
		t.Fatal("a third idle connection was kept past MaxIdlePerPeer")
	}
	if got, ok := p.Get("k", now); !ok || got != b {
		t.Fatalf("Get = %v, want the most recently used (b)", got)
	}
	if _, ok := p.Get("other", now); ok {
		t.Fatal("Get found a connection for another peer")
	}
	if p.Len() != 1 {
		t.Fatalf("Len = %d", p.Len())
	}
	// Past the idle timeout, a is closed rather than returned.
	if _, ok := p.Get("k", now+2*time.Minute); ok || !a.closed {
		t.Fatalf("expired connection returned (closed %v)", a.closed)
	}
}

func TestMaxLifetimeAndCloseIdle(t *testing.T) {
	p := New[*fakeConn](Limits{MaxLifetime: time.Minute})
	born := 1000 * time.Second
	old := &fakeConn{}
	if p.Put("k", old, born, born+2*time.Minute) || !old.closed {
		t.Fatal("a connection past its lifetime was pooled")
	}
	fresh := &fakeConn{}
	p.Put("k", fresh, born, born)
	p.CloseIdle()
	if !fresh.closed || p.Len() != 0 {
		t.Fatal("CloseIdle left a connection")
	}
}

// TestMaxIdle: the whole pool holds at most MaxIdle connections, whatever
// the peers.
func TestMaxIdle(t *testing.T) {
	p := New[*fakeConn](Limits{MaxIdlePerPeer: 10, MaxIdle: 2})
	now := time.Second
	a, b, c := &fakeConn{id: 1}, &fakeConn{id: 2}, &fakeConn{id: 3}
	if !p.Put("x", a, now, now) || !p.Put("y", b, now, now) {
		t.Fatal("Put refused under the limit")
	}
	if p.Put("z", c, now, now) || !c.closed {
		t.Fatal("a third idle connection was kept past MaxIdle")
	}
	if _, ok := p.Get("x", now); !ok || !p.Put("z", c, now, now) {
		t.Fatal("room made by Get was not used")
	}
}
