package park

import "sync"

// Workers keeps the goroutines of connections that ended (closed, or
// parked), and runs the next connection (a new one, or a parked one that
// resumes) on one of them rather than on a new goroutine.
//
// A new goroutine starts with a small stack, and a request's call path
// needs a larger one: every connection paid for growing it once (copying
// the stack walks every frame: 12% of strait's user CPU time with one
// request per connection) and for creating and destroying its goroutine
// (5%). An idle worker waits on its own channel; at most maxIdleWorkers
// wait, the most recent first, so that a burst of closing connections
// does not leave many stacks behind.
type Workers struct {
	mu     sync.Mutex
	idle   []chan Task // the most recently idle last
	closed bool
}

// maxIdleWorkers bounds the idle goroutines kept: a few hundred KiB of
// stacks at most.
const maxIdleWorkers = 64

// Task is a connection to serve: a new one, or one that resumes from
// parking with its next request readable.
type Task interface{ Run() }

// Run runs t on an idle worker, or on a new goroutine.
func (w *Workers) Run(t Task) {
	w.mu.Lock()
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
		if w.closed || len(w.idle) >= maxIdleWorkers {
			w.mu.Unlock()
			return
		}
		if ch == nil {
			ch = make(chan Task, 1)
		}
		w.idle = append(w.idle, ch)
		w.mu.Unlock()
		if t = <-ch; t == nil {
			return // closed
		}
	}
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
