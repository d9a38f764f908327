package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/balance"
)

// TestRingMatchesNginx: for 10,000 keys, nginx's "hash $arg_k consistent"
// over weighted endpoints and strait's balance.Ring over the same
// endpoints and weights pick the same endpoint for every key.
func TestRingMatchesNginx(t *testing.T) {
	weights := []int{1, 3, 1, 2, 1}
	var eps []balance.Endpoint
	var servers strings.Builder
	for _, w := range weights {
		var addr string
		addr = startGoOrigin(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			io.WriteString(rw, addr)
		}))
		eps = append(eps, balance.Endpoint{Name: addr, Weight: w})
		fmt.Fprintf(&servers, "server %s weight=%d;\n", addr, w)
	}
	proxyAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	n := startNginx(t, nil, fmt.Sprintf(`upstream u {
        hash $arg_k consistent;
        %s
        keepalive 8;
    }
    server {
        listen %s;
        location / {
            proxy_pass http://u;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }`, servers.String(), proxyAddr))
	waitPort(t, proxyAddr, 10*time.Second, n.p.exited)

	ring := balance.NewRing(eps)
	client := newClient(true)
	mismatches := 0
	for k := range 10000 {
		key := "key-" + strconv.Itoa(k*7919)
		resp, err := client.Get("http://" + proxyAddr + "/?k=" + key)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := eps[ring.Pick([]byte(key))].Name; string(body) != want {
			if mismatches++; mismatches <= 5 {
				t.Errorf("key %q: nginx chose %s, strait %s", key, body, want)
			}
		}
	}
	if mismatches > 0 {
		t.Errorf("%d of 10000 keys differ", mismatches)
	}
}

// TestRefusingEndpoint: with one of two endpoints refusing connections,
// every request succeeds, POSTs included (nothing was sent to the one
// that refused), through the binary.
func TestRefusingEndpoint(t *testing.T) {
	good := startGoOrigin(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(rw, "ok")
	}))
	refused := closedAddr(t)
	for _, policy := range []string{"round_robin", "random", "least_request", "ring_hash", "maglev"} {
		t.Run(policy, func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			runConfig(t, t.TempDir(), "r.yaml", fmt.Sprintf(`listeners:
  - {address: %s, routes: [{cluster: c}]}
clusters:
  - {name: c, endpoints: [%q, %q], balance: %s}
`, addr, refused, good, policy), addr)
			client := newClient(true)
			failed := 0
			for i := range 100 {
				var resp *http.Response
				var err error
				if i%5 == 0 {
					resp, err = client.Post("http://"+addr+"/p", "text/plain", strings.NewReader("body"))
				} else {
					resp, err = client.Get("http://" + addr + "/g?k=" + strconv.Itoa(i))
				}
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed++
				}
			}
			if failed > 0 {
				t.Errorf("%d of 100 requests failed", failed)
			}
		})
	}
}

// TestResetPOST: a POST whose endpoint resets the connection after
// reading it is not sent again (it may have been acted on); with the
// route's idempotency key it is, to the other endpoint. Through the
// binary.
func TestResetPOST(t *testing.T) {
	var resets atomic.Int64
	resetting := startRawOrigin(t, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		resets.Add(1)
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	var served atomic.Int64
	good := startGoOrigin(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		served.Add(1)
		io.WriteString(rw, "ok")
	}))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, t.TempDir(), "p.yaml", fmt.Sprintf(`listeners:
  - address: %s
    routes:
      - {path: /keyed, cluster: c, idempotency_key: Idempotency-Key}
      - {cluster: c}
clusters:
  - {name: c, endpoints: [%q, %q], balance: ring_hash, hash_key: "header:X-K", outlier: {enabled: off}}
`, addr, resetting, good), addr)
	// Keys whose first try goes to the resetting endpoint.
	ring := balance.NewRing([]balance.Endpoint{{Name: resetting, Weight: 1}, {Name: good, Weight: 1}})
	key := ""
	for i := 0; key == ""; i++ {
		if k := "k" + strconv.Itoa(i); ring.Pick([]byte(k)) == 0 {
			key = k
		}
	}
	post := func(path string, fields ...string) int {
		req, _ := http.NewRequest("POST", "http://"+addr+path, strings.NewReader("charge 10"))
		req.Header.Set("X-K", key)
		for i := 0; i+1 < len(fields); i += 2 {
			req.Header.Set(fields[i], fields[i+1])
		}
		resp, err := newClient(false).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("/plain"); code != 502 || served.Load() != 0 {
		t.Errorf("POST reset after its body: %d, the other endpoint served %d; want 502 and none", code, served.Load())
	}
	if code := post("/keyed", "Idempotency-Key", "abc"); code != 200 || served.Load() != 1 {
		t.Errorf("POST with the key: %d, the other endpoint served %d; want 200 and 1", code, served.Load())
	}
	if code := post("/keyed"); code != 502 {
		t.Errorf("POST on the keyed route without the key: %d, want 502", code)
	}
	t.Logf("the resetting endpoint read %d POSTs", resets.Load())
}
