package park

import (
	"sync"
	"testing"
	"time"
)

type taskFunc func()

func (f taskFunc) Run() { f() }

func idleWorkers(w *Workers) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.idle)
}

// burst runs n tasks at once and waits until their workers are idle again.
func burst(t *testing.T, w *Workers, n int) {
	var started, done sync.WaitGroup
	release := make(chan struct{})
	started.Add(n)
	done.Add(n)
	for range n {
		w.Run(taskFunc(func() { started.Done(); <-release; done.Done() }))
	}
	started.Wait()
	close(release)
	done.Wait()
	for deadline := time.Now().Add(5 * time.Second); ; {
		w.mu.Lock()
		busy := w.busy
		w.mu.Unlock()
		if busy == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d workers still busy", busy)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWorkersKeepPeak: as many workers stay idle as were busy at once (so a
// second burst makes no goroutine), and the bound falls back within two
// periods once the burst has passed, with or without tasks.
func TestWorkersKeepPeak(t *testing.T) {
	var w Workers
	defer w.Close()
	burst(t, &w, 300)
	if n := idleWorkers(&w); n != 300 {
		t.Fatalf("%d idle workers after 300 at once, want 300", n)
	}
	burst(t, &w, 300)
	if n := idleWorkers(&w); n != 300 {
		t.Fatalf("%d idle workers after a second burst, want 300 (the same)", n)
	}
	for period := range 2 {
		w.trim()
		want := 300
		if period == 1 {
			want = minIdleWorkers
		}
		if n := idleWorkers(&w); n != want {
			t.Fatalf("period %d: %d idle workers, want %d", period+1, n, want)
		}
	}
	// With no tasks at all, the timer alone brings it down.
	burst(t, &w, 300)
	for deadline := time.Now().Add(3 * peakPeriod); idleWorkers(&w) > minIdleWorkers; {
		if time.Now().After(deadline) {
			t.Fatalf("%d idle workers %v after the burst, want %d", idleWorkers(&w), 3*peakPeriod, minIdleWorkers)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
