package gateway

import (
	"bytes"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/balance"
	"github.com/straitproxy/strait/internal/health"
	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/proxy"
)

// Cluster is a named set of endpoints with a balancing policy.
type Cluster struct {
	Name  string
	peers []proxy.Peer

	policy string
	rr     *balance.SmoothWeighted
	random *balance.Random
	least  *balance.LeastRequest
	ring   *balance.Ring
	maglev *balance.Maglev
	key    hashKey

	outlier *health.Outlier // nil: off
	checker *health.Checker // nil: no active checks
	failAll bool            // with every endpoint ejected, fail rather than use them
	retryOn []int           // statuses a try is retried on

	// The retry budget: retries in flight stay within retryRatio of the
	// requests in flight, or minRetries.
	retryRatio  float64
	minRetries  int64
	maxAttempts int          // limits.max_attempts: no retry is asked for past it
	active      atomic.Int64 // requests in flight
	retrying    atomic.Int64 // of those, ones that retried
	// RetriesRefused counts retries the budget refused, for metrics.
	RetriesRefused atomic.Int64

	// Circuit breaking: a request holds one of slots while in flight, or
	// waits for one, one of at most maxPending, for up to pendingTimeout.
	slots          chan struct{}
	pending        atomic.Int64
	maxPending     int64
	pendingTimeout time.Duration
	// Overflows counts requests refused (503) over the limits.
	Overflows atomic.Int64
}

// Circuit breakers' defaults (Envoy's, and a second's wait).
const (
	defaultMaxRequests    = 1024
	defaultMaxPending     = 1024
	defaultPendingTimeout = time.Second
)

var errOverflow = &proxy.Error{Side: proxy.Internal, Kind: proxy.KindLimit, Status: 503, Where: "cluster over its limits: requests in flight and waiting"}

// admit takes a slot for a request, waiting for one if the cluster is
// full and its queue is not, and reports whether it got one.
func (c *Cluster) admit() bool {
	select {
	case c.slots <- struct{}{}:
		return true
	default:
	}
	if c.pending.Add(1) > c.maxPending {
		c.pending.Add(-1)
		c.Overflows.Add(1)
		return false
	}
	defer c.pending.Add(-1)
	t := time.NewTimer(c.pendingTimeout)
	defer t.Stop()
	select {
	case c.slots <- struct{}{}:
		return true
	case <-t.C:
		c.Overflows.Add(1)
		return false
	}
}

// The retry budget's defaults (Envoy's): a fifth of the requests in
// flight may be retries, and three always may.
const (
	defaultRetryPercent = 20
	defaultMinRetries   = 3
)

// Backoff between tries after the second: exponential from retryBackoff,
// with jitter, up to maxRetryBackoff.
const (
	retryBackoff    = 25 * time.Millisecond
	maxRetryBackoff = 250 * time.Millisecond
)

// mayRetry reports whether the cluster's retry budget allows one more
// request in flight to retry, and counts it if so.
func (c *Cluster) mayRetry(s *proxy.Session, a *attempt) bool {
	if s.Stats.Attempts >= c.maxAttempts || s.Answered() {
		return false // no retry would be made: none is counted
	}
	if a.retried {
		return true // counted already
	}
	limit := max(c.minRetries, int64(c.retryRatio*float64(c.active.Load())))
	if c.retrying.Add(1) > limit {
		c.retrying.Add(-1)
		c.RetriesRefused.Add(1)
		return false
	}
	a.retried = true
	return true
}

// hashKey is what ring_hash and maglev hash (config.Cluster.HashKey).
type hashKey struct {
	kind string // client_addr, path, header, cookie or query
	name string
}

// NewCluster returns a cluster of config.Cluster cc, validated. Its
// active health checks, if any, run until Stop.
func NewCluster(cc *config.Cluster, logger *slog.Logger) *Cluster {
	c := &Cluster{Name: cc.Name, policy: cc.Balance}
	var eps []balance.Endpoint
	for _, e := range cc.Endpoints {
		addr, w, _ := config.ParseEndpoint(e)
		c.peers = append(c.peers, proxy.Peer{Addr: addr, Name: cc.Name + "/" + addr})
		eps = append(eps, balance.Endpoint{Name: addr, Weight: w})
	}
	switch c.policy {
	case "random":
		c.random = balance.NewRandom(eps)
	case "least_request":
		c.least = balance.NewLeastRequest(eps, true)
	case "ring_hash":
		c.ring = balance.NewRing(eps)
	case "maglev":
		c.maglev = balance.NewMaglev(eps)
	default:
		c.policy = "round_robin"
		c.rr = balance.NewSmoothWeighted(eps)
	}
	if o := cc.Outlier; o.Enabled != "off" {
		c.outlier = health.NewOutlier(len(c.peers), health.OutlierConfig{Failures: o.Failures,
			Base: time.Duration(o.BaseEjection), Max: time.Duration(o.MaxEjection), MaxEjectedPercent: o.MaxEjectedPercent})
	}
	if hc := cc.HealthCheck; hc.Kind != "" {
		addrs := make([]string, len(c.peers))
		for i, p := range c.peers {
			addrs[i] = p.Addr
		}
		c.checker = health.StartChecker(addrs, health.CheckConfig{Kind: hc.Kind, Interval: time.Duration(hc.Interval),
			Timeout: time.Duration(hc.Timeout), Healthy: hc.Healthy, Unhealthy: hc.Unhealthy, Method: hc.Method,
			Path: hc.Path, Host: hc.Host, Statuses: hc.Statuses, BodyContains: hc.BodyContains}, logger.With("cluster", cc.Name))
	}
	c.failAll = cc.WhenAllEjected == "fail"
	l := cc.Limits
	c.slots = make(chan struct{}, cmpOr(l.MaxRequests, defaultMaxRequests))
	c.maxPending = int64(cmpOr(l.MaxPending, defaultMaxPending))
	c.pendingTimeout = cmpOr(time.Duration(l.PendingTimeout), defaultPendingTimeout)
	c.retryOn = cc.RetryOn
	c.retryRatio, c.minRetries = defaultRetryPercent/100.0, defaultMinRetries
	if b := cc.RetryBudget; b.Percent > 0 {
		c.retryRatio = float64(b.Percent) / 100
	}
	if b := cc.RetryBudget; b.Min > 0 {
		c.minRetries = int64(b.Min)
	}
	kind, name, _ := bytes.Cut([]byte(cc.HashKey), []byte{':'})
	c.key = hashKey{kind: string(kind), name: string(name)}
	if c.key.kind == "" {
		c.key.kind = "client_addr"
	}
	return c
}

// pick returns the endpoint for the attempt-th try (from 1) of the
// request of s, or -1 if every endpoint is ejected and the cluster fails
// then. last is the endpoint of the try before, -1 if none, which a retry
// avoids where it can; an ejected endpoint is passed over for the next one
// (along the ring, for a hash).
func (c *Cluster) pick(s *proxy.Session, attempt, last int, now time.Duration) int {
	i := c.choose(s, attempt, last)
	if c.up(i, now) {
		return i
	}
	// The policy chooses again, so that the traffic of an endpoint that
	// is down spreads as the policy spreads it (not all to the next one
	// in the list): the next picks of round robin, new draws, the next
	// points along the ring.
	for n := 1; n <= 2*len(c.peers); n++ {
		var j int
		switch c.policy {
		case "ring_hash":
			j = c.ring.PickHash(balance.RingHash(c.key.of(s)), attempt-1+n)
		case "maglev":
			j = (i + n) % len(c.peers)
		default:
			if j = c.next(); c.least != nil {
				c.least.Done(j, 0) // moved below if kept
			}
		}
		if c.up(j, now) {
			c.moved(i, j)
			return j
		}
	}
	for n := 1; n < len(c.peers); n++ { // the draws missed: look at them all
		j := (i + n) % len(c.peers)
		if c.up(j, now) {
			c.moved(i, j)
			return j
		}
	}
	if c.failAll {
		c.done(i, 0)
		return -1
	}
	return i // panic: spread over them all anyway
}

// up reports whether endpoint i may take requests: not ejected, and
// healthy if checked.
func (c *Cluster) up(i int, now time.Duration) bool {
	return (c.outlier == nil || !c.outlier.Ejected(i, now)) && (c.checker == nil || c.checker.Healthy(i))
}

// Stop ends the cluster's active health checks.
func (c *Cluster) Stop() {
	if c.checker != nil {
		c.checker.Stop()
	}
}

// moved moves a least-request pick from i to j.
func (c *Cluster) moved(i, j int) {
	if c.least != nil {
		c.least.Done(i, 0)
		c.least.Acquire(j)
	}
}

func cmpOr[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// failure and success report the outcome of a try at endpoint i.
func (c *Cluster) failure(i int, now time.Duration) {
	if c.outlier != nil && i >= 0 {
		c.outlier.Failure(i, now)
	}
}

func (c *Cluster) success(i int) {
	if c.outlier != nil && i >= 0 {
		c.outlier.Success(i)
	}
}

// choose is pick without ejections.
func (c *Cluster) choose(s *proxy.Session, attempt, last int) int {
	switch c.policy {
	case "ring_hash":
		// A retry walks on along the ring to another endpoint's point.
		h := balance.RingHash(c.key.of(s))
		i := c.ring.PickHash(h, attempt-1)
		for n := attempt; i == last && len(c.peers) > 1 && n < attempt+1024; n++ {
			i = c.ring.PickHash(h, n)
		}
		return i
	case "maglev":
		i := c.maglev.PickHash(balance.MaglevHash(c.key.of(s)))
		return (i + attempt - 1) % len(c.peers)
	}
	i := c.next()
	if i == last && len(c.peers) > 1 {
		// A retry goes elsewhere: to the next endpoint.
		i = (last + 1) % len(c.peers)
		c.moved(last, i)
	}
	return i
}

func (c *Cluster) next() int {
	switch {
	case c.random != nil:
		return c.random.Pick()
	case c.least != nil:
		return c.least.Pick()
	}
	return c.rr.Pick()
}

// done ends a pick, which took micros microseconds to a good answer (0:
// it failed).
func (c *Cluster) done(i int, micros float64) {
	if c.least != nil {
		c.least.Done(i, micros)
	}
}

// of returns the key of the request of s: bytes it holds, or, for the
// client's address, a copy in k.
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

// attempt is what the gateway keeps of one request while it is proxied:
// its rule, and the endpoint its current try went to. Pooled: held in
// Session.Ctx from routing to Logging.
type attempt struct {
	rule    *rule
	cluster *Cluster
	cur     int           // the endpoint of the current try; -1: none
	start   time.Duration // when it began (mono)
	counted bool          // counted as in flight at its cluster
	retried bool          // counted against the retry budget
}

var attempts = sync.Pool{New: func() any { return new(attempt) }}

var errAllEjected = &proxy.Error{Side: proxy.Upstream, Kind: proxy.KindNoPeer, Status: 503, Where: "every endpoint of the cluster is ejected"}

// upstreamPeer picks the endpoint for a try, ending the last one's pick.
func upstreamPeer(s *proxy.Session) (*proxy.Peer, error) {
	a := s.Ctx.(*attempt)
	c := a.cluster
	last := a.cur
	if last >= 0 {
		c.done(last, 0) // the try before failed
		// The first retry goes to another endpoint at once; later ones
		// back off, so that they do not pile onto a cluster in trouble.
		if n := s.Stats.Attempts - 3; n >= 0 {
			d := min(retryBackoff<<min(n, 8), maxRetryBackoff)
			time.Sleep(d/2 + rand.N(d/2))
		}
	} else if !a.counted {
		if !c.admit() {
			return nil, errOverflow
		}
		c.active.Add(1)
		a.counted = true
	}
	a.start = mono.Now()
	a.cur = c.pick(s, s.Stats.Attempts, last, a.start)
	if a.cur < 0 {
		return nil, errAllEjected
	}
	return &c.peers[a.cur], nil
}

// failToConnect counts a failed connection against its endpoint, and asks
// for another try: nothing was sent, so any method may go again.
func failToConnect(s *proxy.Session, _ *proxy.Peer, e *proxy.Error) *proxy.Error {
	if e.Side == proxy.Upstream {
		a := s.Ctx.(*attempt)
		a.cluster.failure(a.cur, mono.Now())
		e.Retry = a.cluster.mayRetry(s, a)
	}
	return e
}

// errorWhileProxy counts a failed exchange against its endpoint, and asks
// for another try of a request that may be sent twice when the endpoint
// failed before answering: it closed or reset the connection, timed out,
// or answered with a status chosen for a retry.
func errorWhileProxy(s *proxy.Session, _ *proxy.Peer, e *proxy.Error) *proxy.Error {
	if e.Side != proxy.Upstream {
		return e
	}
	a := s.Ctx.(*attempt)
	a.cluster.failure(a.cur, mono.Now())
	switch e.Kind {
	case proxy.KindClosed, proxy.KindTimeout, proxy.KindStatus:
		e.Retry = e.Retry || !s.Answered() && s.Idempotent()
	}
	if e.Retry {
		e.Retry = a.cluster.mayRetry(s, a)
	}
	return e
}

// logging counts the last try's outcome, ends its pick, and gives the
// attempt back. An origin's own 502, 503 or 504 counts as a failure of
// the endpoint; other statuses, 500 among them (a client may provoke
// those), as a success.
func logging(s *proxy.Session, e *proxy.Error) {
	a, ok := s.Ctx.(*attempt)
	if !ok {
		return
	}
	if a.cur >= 0 {
		micros := 0.0
		switch st := s.Stats.Status; {
		case e != nil:
		case st == 502 || st == 503 || st == 504:
			a.cluster.failure(a.cur, mono.Now())
		default:
			a.cluster.success(a.cur)
			micros = float64((mono.Now() - a.start).Microseconds())
		}
		a.cluster.done(a.cur, micros)
	}
	if a.counted {
		a.cluster.active.Add(-1)
		<-a.cluster.slots
	}
	if a.retried {
		a.cluster.retrying.Add(-1)
	}
	*a = attempt{}
	attempts.Put(a)
	s.Ctx = nil
}
