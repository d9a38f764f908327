package cluster

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/balance"
	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/proxy"
)

// A Call is one request's use of a cluster, from its first pick to its
// end: the endpoint its current try went to, and what it holds of the
// cluster's limits. The zero value is ready; keep one per request (in
// Session.Ctx) and end it with Done, which makes it zero again.
type Call struct {
	set     *set          // the endpoints the current try picked from
	cur     int           // the current try's endpoint, if set != nil
	start   time.Duration // when the current try began (mono)
	counted bool          // counted as in flight at the cluster
	retried bool          // counted against the retry budget

	// NoWait makes a full cluster refuse the call at once rather than
	// queue it: for a caller that must not block, like a UDP relay's
	// event loop. Done clears it.
	NoWait bool
	// Try makes Peer return ErrWouldWait, counting nothing, where the
	// first try would wait for a slot of a full cluster: for an event
	// loop that hands such a call to a goroutine, which may wait. Done
	// clears it.
	Try bool
}

// ErrWouldWait is Peer's error for a Call with Try that would wait.
var ErrWouldWait = errors.New("cluster: full; the call would wait for a slot")

var (
	errOverflow    = &proxy.Error{Side: proxy.Internal, Kind: proxy.KindLimit, Status: 503, Where: "cluster over its limits: requests in flight and waiting"}
	errAllDown     = &proxy.Error{Side: proxy.Upstream, Kind: proxy.KindNoPeer, Status: 503, Where: "every endpoint of the cluster is ejected, unhealthy or draining"}
	errNoEndpoints = &proxy.Error{Side: proxy.Upstream, Kind: proxy.KindNoPeer, Status: 503, Where: "the cluster has no endpoints (DNS answered none yet)"}
)

// Backoff between tries after the second: exponential from retryBackoff,
// with jitter, up to maxRetryBackoff.
const (
	retryBackoff    = 25 * time.Millisecond
	maxRetryBackoff = 250 * time.Millisecond
)

// Peer picks the endpoint for the request of s's next try, ending the
// last try's pick: it is the UpstreamPeer phase. The first try takes a
// slot of the cluster's circuit breaker (503 when none frees in time) and
// sets the request's Override.RetryStatuses to the cluster's retry_on if
// the request has none.
func (c *Cluster) Peer(s *proxy.Session, call *Call) (*proxy.Peer, error) {
	if call.set != nil {
		c.done(call, 0) // the try before failed
		// The first retry goes to another endpoint at once; later ones
		// back off, so that they do not pile onto a cluster in trouble.
		if n := s.Stats.Attempts - 3; n >= 0 {
			d := min(retryBackoff<<min(n, 8), maxRetryBackoff)
			time.Sleep(d/2 + rand.N(d/2))
		}
	} else if !call.counted {
		if call.Try {
			select {
			case c.slots <- struct{}{}:
			default:
				return nil, ErrWouldWait
			}
		} else if !c.admit(call.NoWait) {
			return nil, errOverflow
		}
		c.active.Add(1)
		call.counted = true
		if s.Override.RetryStatuses == nil {
			s.Override.RetryStatuses = c.retryOn
		}
		if s.Override.RetryGRPC == nil {
			s.Override.RetryGRPC = c.retryGRPC
		}
	}
	last := -1
	if call.set != nil {
		last = call.cur
	}
	st := c.set.Load()
	if len(st.peers) == 0 {
		call.set = nil
		return nil, errNoEndpoints
	}
	if st != call.set {
		last = -1 // indices of another set
	}
	call.start = mono.Now()
	i := c.pick(st, s, s.Stats.Attempts, last, call.start)
	if i < 0 {
		call.set = nil
		return nil, errAllDown
	}
	call.set, call.cur = st, i
	st.active[i].Add(1)
	return &st.peers[i], nil
}

// FailToConnect counts a failed connection against its endpoint and asks
// for another try, within the retry budget: nothing was sent, so any
// method may go again. It is the FailToConnect phase.
func (c *Cluster) FailToConnect(s *proxy.Session, call *Call, e *proxy.Error) *proxy.Error {
	if e.Side == proxy.Upstream {
		c.failure(call, mono.Now())
		e.Retry = c.mayRetry(s, call)
	}
	return e
}

// ErrorWhileProxy counts a failed exchange against its endpoint (not one
// the endpoint declined unprocessed), and asks
// for another try of a request that may be sent twice
// (Session.Idempotent) when the endpoint failed before answering: it
// closed or reset the connection, timed out, or answered with a status
// chosen for a retry. It is the ErrorWhileProxy phase.
func (c *Cluster) ErrorWhileProxy(s *proxy.Session, call *Call, e *proxy.Error) *proxy.Error {
	if e.Side != proxy.Upstream {
		return e
	}
	if errors.Is(e.Err, proxy.ErrUnprocessed) {
		// The endpoint declined the request (HTTP/2 GOAWAY as it
		// restarts, REFUSED_STREAM): no failure, and a try that cost it
		// nothing needs no retry budget.
		return e
	}
	c.failure(call, mono.Now())
	switch e.Kind {
	case proxy.KindClosed, proxy.KindTimeout, proxy.KindStatus:
		e.Retry = e.Retry || !s.Answered() && s.Idempotent()
	}
	if e.Retry {
		e.Retry = c.mayRetry(s, call)
	}
	return e
}

// Done counts the last try's outcome, ends its pick and gives back what
// the call held: it belongs in the Logging phase. An origin's own 502, 503
// or 504 counts as a failure of the endpoint; other statuses, 500 among
// them (a client may provoke those), as a success.
func (c *Cluster) Done(s *proxy.Session, call *Call, e *proxy.Error) {
	if call.set != nil {
		micros := 0.0
		switch st := s.Stats.Status; {
		case e != nil:
		case st == 502 || st == 503 || st == 504:
			c.failure(call, mono.Now())
		default:
			if o := call.set.outlier; o != nil {
				o.Success(call.cur)
			}
			micros = float64((mono.Now() - call.start).Microseconds())
		}
		c.done(call, micros)
	}
	if call.counted {
		c.active.Add(-1)
		<-c.slots
	}
	if call.retried {
		c.retrying.Add(-1)
	}
	*call = Call{}
}

// admit takes a slot for a request, waiting for one if the cluster is
// full and its queue is not (and the caller may wait), and reports whether
// it got one.
func (c *Cluster) admit(noWait bool) bool {
	select {
	case c.slots <- struct{}{}:
		return true
	default:
	}
	if noWait {
		c.overflows.Add(1)
		return false
	}
	if c.pending.Add(1) > c.maxPending {
		c.pending.Add(-1)
		c.overflows.Add(1)
		return false
	}
	defer c.pending.Add(-1)
	t := time.NewTimer(c.pendingTimeout)
	defer t.Stop()
	select {
	case c.slots <- struct{}{}:
		return true
	case <-t.C:
		c.overflows.Add(1)
		return false
	}
}

// mayRetry reports whether the cluster's retry budget allows one more
// request in flight to retry, and counts it if so.
func (c *Cluster) mayRetry(s *proxy.Session, call *Call) bool {
	if s.Stats.Attempts >= c.maxAttempts || s.Answered() {
		return false // no retry would be made: none is counted
	}
	if call.retried {
		return true // counted already
	}
	limit := max(c.minRetries, int64(c.retryRatio*float64(c.active.Load())))
	if c.retrying.Add(1) > limit {
		c.retrying.Add(-1)
		c.retriesRefused.Add(1)
		return false
	}
	call.retried = true
	return true
}

// failure counts a failed try against its endpoint.
func (c *Cluster) failure(call *Call, now time.Duration) {
	if st := call.set; st != nil && st.outlier != nil && st.outlier.Failure(call.cur, now) {
		c.ejections.Add(1)
		c.logger.Warn("endpoint ejected", "endpoint", st.peers[call.cur].Addr,
			"for", (st.outlier.Until(call.cur) - now).String())
	}
}

// done ends the current try's pick, which took micros microseconds to a
// good answer (0: it failed).
func (c *Cluster) done(call *Call, micros float64) {
	st := call.set
	st.active[call.cur].Add(-1)
	if st.least != nil {
		st.least.Done(call.cur, micros)
	}
}

// pick returns the endpoint of st for the attempt-th try (from 1) of the
// request of s, or -1 if none may take it. last is the endpoint of the try
// before, -1 if none, which a retry avoids where it can; an endpoint that
// is down (ejected, unhealthy or draining) is passed over.
func (c *Cluster) pick(st *set, s *proxy.Session, attempt, last int, now time.Duration) int {
	i := c.choose(st, s, attempt, last)
	if st.up(i, now) {
		return i
	}
	// The policy chooses again, so that the traffic of an endpoint that
	// is down spreads as the policy spreads it (not all to the next one
	// in the list): the next picks of round robin, new draws, the next
	// points along the ring.
	n := len(st.peers)
	for k := 1; k <= 2*n; k++ {
		var j int
		switch c.policy {
		case "ring_hash":
			j = st.ring.PickHash(balance.RingHash(c.key.of(s)), attempt-1+k)
		case "maglev":
			j = (i + k) % n
		default:
			if j = st.next(); st.least != nil {
				st.least.Done(j, 0) // moved below if kept
			}
		}
		if st.up(j, now) {
			st.moved(i, j)
			return j
		}
	}
	for k := 1; k < n; k++ { // the draws missed: look at them all
		if j := (i + k) % n; st.up(j, now) {
			st.moved(i, j)
			return j
		}
	}
	// None is up. With panic, the request goes anyway, to one that is not
	// draining: a draining endpoint takes no new requests, whatever else.
	for k := 0; !c.failAll && k < n; k++ {
		if j := (i + k) % n; !st.draining[j].Load() {
			st.moved(i, j)
			return j
		}
	}
	if st.least != nil {
		st.least.Done(i, 0)
	}
	return -1
}

// choose is pick with every endpoint up.
func (c *Cluster) choose(st *set, s *proxy.Session, attempt, last int) int {
	n := len(st.peers)
	switch c.policy {
	case "ring_hash":
		// A retry walks on along the ring to another endpoint's point.
		h := balance.RingHash(c.key.of(s))
		i := st.ring.PickHash(h, attempt-1)
		for k := attempt; i == last && n > 1 && k < attempt+1024; k++ {
			i = st.ring.PickHash(h, k)
		}
		return i
	case "maglev":
		i := st.maglev.PickHash(balance.MaglevHash(c.key.of(s)))
		return (i + attempt - 1) % n
	}
	i := st.next()
	if i == last && n > 1 {
		// A retry goes elsewhere: to the next endpoint.
		j := (last + 1) % n
		st.moved(i, j)
		i = j
	}
	return i
}

// up reports whether endpoint i may take requests: not draining, not
// ejected, and healthy if checked.
func (st *set) up(i int, now time.Duration) bool {
	return !st.draining[i].Load() && (st.outlier == nil || !st.outlier.Ejected(i, now)) &&
		(st.checker == nil || st.checker.Healthy(i))
}

// next is the pick of a policy that does not hash.
func (st *set) next() int {
	switch {
	case st.random != nil:
		return st.random.Pick()
	case st.least != nil:
		return st.least.Pick()
	}
	return st.rr.Pick()
}

// moved moves a least-request pick from i to j.
func (st *set) moved(i, j int) {
	if st.least != nil && i != j {
		st.least.Done(i, 0)
		st.least.Acquire(j)
	}
}

// of returns the key of the request of s: bytes it holds, or, for the
// client's address, a copy.
func (k *hashKey) of(s *proxy.Session) []byte {
	r := &s.Request
	switch k.kind {
	case "path":
		p, _, _ := bytes.Cut(r.Path, []byte{'?'})
		return p
	case "header":
		return r.Header.Get(k.name)
	case "cookie":
		return cookie(&r.Header, k.name)
	case "query":
		_, q, _ := bytes.Cut(r.Path, []byte{'?'})
		return queryValue(q, k.name)
	}
	a := s.ClientAddr.Addr().Unmap()
	if a.Is4() {
		b := a.As4()
		return b[:]
	}
	b := a.As16()
	return b[:]
}

// cookie returns the value of the cookie named name, or nil.
func cookie(h *header.Header, name string) []byte {
	for i := 0; i < h.Len(); i++ {
		f := h.Field(i)
		if !header.EqualFold(f.Name, "cookie") {
			continue
		}
		for pair := range bytes.SplitSeq(f.Value, []byte{';'}) {
			n, v, _ := bytes.Cut(bytes.TrimSpace(pair), []byte{'='})
			if string(n) == name {
				return v
			}
		}
	}
	return nil
}

// queryValue returns the raw value of query parameter name, or nil.
func queryValue(q []byte, name string) []byte {
	for pair := range bytes.SplitSeq(q, []byte{'&'}) {
		if n, v, _ := bytes.Cut(pair, []byte{'='}); string(n) == name {
			return v
		}
	}
	return nil
}

// Serving says whether the endpoint of call's current try still takes new
// requests: the cluster has it, and it is healthy, not ejected and not
// draining. A long flow (a UDP one the kernel forwards) checks it now and
// then to come back to the proxy's sight when its endpoint goes.
func (c *Cluster) Serving(call *Call) bool {
	if call.set == nil {
		return false
	}
	st, i := c.set.Load(), call.cur
	if st != call.set {
		name := call.set.eps[call.cur].Name
		if i = slices.IndexFunc(st.eps, func(e balance.Endpoint) bool { return e.Name == name }); i < 0 {
			return false
		}
	}
	return (st.checker == nil || st.checker.Healthy(i)) && (st.outlier == nil || !st.outlier.Ejected(i, mono.Now())) && !st.draining[i].Load()
}
