package health

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestChecker: an endpoint whose checks fail is marked unhealthy after
// Unhealthy failures, and healthy again after Healthy passes; a closed
// port fails a TCP check.
func TestChecker(t *testing.T) {
	var good atomic.Bool
	good.Store(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || !good.Load() {
			w.WriteHeader(503)
			return
		}
		io.WriteString(w, "status: ok")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()

	c := StartChecker([]string{ln.Addr().String(), closedAddr}, nil, CheckConfig{
		Interval: 20 * time.Millisecond, Timeout: time.Second, Healthy: 2, Unhealthy: 2,
		Path: "/healthz", BodyContains: "ok",
	}, slog.New(slog.DiscardHandler))
	defer c.Stop()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(3 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("not %s within 3 s", what)
			}
		}
	}
	waitFor("the closed port unhealthy", func() bool { return !c.Healthy(1) })
	if !c.Healthy(0) {
		t.Fatal("a passing endpoint is unhealthy")
	}
	good.Store(false)
	waitFor("the failing endpoint unhealthy", func() bool { return !c.Healthy(0) })
	good.Store(true)
	waitFor("the endpoint healthy again", func() bool { return c.Healthy(0) })
}
