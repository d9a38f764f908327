package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// idleResult is one proxy's memory per idle keep-alive connection.
type idleResult struct {
	Target       string  `json:"target"`
	Conns        int     `json:"connections"`
	RSSBeforeKiB int64   `json:"rss_before_kib"` // all the proxy's processes (nginx: master + worker)
	RSSAfterKiB  int64   `json:"rss_after_kib"`
	KiBPerConn   float64 `json:"kib_per_connection"`
	FirstFailed  int     `json:"first_request_failures"`
	SecondFailed int     `json:"second_request_failures"` // on the same connection, after idling
	// OriginConns is how many connections to the origin were established
	// while the clients sat idle: a proxy that pools has a few, one that
	// does not has one per client.
	OriginConns int      `json:"origin_conns_while_idle"`
	OpenFiles   string   `json:"proxy_open_files_limit"`
	OpenSeconds float64  `json:"open_and_first_request_s"`
	Valid       bool     `json:"valid"`
	Failure     string   `json:"failure,omitempty"`
	Errors      []string `json:"sample_errors,omitempty"`
	Log         []string `json:"process_log,omitempty"`
}

type idleReport struct {
	Started     time.Time     `json:"started"`
	Conns       int           `json:"connections"`
	Concurrency int           `json:"concurrency"`
	SettleS     float64       `json:"settle_s"`
	ProxyCPU    int           `json:"proxy_cpu"`
	OpenFiles   uint64        `json:"open_files_limit"`
	Environment [][2]string   `json:"environment"`
	Results     []*idleResult `json:"results"`
}

// runIdle measures, for each proxy in turn, started fresh: RSS before and
// after n clients each open a connection and make one request, then a
// second request on every connection, which must all succeed.
func (b *bench) runIdle(ctx context.Context) error {
	cfg := b.cfg
	rep := &idleReport{
		Started: b.started.UTC(), Conns: cfg.idleConns, Concurrency: cfg.idleConcurrency,
		SettleS: cfg.idleSettle.Seconds(), ProxyCPU: cfg.proxyCPU, OpenFiles: b.nofile,
		Environment: b.environment(ctx),
	}
	fmt.Printf("strait benchmark (idle connections), %s\n", rep.Started.Format("2006-01-02 15:04:05 UTC"))
	for _, kv := range rep.Environment {
		fmt.Printf("  %-10s %s\n", kv[0]+":", kv[1])
	}
	fmt.Printf("  %-10s each proxy alone on CPU %d with one worker, started fresh; %d connections opened by %d goroutines,\n",
		"method:", cfg.proxyCPU, cfg.idleConns, cfg.idleConcurrency)
	fmt.Printf("  %-10s one GET /13 on each, RSS read %v after the last; then a second GET on every connection\n", "", cfg.idleSettle)
	fmt.Printf("  %-10s %d for the harness and every process it starts\n\n", "open files:", b.nofile)

	for _, name := range cfg.targets {
		if name == "direct" {
			continue
		}
		if cfg.idleH2 && !slices.Contains(h2Targets, name) {
			fmt.Fprintf(os.Stderr, "bench: -idle-h2 skips %s (no HTTP/2)\n", name)
			continue
		}
		res, err := b.idleOne(ctx, name)
		if err != nil {
			return err
		}
		rep.Results = append(rep.Results, res)
		status := "ok"
		if !res.Valid {
			status = "FAILED: " + res.Failure
		}
		fmt.Fprintf(os.Stderr, "idle %-8s %.1f KiB/conn, %d origin conns, %s\n", name, res.KiBPerConn, res.OriginConns, status)
	}

	fmt.Printf("== idle keep-alive connections: %d per proxy\n", cfg.idleConns)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tRSS before\tRSS after\tKiB/conn\t1st GET failed\t2nd GET failed\torigin conns\tfd limit\topen+GET\tresult\t")
	for _, r := range rep.Results {
		result := "ok"
		if !r.Valid {
			result = "FAILED"
		}
		fmt.Fprintf(tw, "%s\t%s KiB\t%s KiB\t%.2f\t%d\t%d\t%d\t%s\t%.1f s\t%s\t\n", r.Target,
			thousands(float64(r.RSSBeforeKiB)), thousands(float64(r.RSSAfterKiB)), r.KiBPerConn,
			r.FirstFailed, r.SecondFailed, r.OriginConns, r.OpenFiles, r.OpenSeconds, result)
	}
	tw.Flush()
	fmt.Println("KiB/conn = (RSS after - RSS before) / connections; kernel socket buffers are not in RSS.")
	fmt.Println("origin conns = connections established to the origin while the clients idled.")
	for _, r := range rep.Results {
		if !r.Valid {
			fmt.Printf("  FAILED %s: %s\n", r.Target, r.Failure)
			for _, e := range r.Errors {
				fmt.Printf("    e.g. %s\n", e)
			}
		}
		if len(r.Log) > 0 {
			fmt.Printf("process log: %s logged %d line(s) during the test:\n", r.Target, len(r.Log))
			printGrouped(os.Stdout, r.Log)
		}
	}
	return b.writeJSON(rep, "-idle")
}

func (b *bench) idleOne(ctx context.Context, name string) (*idleResult, error) {
	cfg := b.cfg
	t, err := b.startTarget(ctx, name)
	if err != nil {
		return nil, err
	}
	// Stopped here and not only at the end: the next proxy is measured
	// with this one's 10,000 sockets gone.
	defer t.proc.stop()
	logStart := len(t.proc.logLines())
	res := &idleResult{Target: name, Conns: cfg.idleConns, OpenFiles: nofileLimit(t.proc.pid())}

	// Let the readiness probe's connection close and the process settle.
	if err := sleep(ctx, time.Second); err != nil {
		return nil, err
	}
	pids := t.proc.pids()
	res.RSSBeforeKiB = rssKiB(pids)

	var errs errorSample
	conns := make([]*clientConn, cfg.idleConns)
	start := time.Now()
	addr := fmt.Sprintf("127.0.0.1:%d", t.port)
	parallel(ctx, cfg.idleConns, cfg.idleConcurrency, func(i int) {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			errs.add("dial: " + err.Error())
			return
		}
		if isTLSTarget(name) {
			// A full handshake each: the bench's certificate is
			// self-signed, and what is measured is the proxy's side.
			proto := "http/1.1"
			if cfg.idleH2 {
				proto = "h2"
			}
			tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{proto}})
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tc.Handshake(); err != nil {
				c.Close()
				errs.add("tls handshake: " + err.Error())
				return
			}
			c = tc
		}
		cc := &clientConn{c: c, br: bufio.NewReader(c), h2: cfg.idleH2}
		conns[i] = cc
		if err := cc.get(); err != nil {
			errs.add("first GET: " + err.Error())
		}
	})
	defer func() {
		for _, cc := range conns {
			if cc != nil {
				cc.c.Close()
			}
		}
	}()
	res.OpenSeconds = time.Since(start).Seconds()
	res.FirstFailed = errs.count()
	if err := sleep(ctx, cfg.idleSettle); err != nil {
		return nil, err
	}
	res.RSSAfterKiB = rssKiB(pids)
	res.OriginConns = establishedOn(b.oport)
	res.KiBPerConn = float64(res.RSSAfterKiB-res.RSSBeforeKiB) / float64(cfg.idleConns)

	// The second request on each connection, after idling: a proxy that
	// saves memory by dropping idle connections fails here.
	var errs2 errorSample
	parallel(ctx, cfg.idleConns, cfg.idleConcurrency, func(i int) {
		if conns[i] == nil {
			errs2.add("no connection (the dial failed)")
			return
		}
		if err := conns[i].get(); err != nil {
			errs2.add("second GET: " + err.Error())
		}
	})
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	res.SecondFailed = errs2.count()
	res.Errors = append(errs.sample(), errs2.sample()...)

	switch {
	case t.proc.exited():
		res.Failure = fmt.Sprintf("%s exited: %v", name, t.proc.err)
	case res.FirstFailed > 0 || res.SecondFailed > 0:
		res.Failure = fmt.Sprintf("%d first and %d second requests failed", res.FirstFailed, res.SecondFailed)
	default:
		res.Valid = true
	}
	if lines := t.proc.logLines(); len(lines) > logStart {
		res.Log = lines[logStart:]
	}
	return res, nil
}

// clientConn is one client connection with its own reader, so bytes the
// proxy sent past a response stay with that connection.
type clientConn struct {
	c      net.Conn
	br     *bufio.Reader
	h2     bool   // speaks HTTP/2
	stream uint32 // the last stream it opened
}

var idleRequest = []byte("GET /13 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")

// get makes one request on the connection and checks the answer: the
// origin's body, and no announcement that the connection will close.
func (cc *clientConn) get() error {
	cc.c.SetDeadline(time.Now().Add(30 * time.Second))
	// No deadline while idle: a Go timer per connection would be the
	// harness's memory, not the proxy's, but there is no reason to hold it.
	defer cc.c.SetDeadline(time.Time{})
	if cc.h2 {
		return cc.getH2()
	}
	if _, err := cc.c.Write(idleRequest); err != nil {
		return err
	}
	resp, err := http.ReadResponse(cc.br, nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || string(body) != string(payloads["13"]) {
		return fmt.Errorf("status %d, %d-byte body", resp.StatusCode, len(body))
	}
	if resp.Close {
		return errors.New("the proxy announced it will close the connection")
	}
	return nil
}

// parallel calls f(0..n-1) from up to workers goroutines: bounded, so
// 10,000 connections do not mean 10,000 goroutines dialling at once.
func parallel(ctx context.Context, n, workers int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, workers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

// errorSample counts errors and keeps the first few distinct messages.
type errorSample struct {
	mu    sync.Mutex
	n     int
	first []string
}

func (e *errorSample) add(msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	for _, m := range e.first {
		if m == msg {
			return
		}
	}
	if len(e.first) < 5 {
		e.first = append(e.first, msg)
	}
}

func (e *errorSample) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

func (e *errorSample) sample() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.first...)
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
