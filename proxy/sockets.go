package proxy

import (
	"math"
	"sync"
	"sync/atomic"
)

// sockets counts the sockets strait holds open, client and upstream, in
// the whole process. It is global because the process has one table of
// file descriptors, which every Server and Pool draws on. Keeping the
// count within socketBudget leaves descriptors free for accept, so that a
// client is always taken and answered (503 when over the budget) rather
// than left hanging in the listen backlog, and for what else the process
// opens: listeners, log files, the resolver's sockets. (A spare descriptor
// given up on EMFILE covers those: see Server.outOfFDs.)
var sockets atomic.Int64

// socketBudget is how many sockets strait may hold: the descriptor limit
// less a sixteenth of it (at least 16) for the rest of the process.
var socketBudget = sync.OnceValue(func() int64 {
	n := fdLimit()
	if n <= 0 {
		return math.MaxInt64
	}
	return max(n-max(n/16, 16), 1)
})

// takeSocket counts a socket strait is to hold, and reports false,
// counting nothing, if the budget is spent.
func takeSocket() bool {
	if sockets.Add(1) > socketBudget() {
		sockets.Add(-1)
		return false
	}
	return true
}

// releaseSocket uncounts a socket strait has closed.
func releaseSocket() { sockets.Add(-1) }
