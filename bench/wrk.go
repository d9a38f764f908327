package main

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// scenario is one kind of traffic.
type scenario struct {
	Name  string `json:"name"`
	Path  string `json:"path"`
	Size  int    `json:"payload_bytes"`
	Close bool   `json:"connection_close"` // every request carries Connection: close
	H2    bool   `json:"http2,omitempty"`  // h2load over HTTP/2 rather than wrk
	Desc  string `json:"description"`
}

var scenarios = []scenario{
	{Name: "small", Path: "/13", Size: 13, Desc: "13-byte body, keep-alive"},
	{Name: "1k", Path: "/1k", Size: 1 << 10, Desc: "1 KiB body, keep-alive"},
	{Name: "64k", Path: "/64k", Size: 64 << 10, Desc: "64 KiB body, keep-alive"},
	{Name: "close", Path: "/13", Size: 13, Close: true, Desc: "13-byte body, Connection: close (a new client connection per request)"},
	{Name: "h2", Path: "/13", Size: 13, H2: true, Desc: "13-byte body over HTTP/2 (h2c, or h2 by ALPN on TLS targets); h2load -c20 -m10"},
}

func scenarioNames() string {
	var names []string
	for _, s := range scenarios {
		names = append(names, s.Name)
	}
	return strings.Join(names, ", ")
}

func pickScenarios(list string) ([]scenario, error) {
	var out []scenario
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		found := false
		for _, s := range scenarios {
			if s.Name == name {
				out = append(out, s)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown scenario %q (have %s)", name, scenarioNames())
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no scenarios")
	}
	return out, nil
}

// wrkResult is what the harness reads from wrk's output.
type wrkResult struct {
	Requests      int64   `json:"requests"`
	ReqPerSec     float64 `json:"req_per_sec"`
	P50Ms         float64 `json:"p50_ms"`
	P99Ms         float64 `json:"p99_ms"`
	BytesRead     float64 `json:"bytes_read"` // approximate: wrk prints 3 significant digits
	ConnectErrors int64   `json:"connect_errors"`
	ReadErrors    int64   `json:"read_errors"`
	WriteErrors   int64   `json:"write_errors"`
	TimeoutErrors int64   `json:"timeout_errors"`
	Non2xx        int64   `json:"non_2xx_3xx"`
}

func (r *wrkResult) socketErrors() int64 {
	return r.ConnectErrors + r.ReadErrors + r.WriteErrors + r.TimeoutErrors
}

// wrkArgs is the command line for one run: one thread (wrk gets one CPU,
// shared with the origin), --latency for the percentiles.
func (b *bench) wrkArgs(url string, conns int, d time.Duration, close bool) []string {
	args := []string{"wrk", "-t1", "-c" + strconv.Itoa(conns), "-d" + strconv.Itoa(int(d/time.Second)) + "s", "--latency"}
	if close {
		args = append(args, "-H", "Connection: close")
	}
	return b.pinned(b.cfg.loadCPU, append(args, url))
}

// runWrk runs wrk pinned to the load CPU and parses its report.
func (b *bench) runWrk(ctx context.Context, url string, conns int, d time.Duration, close bool) (wrkResult, string, error) {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	argv := b.wrkArgs(url, conns, d, close)
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return wrkResult{}, string(out), fmt.Errorf("wrk: %v", err)
	}
	r, err := parseWrk(string(out))
	return r, string(out), err
}

var (
	reRequests = regexp.MustCompile(`(?m)^\s*(\d+) requests in [\d.]+\w+, ([\d.]+)([KMGTP]?B) read`)
	reRPS      = regexp.MustCompile(`(?m)^Requests/sec:\s+([\d.]+)`)
	reP50      = regexp.MustCompile(`(?m)^\s+50%\s+([\d.]+)(us|ms|s|m|h)\s*$`)
	reP99      = regexp.MustCompile(`(?m)^\s+99%\s+([\d.]+)(us|ms|s|m|h)\s*$`)
	reSocket   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// parseWrk reads wrk 4's report. The error lines appear only when nonzero.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := reRequests.FindStringSubmatch(out)
	rps := reRPS.FindStringSubmatch(out)
	p50 := reP50.FindStringSubmatch(out)
	p99 := reP99.FindStringSubmatch(out)
	if m == nil || rps == nil || p50 == nil || p99 == nil {
		return r, fmt.Errorf("cannot parse wrk output")
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	r.BytesRead = parseBytes(m[2], m[3])
	r.ReqPerSec, _ = strconv.ParseFloat(rps[1], 64)
	r.P50Ms = parseMs(p50[1], p50[2])
	r.P99Ms = parseMs(p99[1], p99[2])
	if s := reSocket.FindStringSubmatch(out); s != nil {
		r.ConnectErrors, _ = strconv.ParseInt(s[1], 10, 64)
		r.ReadErrors, _ = strconv.ParseInt(s[2], 10, 64)
		r.WriteErrors, _ = strconv.ParseInt(s[3], 10, 64)
		r.TimeoutErrors, _ = strconv.ParseInt(s[4], 10, 64)
	}
	if s := reNon2xx.FindStringSubmatch(out); s != nil {
		r.Non2xx, _ = strconv.ParseInt(s[1], 10, 64)
	}
	return r, nil
}

// parseMs converts wrk's time (value and unit) to milliseconds.
func parseMs(v, unit string) float64 {
	f, _ := strconv.ParseFloat(v, 64)
	switch unit {
	case "us":
		return f / 1e3
	case "s":
		return f * 1e3
	case "m":
		return f * 60e3
	case "h":
		return f * 3600e3
	}
	return f
}

// parseBytes converts wrk's size (powers of 1024) to bytes.
func parseBytes(v, unit string) float64 {
	f, _ := strconv.ParseFloat(v, 64)
	for _, u := range []string{"B", "KB", "MB", "GB", "TB", "PB"} {
		if u == unit {
			return f
		}
		f *= 1024
	}
	return f
}
