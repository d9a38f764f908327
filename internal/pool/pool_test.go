package pool

import (
	"strings"
	"testing"
	"time"
)

// fakeConn stands in for a connection: the pool only counts and closes
// them.
type fakeConn struct {
	id      int
	streams int // 0: one at a time
	mux     bool
	closed  bool
}

func (c *fakeConn) Close() error { c.closed = true; return nil }
func (c *fakeConn) Streams() int {
	if c.mux {
		return c.streams // HTTP/2's peer may say 0 or 1
	}
	return max(c.streams, 1)
}
func (c *fakeConn) Multiplexed() bool { return c.mux || c.streams > 1 }

func TestAcquireReleaseLIFOAndLimits(t *testing.T) {
	p := New[*fakeConn](Limits{MaxIdlePerPeer: 2, IdleTimeout: time.Minute, MaxLifetime: time.Hour})
	now := 1000 * time.Second
	a, b, c := &fakeConn{id: 1}, &fakeConn{id: 2}, &fakeConn{id: 3}
	if !p.Release("k", a, true, now, now) || !p.Release("k", b, true, now, now) {
		t.Fatal("Release refused under the limit")
	}
	if p.Release("k", c, true, now, now) || !c.closed {
		t.Fatal("a third idle connection was kept past MaxIdlePerPeer")
	}
	if got, _, ok := p.Acquire("k", now); !ok || got != b {
		t.Fatalf("Get = %v, want the most recently used (b)", got)
	}
	if _, _, ok := p.Acquire("other", now); ok {
		t.Fatal("Get found a connection for another peer")
	}
	if p.Len() != 1 {
		t.Fatalf("Len = %d", p.Len())
	}
	// Past the idle timeout, a is closed rather than returned.
	if _, _, ok := p.Acquire("k", now+2*time.Minute); ok || !a.closed {
		t.Fatalf("expired connection returned (closed %v)", a.closed)
	}
}

func TestMaxLifetimeAndCloseIdle(t *testing.T) {
	p := New[*fakeConn](Limits{MaxLifetime: time.Minute})
	born := 1000 * time.Second
	old := &fakeConn{}
	if p.Release("k", old, true, born, born+2*time.Minute) || !old.closed {
		t.Fatal("a connection past its lifetime was pooled")
	}
	fresh := &fakeConn{}
	p.Release("k", fresh, true, born, born)
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
	if !p.Release("x", a, true, now, now) || !p.Release("y", b, true, now, now) {
		t.Fatal("Release refused under the limit")
	}
	if p.Release("z", c, true, now, now) || !c.closed {
		t.Fatal("a third idle connection was kept past MaxIdle")
	}
	if _, _, ok := p.Acquire("x", now); !ok || !p.Release("z", c, true, now, now) {
		t.Fatal("room made by Acquire was not used")
	}
}

// TestNotReusable: a connection released as not reusable is closed, not
// kept.
func TestNotReusable(t *testing.T) {
	p := New[*fakeConn](Limits{})
	a := &fakeConn{}
	if p.Release("k", a, false, 0, time.Second) || !a.closed || p.Len() != 0 {
		t.Fatal("a connection released as not reusable was kept")
	}
}

// TestShared: a multiplexed connection stays in the pool while acquired,
// is handed to further Acquires until its streams are all taken, is
// closed once drained after a release as not reusable, and CloseIdle
// leaves it to its last stream.
func TestShared(t *testing.T) {
	p := New[*fakeConn](Limits{})
	now := time.Second
	m := &fakeConn{id: 1, streams: 2}
	if !p.Add("k", m, now) {
		t.Fatal("Add refused a multiplexed connection")
	}
	if p.Add("k", &fakeConn{}, now) {
		t.Fatal("Add took a connection that carries one exchange at a time")
	}
	if got, _, ok := p.Acquire("k", now); !ok || got != m {
		t.Fatal("the shared connection's second stream was not given")
	}
	if _, _, ok := p.Acquire("k", now); ok {
		t.Fatal("a third stream was given on a connection that carries two")
	}
	// One stream ends: its room is given again.
	if !p.Release("k", m, true, now, now) {
		t.Fatal("a shared connection was dropped on a reusable release")
	}
	if got, _, ok := p.Acquire("k", now); !ok || got != m {
		t.Fatal("a released stream's room was not given again")
	}
	// CloseIdle while both streams run: it drains, and is closed with its
	// last stream, not before.
	p.CloseIdle()
	if m.closed {
		t.Fatal("CloseIdle closed a connection in use")
	}
	if _, _, ok := p.Acquire("k", now); ok {
		t.Fatal("a draining connection took a new stream")
	}
	p.Release("k", m, true, now, now)
	if m.closed {
		t.Fatal("closed with a stream still running")
	}
	p.Release("k", m, true, now, now)
	if !m.closed || p.Len() != 0 {
		t.Fatalf("not closed after its last stream (closed %v, len %d)", m.closed, p.Len())
	}

	// Released idle, it is reused as a whole and then shared again.
	n := &fakeConn{id: 2, streams: 2}
	p.Add("k", n, now)
	p.Release("k", n, true, now, now)
	if got, _, ok := p.Acquire("k", now); !ok || got != n || p.Len() != 1 {
		t.Fatal("an idle shared connection was not reused in place")
	}
	if p.Release("k", n, false, now, now) || !n.closed || p.Len() != 0 {
		t.Fatal("a shared connection released as not reusable was kept")
	}
}

// TestSharedLimitChanges: a multiplexed connection whose peer lowers its
// stream limit (to 1, then 0) while streams are acquired stays one entry,
// takes no stream past the limit, and closes once idle past its timeout
// (it once stayed forever, and each release added a duplicate).
func TestSharedLimitChanges(t *testing.T) {
	p := New[*fakeConn](Limits{MaxIdlePerPeer: 8, IdleTimeout: time.Minute})
	now := 1000 * time.Second
	c := &fakeConn{id: 1, streams: 100, mux: true}
	if !p.Add("k", c, now) {
		t.Fatal("Add refused a multiplexed connection")
	}
	if got, _, ok := p.Acquire("k", now); !ok || got != c {
		t.Fatal("the shared connection gave no second stream")
	}
	c.streams = 1 // SETTINGS_MAX_CONCURRENT_STREAMS 1, two streams open
	if _, _, ok := p.Acquire("k", now); ok {
		t.Fatal("a stream past the peer's new limit")
	}
	for range 2 {
		p.Release("k", c, true, now, now)
	}
	if p.Len() != 1 {
		t.Fatalf("Len = %d after both streams came back, want 1 entry", p.Len())
	}
	if got, _, ok := p.Acquire("k", now); !ok || got != c {
		t.Fatal("the idle connection gave no stream within its limit of 1")
	}
	p.Release("k", c, true, now, now)
	c.streams = 0
	if _, _, ok := p.Acquire("k", now); ok {
		t.Fatal("a stream with the peer's limit at 0")
	}
	if _, _, ok := p.Acquire("k", now+2*time.Minute); ok || !c.closed || p.Len() != 0 {
		t.Fatalf("past its idle timeout: closed %v, Len %d", c.closed, p.Len())
	}
}

// TestCloseIdleMatching: only the idle connections of the keys match
// reports are closed; a matching shared connection in use takes no new
// stream and closes with its last; the others stay and are reused.
func TestCloseIdleMatching(t *testing.T) {
	p := New[*fakeConn](Limits{})
	now := time.Second
	old1, old2, kept := &fakeConn{id: 1}, &fakeConn{id: 2}, &fakeConn{id: 3}
	p.Release("a:80 g1", old1, true, now, now)
	p.Release("b:80 g1", old2, true, now, now)
	p.Release("a:80 g2", kept, true, now, now)
	busy := &fakeConn{id: 4, streams: 2}
	p.Add("c:80 g1", busy, now)
	// In use when its key is retired: closed when released, not kept.
	p.Release("d:80 g1", &fakeConn{id: 5}, true, now, now)
	inUse, _, _ := p.Acquire("d:80 g1", now)

	var asked []string
	p.CloseIdleMatching(func(key string) bool {
		asked = append(asked, key)
		return strings.HasSuffix(key, " g1")
	})
	if len(asked) != 5 {
		t.Errorf("match was asked about %q, want each of the 5 keys once", asked)
	}
	if !old1.closed || !old2.closed {
		t.Errorf("matching idle connections left open: %v %v", old1.closed, old2.closed)
	}
	if kept.closed || busy.closed {
		t.Fatalf("closed: the other key's %v, the busy one %v", kept.closed, busy.closed)
	}
	if p.Len() != 2 {
		t.Errorf("Len = %d, want 2 (the other key's and the busy one)", p.Len())
	}
	if got, _, ok := p.Acquire("a:80 g2", now); !ok || got != kept {
		t.Error("the connection of a key that did not match was not reused")
	}
	if _, _, ok := p.Acquire("c:80 g1", now); ok {
		t.Error("a matching shared connection took a new stream")
	}
	p.Release("c:80 g1", busy, true, now, now)
	if !busy.closed || p.Len() != 0 {
		t.Errorf("the busy connection after its last stream: closed %v, Len %d", busy.closed, p.Len())
	}
	if p.Release("d:80 g1", inUse, true, now, now) || !inUse.closed {
		t.Errorf("a connection released to a retired key: closed %v, want closed, not kept", inUse.closed)
	}
	if p.Release("a:80 g1", &fakeConn{id: 6}, true, now, now) || p.Len() != 0 {
		t.Errorf("a new connection to a retired key was kept (Len %d)", p.Len())
	}
	p.CloseIdleMatching(nil) // no key
}
