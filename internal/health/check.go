package health

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// CheckConfig is an active health check. Zero fields mean the defaults.
type CheckConfig struct {
	Kind      string        // "http" (default), "grpc", or "tcp": a connection is enough
	Interval  time.Duration // between checks of an endpoint, ±10% (default 5 s)
	Timeout   time.Duration // of one check (default 2 s)
	Healthy   int           // passes in a row that make an endpoint healthy (default 2)
	Unhealthy int           // failures in a row that make it unhealthy (default 3)

	// HTTP checks.
	Method       string // default GET
	Path         string // default /
	Host         string // the Host field; default the endpoint's address
	Statuses     []int  // statuses that pass; default 200 to 399
	BodyContains string // if set, the body's first 64 KiB must hold it

	// gRPC checks (Kind "grpc"): grpc.health.v1.Health/Check over HTTP/2,
	// in cleartext, or over TLS with this config.
	Service string // the service asked after; "" for the server as a whole
	TLS     *tls.Config
}

// Checker checks a cluster's endpoints, each on a goroutine of its own
// with at most one check in flight, on connections of its own (not the
// request pool's). Endpoints start healthy, so that traffic flows before
// the first checks end.
type Checker struct {
	cfg     CheckConfig
	addrs   []string
	healthy []atomic.Bool
	logger  *slog.Logger
	grpc    *http.Client // for gRPC checks
	stop    chan struct{}
	wg      sync.WaitGroup
}

// StartChecker starts checking the endpoints at addrs (host:port). They
// start healthy, but for those healthy (if not nil) says are not.
func StartChecker(addrs []string, healthy []bool, cfg CheckConfig, logger *slog.Logger) *Checker {
	if cfg.Kind == "" {
		cfg.Kind = "http"
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Healthy <= 0 {
		cfg.Healthy = 2
	}
	if cfg.Unhealthy <= 0 {
		cfg.Unhealthy = 3
	}
	if cfg.Method == "" {
		cfg.Method = "GET"
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	c := &Checker{cfg: cfg, addrs: addrs, healthy: make([]atomic.Bool, len(addrs)), logger: logger, stop: make(chan struct{})}
	if cfg.Kind == "grpc" {
		c.grpc = newGRPCClient(cfg.TLS)
	}
	for i := range addrs {
		c.healthy[i].Store(healthy == nil || healthy[i])
		c.wg.Add(1)
		go c.run(i)
	}
	return c
}

// Healthy reports whether endpoint i passed its last checks.
func (c *Checker) Healthy(i int) bool { return c.healthy[i].Load() }

// Stop ends the checks and waits for them.
func (c *Checker) Stop() {
	close(c.stop)
	c.wg.Wait()
	if c.grpc != nil {
		c.grpc.CloseIdleConnections()
	}
}

func (c *Checker) run(i int) {
	defer c.wg.Done()
	passes, fails := 0, 0
	// The first check comes at a random point of the first interval, so
	// that the checks of many endpoints spread out.
	wait := rand.N(c.cfg.Interval)
	for {
		select {
		case <-c.stop:
			return
		case <-time.After(wait):
		}
		wait = c.cfg.Interval*9/10 + rand.N(c.cfg.Interval/5)
		err := c.check(c.addrs[i])
		if err == nil {
			passes, fails = passes+1, 0
			if passes == c.cfg.Healthy && !c.healthy[i].Load() {
				c.healthy[i].Store(true)
				c.logger.Info("endpoint healthy again", "endpoint", c.addrs[i])
			}
			continue
		}
		passes, fails = 0, fails+1
		if fails == c.cfg.Unhealthy && c.healthy[i].Load() {
			c.healthy[i].Store(false)
			c.logger.Warn("endpoint unhealthy", "endpoint", c.addrs[i], "err", err)
		}
	}
}

// check checks the endpoint at addr once.
func (c *Checker) check(addr string) error {
	if c.cfg.Kind == "grpc" {
		return c.checkGRPC(addr)
	}
	nc, err := net.DialTimeout("tcp", addr, c.cfg.Timeout)
	if err != nil {
		return err
	}
	defer nc.Close()
	if c.cfg.Kind == "tcp" {
		return nil
	}
	nc.SetDeadline(time.Now().Add(c.cfg.Timeout))
	host := c.cfg.Host
	if host == "" {
		host = addr
	}
	if _, err := fmt.Fprintf(nc, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: strait-health-check\r\nConnection: close\r\n\r\n",
		c.cfg.Method, c.cfg.Path, host); err != nil {
		return err
	}
	br := bufio.NewReader(nc)
	var resp *http.Response
	for range 10 { // interim (1xx) responses come first
		if resp, err = http.ReadResponse(br, &http.Request{Method: c.cfg.Method}); err != nil {
			return err
		}
		if resp.StatusCode >= 200 {
			break
		}
	}
	defer resp.Body.Close()
	if !c.passes(resp.StatusCode) {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if c.cfg.BodyContains != "" {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if !strings.Contains(string(body), c.cfg.BodyContains) {
			return fmt.Errorf("the body lacks %q", c.cfg.BodyContains)
		}
	}
	return nil
}

func (c *Checker) passes(status int) bool {
	if len(c.cfg.Statuses) == 0 {
		return status >= 200 && status < 400
	}
	for _, s := range c.cfg.Statuses {
		if s == status {
			return true
		}
	}
	return false
}
