// Package health tells which endpoints of a cluster may take requests:
// passive outlier detection ejects those that fail in a row. It knows no
// HTTP: callers report failures and successes by endpoint index.
package health

import (
	"sync"
	"sync/atomic"
	"time"
)

// OutlierConfig says when an endpoint is ejected and for how long. Zero
// fields mean the defaults.
type OutlierConfig struct {
	// Failures is how many failures in a row eject an endpoint (default
	// 5).
	Failures int
	// Base is how long a first ejection lasts (default 30 s); each
	// ejection in a row doubles it, up to Max (default 300 s).
	Base, Max time.Duration
	// MaxEjectedPercent bounds the share of endpoints ejected at once
	// (default 50; at least one endpoint may always be ejected).
	MaxEjectedPercent int
}

// Default outlier settings.
const (
	DefaultFailures          = 5
	DefaultBase              = 30 * time.Second
	DefaultMax               = 300 * time.Second
	DefaultMaxEjectedPercent = 50
)

// Outlier is passive outlier detection over n endpoints. Reports and
// lookups take no lock but for an ejection; times are readings of one
// monotonic clock (mono.Now).
type Outlier struct {
	cfg OutlierConfig
	eps []endpointState

	mu sync.Mutex // guards ejections
}

type endpointState struct {
	fails     atomic.Int32
	until     atomic.Int64 // ejected until (mono); 0: not ejected
	ejections int          // in a row; guarded by Outlier.mu
	lastUntil time.Duration
}

// NewOutlier returns outlier detection over n endpoints.
func NewOutlier(n int, cfg OutlierConfig) *Outlier {
	if cfg.Failures <= 0 {
		cfg.Failures = DefaultFailures
	}
	if cfg.Base <= 0 {
		cfg.Base = DefaultBase
	}
	if cfg.Max <= 0 {
		cfg.Max = DefaultMax
	}
	if cfg.MaxEjectedPercent <= 0 {
		cfg.MaxEjectedPercent = DefaultMaxEjectedPercent
	}
	return &Outlier{cfg: cfg, eps: make([]endpointState, n)}
}

// Ejected reports whether endpoint i is ejected at now.
func (o *Outlier) Ejected(i int, now time.Duration) bool {
	return time.Duration(o.eps[i].until.Load()) > now
}

// Carry gives endpoint j the state endpoint i has in from: failures in a
// row, and an ejection under way. A set of endpoints that changes (a DNS
// answer) keeps what it knew of the ones it still has.
func (o *Outlier) Carry(j int, from *Outlier, i int) {
	from.mu.Lock()
	e := &from.eps[i]
	fails, until, ejections, lastUntil := e.fails.Load(), e.until.Load(), e.ejections, e.lastUntil
	from.mu.Unlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	d := &o.eps[j]
	d.fails.Store(fails)
	d.until.Store(until)
	d.ejections, d.lastUntil = ejections, lastUntil
}

// Until returns when endpoint i's ejection ends (mono time; in the past
// if it is not ejected).
func (o *Outlier) Until(i int) time.Duration { return time.Duration(o.eps[i].until.Load()) }

// Success records a good answer from endpoint i: its failures in a row
// start again from zero.
func (o *Outlier) Success(i int) {
	if e := &o.eps[i]; e.fails.Load() != 0 {
		e.fails.Store(0)
	}
}

// Failure records a failure of endpoint i at now, and ejects it if it
// has failed Failures times in a row and the cap on ejected endpoints
// allows. It reports whether it ejected it.
func (o *Outlier) Failure(i int, now time.Duration) bool {
	e := &o.eps[i]
	if e.fails.Add(1) < int32(o.cfg.Failures) {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if time.Duration(e.until.Load()) > now {
		return false // ejected already
	}
	ejected := 0
	for j := range o.eps {
		if time.Duration(o.eps[j].until.Load()) > now {
			ejected++
		}
	}
	if ejected >= max(1, len(o.eps)*o.cfg.MaxEjectedPercent/100) {
		return false
	}
	// Ejected again soon after the last one ended: longer this time.
	if e.lastUntil == 0 || now-e.lastUntil > o.cfg.Max {
		e.ejections = 0
	}
	d := min(o.cfg.Base<<min(e.ejections, 16), o.cfg.Max)
	e.ejections++
	e.lastUntil = now + d
	e.until.Store(int64(now + d))
	e.fails.Store(0)
	return true
}
