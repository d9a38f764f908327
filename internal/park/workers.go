package park

import (
	"sync"
	"time"

	"github.com/straitproxy/strait/internal/mono"
)

// Workers keeps the goroutines of tasks that ended (a connection closed or
// parked, an HTTP/2 stream done), and runs the next task on one of them
// rather than on a new goroutine.
//
// A new goroutine starts with a small stack, and a request's call path
// needs a larger one: every connection paid for growing it once (copying
// the stack walks every frame: 12% of strait's user CPU time with one
// request per connection) and for creating and destroying its goroutine
// (5%). An idle worker waits on its own channel, the most recent first.
// As many wait as were busy at once lately (at least minIdleWorkers): 200
// HTTP/2 streams in flight would otherwise make and end goroutines all the
// time. The bound follows the peak down within two periods of
// peakPeriod, so that a burst does not leave its stacks behind for long.
type Workers struct {
	mu       sync.Mutex
	idle     []chan Task // the most recently idle last
	busy     int         // workers running a task
	peak     int         // the most busy at once in this period
	lastPeak int         // and in the one before
	periodAt time.Duration
	ends     uint // tasks ended
	closed   bool
}

const (
	minIdleWorkers = 64
	peakPeriod     = 10 * time.Second
)

// Task is a connection to serve: a new one, or one that resumes from
// parking with its next request readable.
type Task interface{ Run() }

// Run runs t on an idle worker, or on a new goroutine.
func (w *Workers) Run(t Task) {
	w.mu.Lock()
	if w.busy++; w.busy > w.peak {
		w.peak = w.busy
	}
	if n := len(w.idle); n > 0 {
		ch := w.idle[n-1]
		w.idle[n-1] = nil
		w.idle = w.idle[:n-1]
		w.mu.Unlock()
		ch <- t // buffered: never blocks
		return
	}
	w.mu.Unlock()
	go w.work(t)
}

// work runs t, then the tasks it is given while idle, until there are
// enough idle workers or they are closed.
func (w *Workers) work(t Task) {
	var ch chan Task
	for {
		t.Run()
		w.mu.Lock()
		w.busy--
		if w.closed || len(w.idle) >= w.keepLocked() {
			w.mu.Unlock()
			return
		}
		if ch == nil {
			ch = make(chan Task, 1)
		}
		w.idle = append(w.idle, ch)
		w.mu.Unlock()
		if t = <-ch; t == nil {
			return // closed, or more than the bound
		}
	}
}

// keepLocked returns how many idle workers may wait. Now and then (a
// clock read is some 20 ns) it starts a new period, and ends the idle
// workers over the new bound.
func (w *Workers) keepLocked() int {
	if w.ends++; w.ends%64 == 0 {
		if now := mono.Now(); now-w.periodAt >= peakPeriod {
			w.periodAt, w.lastPeak, w.peak = now, w.peak, w.busy
			if over := len(w.idle) - max(minIdleWorkers, w.peak, w.lastPeak); over > 0 {
				for _, ch := range w.idle[:over] { // the least recently idle
					ch <- nil
				}
				w.idle = append(w.idle[:0], w.idle[over:]...)
			}
		}
	}
	return max(minIdleWorkers, w.peak, w.lastPeak)
}

// Close ends the idle workers, and those that become idle from now on.
func (w *Workers) Close() {
	w.mu.Lock()
	w.closed = true
	idle := w.idle
	w.idle = nil
	w.mu.Unlock()
	for _, ch := range idle {
		ch <- nil
	}
}
