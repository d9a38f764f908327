// Package pool keeps idle upstream connections for reuse, one pool for the
// whole process, keyed by peer. Sharing one pool across every goroutine is
// what lets a busy proxy reuse connections well (see docs/design: nginx's
// per-worker pools reuse badly).
package pool

import (
	"sync"
	"time"
)

// Defaults for Limits' zero values.
const (
	DefaultMaxIdlePerPeer = 128 // enough for a busy peer; idle sockets cost a few KiB each
	// DefaultIdleTimeout is shorter than common origins' keep-alive timeout
	// (nginx: 75 s), so strait usually closes an idle connection before
	// the origin does, and rarely picks one the origin is closing.
	DefaultIdleTimeout = 60 * time.Second
)

// Limits bound the pool. Zero values mean the defaults.
type Limits struct {
	MaxIdlePerPeer int           // idle connections kept per peer
	MaxIdle        int           // idle connections kept in all; 0: no limit but per peer
	IdleTimeout    time.Duration // an idle connection older than this is closed
	MaxLifetime    time.Duration // a connection older than this is not reused; 0: no limit
}

// Conn is what the pool holds.
type Conn interface {
	comparable
	Close() error
}

type entry[C Conn] struct {
	c         C
	created   time.Duration
	idleSince time.Duration
}

// Pool holds idle connections. It is safe for concurrent use.
//
// Times are readings of one monotonic clock, as durations since any fixed
// instant the caller chooses (time.Since of its start, say): they cost
// less to take and compare than time.Time.
type Pool[C Conn] struct {
	limits Limits
	mu     sync.Mutex
	idle   map[string]*[]entry[C] // a key, once seen, keeps its list: no map writes per use
	count  int
}

// New returns an empty pool.
func New[C Conn](l Limits) *Pool[C] {
	if l.MaxIdlePerPeer <= 0 {
		l.MaxIdlePerPeer = DefaultMaxIdlePerPeer
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	return &Pool[C]{limits: l, idle: make(map[string]*[]entry[C])}
}

// Get returns the most recently used idle connection to key that is still
// within its limits, or ok false. Expired connections found on the way are
// closed. The caller checks that the connection is still open before use.
func (p *Pool[C]) Get(key string, now time.Duration) (c C, ok bool) {
	var expired []C
	p.mu.Lock()
	if list := p.idle[key]; list != nil {
		for len(*list) > 0 {
			l := *list
			e := l[len(l)-1]
			l[len(l)-1] = entry[C]{}
			*list = l[:len(l)-1]
			p.count--
			if !p.expired(e, now) {
				c, ok = e.c, true
				break
			}
			expired = append(expired, e.c)
		}
	}
	p.mu.Unlock()
	for _, x := range expired {
		x.Close()
	}
	return c, ok
}

func (p *Pool[C]) expired(e entry[C], now time.Duration) bool {
	return now-e.idleSince > p.limits.IdleTimeout ||
		(p.limits.MaxLifetime > 0 && now-e.created > p.limits.MaxLifetime)
}

// Put offers an idle connection for reuse. It reports false, and closes c,
// if the pool for key, or the whole pool, is full or c is past its
// lifetime. The oldest idle
// connections of key are closed once expired.
func (p *Pool[C]) Put(key string, c C, created, now time.Duration) bool {
	e := entry[C]{c: c, created: created, idleSince: now}
	p.mu.Lock()
	list := p.idle[key]
	if list == nil {
		list = new([]entry[C])
		p.idle[key] = list
	}
	l := *list
	// Drop expired connections from the old end.
	n := 0
	for n < len(l) && p.expired(l[n], now) {
		n++
	}
	var stale []entry[C]
	if n > 0 {
		stale = append(stale, l[:n]...)
		l = append(l[:0], l[n:]...)
		clear(l[len(l) : len(l)+n])
		p.count -= n
	}
	ok := len(l) < p.limits.MaxIdlePerPeer && !p.expired(e, now) &&
		(p.limits.MaxIdle <= 0 || p.count < p.limits.MaxIdle)
	if ok {
		l = append(l, e)
		p.count++
	}
	*list = l
	p.mu.Unlock()
	for _, s := range stale {
		s.c.Close()
	}
	if !ok {
		c.Close()
	}
	return ok
}

// Len returns the number of idle connections held.
func (p *Pool[C]) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}

// CloseIdle closes every idle connection.
func (p *Pool[C]) CloseIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = make(map[string]*[]entry[C])
	p.count = 0
	p.mu.Unlock()
	for _, list := range idle {
		for _, e := range *list {
			e.c.Close()
		}
	}
}
