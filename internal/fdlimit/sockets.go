// Package fdlimit keeps strait within the process's file-descriptor limit:
// it counts the sockets strait holds against a budget, recognises running
// out however it is reported, and holds a spare descriptor for the moment
// it happens.
package fdlimit

import (
	"math"
	"sync"
	"sync/atomic"
)

// sockets counts the sockets strait holds open, client and upstream, in
// the whole process. It is global because the process has one table of
// file descriptors, which every Server and Pool draws on. Keeping the
// count within budget leaves descriptors free for accept, so that a
// client is always taken and answered (503 when over the budget) rather
// than left hanging in the listen backlog, and for what else the process
// opens: listeners, log files, the resolver's sockets. (A Spare covers
// those.)
var sockets atomic.Int64

// budget is how many sockets strait may hold: the descriptor limit less a
// sixteenth of it (at least 16) for the rest of the process.
var budget = sync.OnceValue(func() int64 {
	n := Limit()
	if n <= 0 {
		return math.MaxInt64
	}
	return max(n-max(n/16, 16), 1)
})

// TakeSocket counts a socket strait is to hold, and reports false,
// counting nothing, if the budget is spent.
func TakeSocket() bool {
	if sockets.Add(1) > budget() {
		sockets.Add(-1)
		return false
	}
	return true
}

// ReleaseSocket uncounts a socket strait has closed.
func ReleaseSocket() { sockets.Add(-1) }
