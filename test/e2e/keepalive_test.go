package e2e

import (
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestOriginClosesKeepAlive: nginx closes idle upstream connections after
// 1 s and every connection after 20 requests, while clients keep strait
// busy with pauses long enough for pooled connections to go stale. Every
// request must succeed.
func TestOriginClosesKeepAlive(t *testing.T) {
	body := []byte("keepalive body\n")
	ngx := startNginx(t, map[string][]byte{"k.txt": body}, "keepalive_timeout 1s;\n    keepalive_requests 20;")
	px := startStrait(t, clusterYAML(ngx.Addr), nil)

	const (
		workers  = 4
		requests = 300
	)
	var failures atomic.Int64
	var worstNs atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	deadline := time.Now().Add(30 * time.Second) // a bound, never reached when all is well
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			// Two pauses past nginx's 1 s keepalive_timeout at random
			// points: while one worker rests, the connections the others
			// pooled meanwhile sit idle and nginx closes them.
			longAt := map[int]bool{rng.IntN(requests): true, rng.IntN(requests): true}
			c := newClient(true)
			for i := 0; i < requests && time.Now().Before(deadline); i++ {
				reqStart := time.Now()
				err := func() error {
					resp, err := c.Get(px.URL + "/k.txt")
					if err != nil {
						return err
					}
					defer resp.Body.Close()
					got, err := io.ReadAll(resp.Body)
					if err != nil {
						return err
					}
					if resp.StatusCode != 200 || string(got) != string(body) {
						return fmt.Errorf("status %d, body %q", resp.StatusCode, got)
					}
					return nil
				}()
				for d := int64(time.Since(reqStart)); ; {
					old := worstNs.Load()
					if d <= old || worstNs.CompareAndSwap(old, d) {
						break
					}
				}
				if err != nil {
					failures.Add(1)
					firstErr.Do(func() { t.Errorf("worker %d request %d: %v", w, i, err) })
				}
				if longAt[i] {
					time.Sleep(1050*time.Millisecond + time.Duration(rng.IntN(100))*time.Millisecond)
				} else {
					time.Sleep(time.Duration(rng.IntN(6000)) * time.Microsecond)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cn := px.Srv.Counters()
	total := cn.Requests.Load()
	t.Logf("%d requests in %v, %d failed, slowest %v; upstream dials=%d stale=%d errors=%d; strait answered %d",
		workers*requests, elapsed.Round(time.Millisecond), failures.Load(), time.Duration(worstNs.Load()).Round(time.Microsecond),
		cn.UpstreamDials.Load(), cn.UpstreamStale.Load(), cn.UpstreamErrors.Load(), total)
	if failures.Load() != 0 {
		t.Errorf("%d of %d requests failed, want 0", failures.Load(), workers*requests)
	}
	if total != workers*requests {
		t.Errorf("strait saw %d requests, want %d (the time bound cut the run short?)", total, workers*requests)
	}
	retried := 0
	for _, e := range px.waitAccessLog(t, workers*requests) {
		if e.Attempts > 1 {
			retried++
		}
		if e.Status != 200 {
			t.Errorf("access log: %+v", e)
		}
	}
	t.Logf("requests sent upstream twice (retried on a reused connection the origin closed): %d", retried)
	// keepalive_requests 20 alone needs a new connection every 20
	// requests; many more dials mean pooled connections were wasted.
	if min := int64(workers * requests / 20); cn.UpstreamDials.Load() < min {
		t.Errorf("only %d upstream dials for %d requests with keepalive_requests 20", cn.UpstreamDials.Load(), workers*requests)
	}
}
