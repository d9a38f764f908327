package balance

import (
	"fmt"
	"math"
	"strconv"
	"testing"
)

func endpoints(n int, weights ...int) []Endpoint {
	eps := make([]Endpoint, n)
	for i := range eps {
		eps[i] = Endpoint{Name: fmt.Sprintf("10.0.%d.%d:80", i/250, i%250+1), Weight: 1}
		if i < len(weights) {
			eps[i].Weight = weights[i]
		}
	}
	return eps
}

// TestSmoothWeightedOrder: nginx's sequence for weights 5, 1, 1.
func TestSmoothWeightedOrder(t *testing.T) {
	s := NewSmoothWeighted(endpoints(3, 5, 1, 1))
	var got string
	for range 7 {
		got += string(rune('a' + s.Pick()))
	}
	if got != "aabacaa" {
		t.Fatalf("order %q, want aabacaa", got)
	}
}

// TestSpread: every policy picks endpoints in proportion to their
// weights, within 5% of the expected share; the ring within 12% (160
// points per unit of weight, as nginx, spread less evenly).
func TestSpread(t *testing.T) {
	eps := endpoints(4, 1, 2, 3, 4)
	const n = 200000
	sw, rnd, lr, ring, mg := NewSmoothWeighted(eps), NewRandom(eps), NewLeastRequest(eps, false), NewRing(eps), NewMaglev(eps)
	for name, pick := range map[string]func(int) int{
		"smooth": func(int) int { return sw.Pick() },
		"random": func(int) int { return rnd.Pick() },
		"least":  func(int) int { i := lr.Pick(); lr.Done(i, 0); return i },
		"ring":   func(k int) int { return ring.Pick([]byte(strconv.Itoa(k))) },
		"maglev": func(k int) int { return mg.Pick([]byte(strconv.Itoa(k))) },
	} {
		counts := make([]int, len(eps))
		for k := range n {
			counts[pick(k)]++
		}
		tolerance := 0.05
		if name == "ring" {
			tolerance = 0.12
		}
		for i, c := range counts {
			want := float64(n) * float64(eps[i].Weight) / 10
			if math.Abs(float64(c)-want) > tolerance*want {
				t.Errorf("%s: endpoint %d (weight %d) picked %d times, want %.0f ± %.0f%%", name, i, eps[i].Weight, c, want, 100*tolerance)
			}
		}
	}
}

// TestConsistency: removing one of N endpoints moves about 1/N of the
// keys (at most 1.5/N).
func TestConsistency(t *testing.T) {
	const n, keys = 10, 20000
	all := endpoints(n)
	less := append(append([]Endpoint(nil), all[:3]...), all[4:]...) // without endpoint 3
	for name, build := range map[string]func([]Endpoint) func([]byte) int{
		"ring":   func(e []Endpoint) func([]byte) int { return NewRing(e).Pick },
		"maglev": func(e []Endpoint) func([]byte) int { return NewMaglev(e).Pick },
	} {
		before, after := build(all), build(less)
		moved := 0
		for k := range keys {
			key := []byte("key-" + strconv.Itoa(k))
			b, a := all[before(key)].Name, less[after(key)].Name
			if a != b {
				moved++
			}
		}
		if share := float64(moved) / keys; share > 1.5/n {
			t.Errorf("%s: %.1f%% of keys moved when one of %d endpoints went, want about %.0f%%", name, 100*share, n, 100.0/n)
		} else {
			t.Logf("%s: %.1f%% of keys moved", name, 100*share)
		}
	}
}

// TestLeastRequestPrefersIdle: with one endpoint busy, picks go to the
// others.
func TestLeastRequestPrefersIdle(t *testing.T) {
	l := NewLeastRequest(endpoints(2), false)
	for range 50 {
		l.active[0].Add(1) // endpoint 0 holds 50 requests
	}
	zero := 0
	for range 1000 {
		i := l.Pick()
		if i == 0 {
			zero++
		}
		l.Done(i, 0)
	}
	// Only a draw of 0 twice picks it: a quarter of the time.
	if zero > 300 {
		t.Errorf("the busy endpoint got %d of 1000 picks", zero)
	}
	// With latency on, a slow endpoint is avoided too.
	l = NewLeastRequest(endpoints(2), true)
	for range 5 {
		l.Acquire(0)
		l.Done(0, 50000)
		l.Acquire(1)
		l.Done(1, 500)
	}
	slow := 0
	for range 1000 {
		i := l.Pick()
		if i == 0 {
			slow++
		}
		l.Done(i, 0)
	}
	if slow > 300 {
		t.Errorf("the slow endpoint got %d of 1000 picks", slow)
	}
}

func BenchmarkPick(b *testing.B) {
	key := []byte("user-12345")
	for _, n := range []int{3, 100, 10000} {
		eps := endpoints(n, 2)
		rr, sw, rnd, lr := NewRoundRobin(n), NewSmoothWeighted(eps), NewRandom(eps), NewLeastRequest(eps, true)
		ring, mg := NewRing(eps), NewMaglev(eps)
		for name, pick := range map[string]func(){
			"RoundRobin":     func() { rr.Pick() },
			"SmoothWeighted": func() { sw.Pick() },
			"Random":         func() { rnd.Pick() },
			"LeastRequest":   func() { lr.Done(lr.Pick(), 100) },
			"Ring":           func() { ring.Pick(key) },
			"Maglev":         func() { mg.Pick(key) },
		} {
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				b.ReportAllocs()
				for range b.N {
					pick()
				}
			})
		}
	}
}
