package balance

import (
	"sync"
	"testing"
)

func TestRoundRobinOrder(t *testing.T) {
	r := NewRoundRobin(3)
	for i, want := range []int{0, 1, 2, 0, 1, 2, 0} {
		if got := r.Pick(); got != want {
			t.Fatalf("pick %d = %d, want %d", i, got, want)
		}
	}
}

func TestRoundRobinEvenUnderConcurrency(t *testing.T) {
	r := NewRoundRobin(4)
	var mu sync.Mutex
	counts := make([]int, 4)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]int, 4)
			for range 1000 {
				local[r.Pick()]++
			}
			mu.Lock()
			for i := range local {
				counts[i] += local[i]
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	for i, n := range counts {
		if n != 2000 {
			t.Errorf("peer %d picked %d times, want 2000", i, n)
		}
	}
}
