package e2e

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// dashboardState is what the dashboard shows, read from its DOM.
type dashboardState struct {
	State     string            `json:"state"` // of its event stream: live once it reads
	Total     float64           `json:"total"` // requests answered
	Rate      float64           `json:"rate"`  // requests per second
	Endpoints map[string]string `json:"endpoints"`
}

const readDashboard = `(() => ({
	state: document.getElementById("state").dataset.state,
	total: +document.getElementById("total").dataset.value,
	rate: +document.getElementById("rps").dataset.value,
	endpoints: Object.fromEntries([...document.querySelectorAll("tr[data-endpoint]")].map(e => [e.dataset.endpoint, e.dataset.state])),
}))()`

// TestDashboard opens the admin API's dashboard in headless Chromium: it
// loads without console errors, its request counters move while requests
// go through strait, and an endpoint shows as unhealthy within 3 s of its
// origin stopping. With STRAIT_SCREENSHOT=FILE (relative to the module
// root) it saves a screenshot taken under load, and loads for longer so
// the charts have a history.
func TestDashboard(t *testing.T) {
	chromium := needTool(t, "chromium")
	const (
		loadWorkers = 4
		unhealthyBy = 3 * time.Second
	)
	loadFor, loadRequests := 2*time.Second, int64(4000)
	shot := os.Getenv("STRAIT_SCREENSHOT")
	if shot != "" {
		loadFor, loadRequests = 12*time.Second, 1e6
		if !filepath.IsAbs(shot) {
			shot = filepath.Join(moduleRoot, shot)
		}
	}

	// The origins answer mostly 200, and some 301, 404 and 500, after up
	// to 5 ms.
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(rand.N(5 * time.Millisecond))
		switch r.URL.Path {
		case "/old":
			http.Redirect(w, r, "/", http.StatusMovedPermanently)
		case "/missing":
			http.NotFound(w, r)
		case "/fail":
			http.Error(w, "failed", http.StatusInternalServerError)
		default:
			io.WriteString(w, "ok\n")
		}
	})
	a := startGoOrigin(t, origin)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bSrv := &http.Server{Handler: origin, ReadHeaderTimeout: 10 * time.Second}
	go bSrv.Serve(ln)
	t.Cleanup(func() { bSrv.Close() })
	b := ln.Addr().String()

	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, t.TempDir(), "dashboard.yaml", fmt.Sprintf(`listeners:
  - name: web
    address: %s
    routes: [{cluster: c}]
clusters:
  - name: c
    endpoints: [%q, %q]
    health_check: {kind: http, path: /, interval: 200ms, timeout: 500ms, healthy: 1, unhealthy: 1}
`, addr, a, b), addr)
	admin := "http://" + adminAddrOf(t, p)

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests may run as root
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 600),
	)...)
	defer cancelAlloc() // waits for the browser to exit
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	defer cancelTimeout()

	// Console reads Runtime.consoleAPICalled, Runtime.exceptionThrown and
	// Log.entryAdded (the browser's own errors: a failed load, a refused
	// script or style).
	messages := chromedp.Console(ctx)
	var mu sync.Mutex
	var consoleErrors []string
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				consoleErrors = append(consoleErrors, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
				mu.Unlock()
			}
		}
	}()
	defer func() { cancelTimeout(); <-consoleDone }()
	checkConsole := func(when string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		for _, e := range consoleErrors {
			t.Errorf("%s: console: %s", when, e)
		}
		consoleErrors = nil
	}

	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate(admin+"/")); err != nil {
		t.Fatalf("opening %s/: %v", admin, err)
	}
	t.Logf("chromium opened the dashboard in %v", time.Since(start).Round(time.Millisecond))
	read := func() dashboardState {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[dashboardState](readDashboard))
		if err != nil {
			t.Fatalf("reading the dashboard: %v", err)
		}
		return s
	}
	// waitFor polls the page until ok, or fails after timeout.
	waitFor := func(what string, timeout time.Duration, ok func(dashboardState) bool) dashboardState {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			s := read()
			if ok(s) {
				return s
			}
			if time.Now().After(deadline) {
				checkConsole("failing")
				t.Fatalf("after %v, the dashboard shows %+v: want %s", timeout, s, what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	s := waitFor("a live stream and both endpoints healthy", 10*time.Second, func(s dashboardState) bool {
		return s.State == "live" && s.Endpoints[a] == "healthy" && s.Endpoints[b] == "healthy"
	})
	checkConsole("loaded")
	before := s.Total

	// Load: a few clients in a loop, bounded in time and count.
	var sent, failed atomic.Int64
	loadStart := time.Now()
	loadEnd := loadStart.Add(loadFor)
	var wg sync.WaitGroup
	client := newClient(true)
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for range loadWorkers {
		wg.Go(func() {
			for time.Now().Before(loadEnd) {
				n := sent.Add(1)
				if n > loadRequests {
					return
				}
				path := "/"
				switch n % 20 {
				case 0:
					path = "/old"
				case 1:
					path = "/missing"
				case 2:
					path = "/fail"
				}
				resp, err := client.Get("http://" + addr + path)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	sawRate := false
	s = waitFor("the request count and rate to move under load", loadFor+3*time.Second, func(s dashboardState) bool {
		sawRate = sawRate || s.Rate > 0
		return sawRate && s.Total > before
	})
	t.Logf("under load the dashboard went from %v to %v requests answered (rate seen)", before, s.Total)
	if shot != "" {
		time.Sleep(time.Until(loadEnd.Add(-time.Second)))
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(shot, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("saved a screenshot to %s", shot)
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Errorf("%d of %d requests failed under load", f, min(sent.Load(), loadRequests))
	}
	checkConsole("under load")

	bSrv.Close()
	stopped := time.Now()
	s = waitFor(b+" unhealthy", unhealthyBy, func(s dashboardState) bool {
		return strings.Contains(s.Endpoints[b], "unhealthy")
	})
	took := time.Since(stopped)
	t.Logf("%s showed as unhealthy %v after its origin stopped", b, took.Round(time.Millisecond))
	if took > unhealthyBy {
		t.Errorf("%s showed as unhealthy only after %v, want within %v", b, took, unhealthyBy)
	}
	if s.Endpoints[a] != "healthy" {
		t.Errorf("%s shows as %q, want healthy", a, s.Endpoints[a])
	}
	checkConsole("after the origin stopped")
}
