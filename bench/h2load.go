package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
)

// The h2 scenario: h2load with h2Conns connections of h2Streams
// concurrent streams each, to HTTP/2 targets (h2c prior knowledge, or h2 by
// ALPN on TLS ones), with an HTTP/1.1 origin behind every proxy.
const (
	h2Conns   = 20
	h2Streams = 10
)

// h2OnlyTargets speak HTTP/2 only (no wrk scenario runs on them);
// h2Targets are every target the h2 scenario runs on.
var (
	h2OnlyTargets = []string{"nginx-h2c", "haproxy-h2c"}
	h2Targets     = append([]string{"strait", "strait-metrics", "strait-tls", "nginx-tls", "haproxy-tls", "strait-h2up", "haproxy-h2up"}, h2OnlyTargets...)
	// h2UpTargets speak HTTP/2 to the origin (its h2c port); HTTP/1.1 to
	// wrk, and h2c to h2load too but for nginx, whose plain listener
	// speaks HTTP/1.1 alone.
	h2UpTargets = []string{"strait-h2up", "nginx-h2up", "haproxy-h2up"}
)

// runs reports whether scenario sc runs on target name.
func runs(name string, sc scenario) bool {
	if sc.H2 {
		return slices.Contains(h2Targets, name)
	}
	return !slices.Contains(h2OnlyTargets, name)
}

// runH2load runs h2load pinned to the load CPU and reads its report, and
// the percentiles from its per-request log (h2load prints none).
func (b *bench) runH2load(ctx context.Context, url string, d time.Duration) (wrkResult, string, error) {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	logFile := filepath.Join(b.tmp, "h2load.log")
	args := b.pinned(b.cfg.loadCPU, []string{"h2load", "-c", strconv.Itoa(h2Conns), "-m", strconv.Itoa(h2Streams),
		"-D", strconv.Itoa(int(d / time.Second)), "--log-file", logFile, url})
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return wrkResult{}, string(out), fmt.Errorf("h2load: %v", err)
	}
	r, err := parseH2load(string(out))
	if err != nil {
		return r, string(out), err
	}
	r.P50Ms, r.P99Ms, err = logPercentiles(logFile)
	return r, string(out), err
}

var (
	reH2Finished = regexp.MustCompile(`finished in ([\d.]+)s, ([\d.]+) req/s, ([\d.]+)([KMG]?B)/s`)
	reH2Requests = regexp.MustCompile(`requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	reH2Status   = regexp.MustCompile(`status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
)

// parseH2load reads h2load's report into the fields wrk's fills.
func parseH2load(out string) (wrkResult, error) {
	var r wrkResult
	f := reH2Finished.FindStringSubmatch(out)
	q := reH2Requests.FindStringSubmatch(out)
	s := reH2Status.FindStringSubmatch(out)
	if f == nil || q == nil || s == nil {
		return r, fmt.Errorf("cannot parse h2load output")
	}
	secs, _ := strconv.ParseFloat(f[1], 64)
	r.ReqPerSec, _ = strconv.ParseFloat(f[2], 64)
	r.BytesRead = parseBytes(f[3], f[4]) * secs
	r.Requests, _ = strconv.ParseInt(q[3], 10, 64)
	failed, _ := strconv.ParseInt(q[4], 10, 64)
	errored, _ := strconv.ParseInt(q[5], 10, 64)
	timeouts, _ := strconv.ParseInt(q[6], 10, 64)
	r.ReadErrors, r.TimeoutErrors = failed+errored, timeouts
	for _, i := range []int{3, 4} { // 4xx and 5xx, as wrk counts
		n, _ := strconv.ParseInt(s[i], 10, 64)
		r.Non2xx += n
	}
	return r, nil
}

// logPercentiles reads h2load's log (start time, status, duration in µs
// per request) and returns the median and 99th percentile in ms.
func logPercentiles(path string) (p50, p99 float64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var ds []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			continue
		}
		us, err := strconv.ParseFloat(fields[2], 64)
		if err == nil {
			ds = append(ds, us/1000)
		}
	}
	if len(ds) == 0 {
		return 0, 0, fmt.Errorf("h2load's log holds no request")
	}
	slices.Sort(ds)
	at := func(q float64) float64 { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return at(0.50), at(0.99), nil
}

// checkBodyH2 is checkBody over HTTP/2: h2c with prior knowledge, or h2
// by ALPN.
func checkBodyH2(base, path string, want []byte) error {
	var protos http.Protocols
	if strings.HasPrefix(base, "http://") {
		protos.SetUnencryptedHTTP2(true)
	} else {
		protos.SetHTTP2(true)
	}
	tr := &http.Transport{Protocols: &protos, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	return checkWith(tr, 2, base, path, want)
}

// idleH2Block is GET /13 as an HPACK block that needs no dynamic table.
var idleH2Block = func() []byte {
	var b []byte
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/13"}, {":authority", "127.0.0.1"}} {
		b = append(b, 0, byte(len(f[0])))
		b = append(b, f[0]...)
		b = append(b, byte(len(f[1])))
		b = append(b, f[1]...)
	}
	return b
}()

// getH2 makes one request over HTTP/2 on the connection (its preface
// first, on the first request) and checks the answer's body.
func (cc *clientConn) getH2() error {
	var out []byte
	if cc.stream == 0 {
		out = append([]byte(http2.ClientPreface), 0, 0, 0, byte(http2.FrameSettings), 0, 0, 0, 0, 0)
		cc.stream = 1
	} else {
		cc.stream += 2
	}
	n := len(idleH2Block)
	out = append(out, byte(n>>16), byte(n>>8), byte(n), byte(http2.FrameHeaders),
		byte(http2.FlagHeadersEndStream|http2.FlagHeadersEndHeaders), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(out[len(out)-4:], cc.stream)
	out = append(out, idleH2Block...)
	if _, err := cc.c.Write(out); err != nil {
		return err
	}
	fr := http2.NewFramer(cc.c, cc.br)
	var body []byte
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.DataFrame:
			if f.StreamID == cc.stream {
				body = append(body, f.Data()...)
				if f.StreamEnded() {
					if string(body) != string(payloads["13"]) {
						return fmt.Errorf("%d-byte body", len(body))
					}
					return nil
				}
			}
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			return fmt.Errorf("%v", f)
		}
	}
}
