package budget

import (
	"sync"
	"testing"
)

func TestBudget(t *testing.T) {
	b := New(100)
	if !b.Take(60) || b.Take(41) || !b.Take(40) {
		t.Fatal("Take did not fill the budget exactly")
	}
	if b.Used() != 100 || b.Refused() != 1 {
		t.Fatalf("used %d, refused %d", b.Used(), b.Refused())
	}
	b.Release(60)
	if !b.Take(50) || b.Used() != 90 {
		t.Fatalf("released bytes were not taken again: used %d", b.Used())
	}
}

// TestBudgetConcurrent: concurrent Takes never hold more than the limit.
func TestBudgetConcurrent(t *testing.T) {
	b := New(1000)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10000 {
				if b.Take(7) {
					if u := b.Used(); u > 1000+7*8 {
						t.Errorf("used %d", u)
					}
					b.Release(7)
				}
			}
		}()
	}
	wg.Wait()
	if b.Used() != 0 {
		t.Fatalf("used %d after every release", b.Used())
	}
}
