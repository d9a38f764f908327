// Package pool keeps upstream connections for reuse: one pool for the whole
// process, keyed by peer, shared by every goroutine. Sharing one pool is
// what lets a busy proxy reuse connections well: nginx keeps one per
// worker process and reuses connections badly (DESIGN.md, decision 3).
//
// A connection that carries one exchange at a time (HTTP/1.1) leaves the
// pool while it is acquired and comes back when released. One that
// carries several at once (HTTP/2: Conn.Streams above 1) stays in the pool
// while acquired, shared, until all its streams are taken.
package pool

import (
	"sync"
	"time"
)

// Defaults for Limits' zero values.
const (
	DefaultMaxIdlePerPeer = 1024 // a cluster's default max_requests: steady concurrency never redials; idle sockets cost a few KiB each
	// DefaultIdleTimeout is shorter than common origins' keep-alive timeout
	// (nginx: 75 s), so strait usually closes an idle connection before
	// the origin does, and rarely picks one the origin is closing.
	DefaultIdleTimeout = 60 * time.Second
)

// Limits bound the pool. Zero values mean the defaults.
type Limits struct {
	MaxIdlePerPeer int           // connections kept per peer
	MaxIdle        int           // connections kept in all; 0: no limit but per peer
	IdleTimeout    time.Duration // a connection idle longer than this is closed
	MaxLifetime    time.Duration // a connection older than this is not reused; 0: no limit
}

// Conn is what the pool holds.
type Conn interface {
	comparable
	Close() error
	// Multiplexed reports whether the connection carries exchanges side
	// by side (HTTP/2): it stays in the pool, shared, while acquired.
	Multiplexed() bool
	// Streams is how many exchanges the connection carries at once: 1 for
	// HTTP/1.1; for HTTP/2 the peer's SETTINGS_MAX_CONCURRENT_STREAMS,
	// which it may change, even to 0, at any time.
	Streams() int
}

type entry[C Conn] struct {
	c         C
	created   time.Duration
	idleSince time.Duration // when its last stream was released
	inUse     int           // streams acquired (multiplexed connections only)
	shared    bool          // a multiplexed connection: in the list while acquired
	draining  bool          // no new streams; closed when the last is released
}

// Pool holds connections. It is safe for concurrent use.
//
// Times are readings of one monotonic clock, as durations since any fixed
// instant the caller chooses (mono.Now): they cost less to take and
// compare than time.Time.
type Pool[C Conn] struct {
	limits Limits
	mu     sync.Mutex
	conns  map[string]*peerConns[C] // a key, once seen, keeps its list: no map writes per use
	count  int
}

// peerConns are the connections of one key.
type peerConns[C Conn] struct {
	l []entry[C]
	// retired: CloseIdleMatching retired the key. Nothing joins the list
	// again, and a connection released to it closes (one in use when its
	// peer was retired, which would otherwise stay where no one looks).
	retired bool
}

// New returns an empty pool.
func New[C Conn](l Limits) *Pool[C] {
	if l.MaxIdlePerPeer <= 0 {
		l.MaxIdlePerPeer = DefaultMaxIdlePerPeer
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	return &Pool[C]{limits: l, conns: make(map[string]*peerConns[C])}
}

// Acquire returns a connection to key that can take an exchange (the most
// recently released one still within its limits) and when it was made,
// or ok false. Expired connections found on the way are closed. The
// caller checks that the connection is still open before use, and
// releases it after.
func (p *Pool[C]) Acquire(key string, now time.Duration) (c C, created time.Duration, ok bool) {
	var expired []C
	p.mu.Lock()
	if list := p.conns[key]; list != nil {
		l := list.l
		for i := len(l) - 1; i >= 0; i-- {
			e := &l[i]
			if e.inUse == 0 && p.expired(e, now) {
				expired = append(expired, e.c)
				l = p.remove(l, i)
				continue
			}
			if e.shared {
				if !e.draining && e.inUse < e.c.Streams() {
					e.inUse++
					c, created, ok = e.c, e.created, true
					break
				}
				continue
			}
			c, created, ok = e.c, e.created, true
			l = p.remove(l, i)
			break
		}
		list.l = l
	}
	p.mu.Unlock()
	for _, x := range expired {
		x.Close()
	}
	return c, created, ok
}

// remove takes entry i out of l. Called with p.mu held.
func (p *Pool[C]) remove(l []entry[C], i int) []entry[C] {
	copy(l[i:], l[i+1:])
	l[len(l)-1] = entry[C]{}
	p.count--
	return l[:len(l)-1]
}

func (p *Pool[C]) expired(e *entry[C], now time.Duration) bool {
	return now-e.idleSince > p.limits.IdleTimeout ||
		(p.limits.MaxLifetime > 0 && now-e.created > p.limits.MaxLifetime)
}

// Add puts a multiplexed connection just dialled, whose first stream the
// caller holds, in the pool, so that other exchanges share it at once. It
// adds nothing, and reports false, for a connection that carries one
// exchange at a time (it joins the pool when released), or when the pool
// is full (the caller keeps the connection to itself until it releases
// it).
func (p *Pool[C]) Add(key string, c C, created time.Duration) bool {
	if !c.Multiplexed() {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.list(key)
	if list.retired || !p.room(list.l) {
		return false
	}
	list.l = append(list.l, entry[C]{c: c, created: created, idleSince: created, inUse: 1, shared: true})
	p.count++
	return true
}

func (p *Pool[C]) list(key string) *peerConns[C] {
	list := p.conns[key]
	if list == nil {
		list = new(peerConns[C])
		p.conns[key] = list
	}
	return list
}

func (p *Pool[C]) room(l []entry[C]) bool {
	return len(l) < p.limits.MaxIdlePerPeer && (p.limits.MaxIdle <= 0 || p.count < p.limits.MaxIdle)
}

// Release gives back a connection acquired from the pool, or dialled for
// an exchange. reusable says it can take another exchange; if not, or if
// the pool is full or it is past its lifetime, it is closed (a shared one
// once its last stream is released), and Release reports false. The
// oldest connections of key are closed once expired.
func (p *Pool[C]) Release(key string, c C, reusable bool, created, now time.Duration) bool {
	var closing []C
	p.mu.Lock()
	list := p.list(key)
	l := list.l
	// Drop expired idle connections from the old end.
	for len(l) > 0 && l[0].inUse == 0 && p.expired(&l[0], now) {
		closing = append(closing, l[0].c)
		l = p.remove(l, 0)
	}
	kept := false
	shared := false // c is in the list, shared
	for i := range l {
		if !c.Multiplexed() {
			break // not shared: it is not in the list
		}
		if e := &l[i]; e.shared && e.c == c {
			shared = true
			if e.inUse > 0 {
				e.inUse--
			}
			e.draining = e.draining || !reusable || list.retired
			if e.inUse > 0 {
				kept = !e.draining
			} else if e.draining || p.expired(e, now) {
				l = p.remove(l, i)
			} else {
				e.idleSince, kept = now, true
			}
			break
		}
	}
	if !shared {
		// One carrying one exchange at a time, or a multiplexed one the
		// pool had no room for when it was dialled.
		e := entry[C]{c: c, created: created, idleSince: now, shared: c.Multiplexed()}
		if reusable && !list.retired && p.room(l) && !p.expired(&e, now) {
			l = append(l, e)
			p.count++
			kept = true
		}
	}
	list.l = l
	p.mu.Unlock()
	if !kept && (!shared || !p.holds(key, c)) {
		closing = append(closing, c)
	}
	for _, x := range closing {
		x.Close()
	}
	return kept
}

// holds reports whether c is still in the pool for key (a shared
// connection others still use).
func (p *Pool[C]) holds(key string, c C) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.list(key).l {
		if e.c == c {
			return true
		}
	}
	return false
}

// Len returns the number of connections held.
func (p *Pool[C]) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}

// CloseIdle closes every connection that carries no exchange. Shared
// connections in use are closed when their last stream is released.
func (p *Pool[C]) CloseIdle() { p.closeIdle(nil) }

// CloseIdleMatching retires the keys match reports true for (a retired
// peer's, say): their idle connections close now, shared ones in use once
// their last stream is released, and a connection in use released to one
// of them later closes too; no connection is pooled for them again.
// match is called with p locked, so it must not use p.
func (p *Pool[C]) CloseIdleMatching(match func(key string) bool) {
	if match != nil {
		p.closeIdle(match)
	}
}

// closeIdle closes the idle connections of the keys match reports true
// for (nil: every key).
func (p *Pool[C]) closeIdle(match func(string) bool) {
	var idle []C
	p.mu.Lock()
	for key, list := range p.conns {
		if match != nil && !match(key) {
			continue
		}
		l := list.l
		for i := 0; i < len(l); {
			if l[i].inUse == 0 {
				idle = append(idle, l[i].c)
				l = p.remove(l, i)
				continue
			}
			l[i].draining = true
			i++
		}
		list.l = l
		if match != nil {
			list.retired = true
		}
	}
	p.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}
