// Package balance chooses among a cluster's endpoints. Policies take no
// request type, so TCP and UDP proxies reuse them: a key, when a policy
// hashes one, is bytes the caller chose (a field, a cookie, the client
// address). Every policy is safe for concurrent use, and picks without
// allocating.
package balance

import (
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
)

// Endpoint is what a policy knows of an endpoint: its name, as hashes
// see it ("10.0.0.1:80"), and its weight (at least 1).
type Endpoint struct {
	Name   string
	Weight int
}

func weight(e Endpoint) int { return max(e.Weight, 1) }

// RoundRobin cycles through n endpoints in order.
type RoundRobin struct {
	next atomic.Uint64
	n    uint64
}

// NewRoundRobin returns a RoundRobin over n (> 0) endpoints.
func NewRoundRobin(n int) *RoundRobin { return &RoundRobin{n: uint64(n)} }

// Pick returns the index of the next endpoint.
func (r *RoundRobin) Pick() int { return int((r.next.Add(1) - 1) % r.n) }

// SmoothWeighted is nginx's smooth weighted round robin: endpoints are
// picked in proportion to their weights, interleaved rather than in runs
// (weights 5, 1, 1 give a a b a c a a). Equal weights are plain round
// robin, without the lock.
type SmoothWeighted struct {
	rr *RoundRobin // when every weight is equal

	mu      sync.Mutex
	weights []int
	current []int
	total   int
}

// NewSmoothWeighted returns a SmoothWeighted over eps (at least one).
func NewSmoothWeighted(eps []Endpoint) *SmoothWeighted {
	s := &SmoothWeighted{weights: make([]int, len(eps)), current: make([]int, len(eps))}
	equal := true
	for i, e := range eps {
		s.weights[i] = weight(e)
		s.total += s.weights[i]
		equal = equal && s.weights[i] == s.weights[0]
	}
	if equal {
		s.rr = NewRoundRobin(len(eps))
	}
	return s
}

// Pick returns the index of the next endpoint.
func (s *SmoothWeighted) Pick() int {
	if s.rr != nil {
		return s.rr.Pick()
	}
	s.mu.Lock()
	best := 0
	for i, w := range s.weights {
		s.current[i] += w
		if s.current[i] > s.current[best] {
			best = i
		}
	}
	s.current[best] -= s.total
	s.mu.Unlock()
	return best
}

// Random picks endpoints at random in proportion to their weights.
type Random struct {
	cum []int // cumulative weights
}

// NewRandom returns a Random over eps (at least one).
func NewRandom(eps []Endpoint) *Random {
	r := &Random{cum: make([]int, len(eps))}
	sum := 0
	for i, e := range eps {
		sum += weight(e)
		r.cum[i] = sum
	}
	return r
}

// Pick returns the index of a random endpoint.
func (r *Random) Pick() int {
	x := rand.IntN(r.cum[len(r.cum)-1])
	return sort.SearchInts(r.cum, x+1)
}

// LeastRequest picks the less loaded of two endpoints drawn at random in
// proportion to their weights ("power of two choices"): load is requests
// in flight, or, with latency on, that times an exponentially weighted
// moving average of response time. (The draw weighs the endpoints
// already; dividing the load by the weight too would favour heavy ones
// twice.) The caller reports each pick's end with Done.
type LeastRequest struct {
	rnd     *Random
	active  []atomic.Int64
	ewma    []atomic.Uint64 // microseconds, as float64 bits; 0: none yet
	latency bool
}

// NewLeastRequest returns a LeastRequest over eps (at least one); latency
// weighs load by response time too.
func NewLeastRequest(eps []Endpoint, latency bool) *LeastRequest {
	return &LeastRequest{rnd: NewRandom(eps), active: make([]atomic.Int64, len(eps)),
		ewma: make([]atomic.Uint64, len(eps)), latency: latency}
}

// Pick returns the index of the chosen endpoint, counted as in flight
// until Done.
func (l *LeastRequest) Pick() int {
	a, b := l.rnd.Pick(), l.rnd.Pick()
	if l.less(b, a) {
		a = b
	}
	l.Acquire(a)
	return a
}

// Acquire counts a pick of endpoint i made some other way (a retry sent
// elsewhere), until Done.
func (l *LeastRequest) Acquire(i int) { l.active[i].Add(1) }

// less reports whether endpoint i is less loaded than j. Response times
// weigh in only when both have some: an endpoint without (new, or whose
// tries all failed) must not look fastest.
func (l *LeastRequest) less(i, j int) bool {
	li, lj := float64(l.active[i].Load()+1), float64(l.active[j].Load()+1)
	if l.latency {
		ei, ej := math.Float64frombits(l.ewma[i].Load()), math.Float64frombits(l.ewma[j].Load())
		if ei > 0 && ej > 0 {
			li, lj = li*ei, lj*ej
		}
	}
	return li < lj
}

// ewmaWeight is how much a new response time counts in the average.
const ewmaWeight = 0.3

// Done ends a pick of endpoint i, whose response took micros
// microseconds (0 if not known, as after a failure).
func (l *LeastRequest) Done(i int, micros float64) {
	l.active[i].Add(-1)
	if !l.latency || micros <= 0 {
		return
	}
	for {
		old := l.ewma[i].Load()
		e := math.Float64frombits(old)
		if e == 0 {
			e = micros
		} else {
			e += ewmaWeight * (micros - e)
		}
		if l.ewma[i].CompareAndSwap(old, math.Float64bits(e)) {
			return
		}
	}
}
