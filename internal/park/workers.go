package park

import (
	"sync"
	"time"
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
// time. A timer brings the bound down to the peak of the last period or
// two, so a burst's stacks, or those of connections that then parked, are
// not kept for long.
type Workers struct {
	mu       sync.Mutex
	idle     []chan Task // the most recently idle last
	busy     int         // workers running a task
	peak     int         // the most busy at once in this period
	lastPeak int         // and in the one before
	trimming *time.Timer // armed while more than minIdleWorkers may wait
	armed    bool
	closed   bool
}

const (
	minIdleWorkers = 64
	peakPeriod     = time.Second
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
		if w.closed || len(w.idle) >= max(minIdleWorkers, w.peak, w.lastPeak) {
			w.mu.Unlock()
			return
		}
		if ch == nil {
			ch = make(chan Task, 1)
		}
		w.idle = append(w.idle, ch)
		if len(w.idle) > minIdleWorkers && !w.armed {
			w.armLocked()
		}
		w.mu.Unlock()
		if t = <-ch; t == nil {
			return // closed, or more than the bound
		}
	}
}

func (w *Workers) armLocked() {
	w.armed = true
	if w.trimming == nil {
		w.trimming = time.AfterFunc(peakPeriod, w.trim)
	} else {
		w.trimming.Reset(peakPeriod)
	}
}

// trim starts a new period, and ends the idle workers over the new bound,
// the least recently idle first.
func (w *Workers) trim() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed = false
	if w.closed {
		return
	}
	w.lastPeak, w.peak = w.peak, w.busy
	if over := len(w.idle) - max(minIdleWorkers, w.peak, w.lastPeak); over > 0 {
		for _, ch := range w.idle[:over] {
			ch <- nil
		}
		w.idle = append(w.idle[:0], w.idle[over:]...)
	}
	if len(w.idle) > minIdleWorkers || w.lastPeak > minIdleWorkers {
		w.armLocked()
	}
}

// Close ends the idle workers, and those that become idle from now on.
func (w *Workers) Close() {
	w.mu.Lock()
	w.closed = true
	if w.trimming != nil {
		w.trimming.Stop()
	}
	idle := w.idle
	w.idle = nil
	w.mu.Unlock()
	for _, ch := range idle {
		ch <- nil
	}
}
