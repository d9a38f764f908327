// Package balance chooses among a cluster's peers. Policies take no request
// type, so TCP and UDP proxies can reuse them.
package balance

import "sync/atomic"

// RoundRobin cycles through n peers in order. It is safe for concurrent use
// and allocates nothing.
type RoundRobin struct {
	next atomic.Uint64
	n    uint64
}

// NewRoundRobin returns a RoundRobin over n (> 0) peers.
func NewRoundRobin(n int) *RoundRobin { return &RoundRobin{n: uint64(n)} }

// Pick returns the index of the next peer.
func (r *RoundRobin) Pick() int { return int((r.next.Add(1) - 1) % r.n) }
