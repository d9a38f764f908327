package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runConfig runs the strait binary on a config whose one listener is at
// addr (from freePort), written to a file in dir, until the test ends.
func runConfig(t *testing.T, dir, name, yamlText, addr string) *proc {
	t.Helper()
	path := writeFile(t, dir, name, []byte(yamlText))
	p := startProc(t, exec.Command(straitBin, "run", "-c", path))
	waitPort(t, addr, 10*time.Second, p.exited)
	return p
}

// listenerYAML is a config with one listener at addr sending everything
// to the endpoints, followed by more (top-level keys).
func listenerYAML(addr string, endpoints []string, more string) string {
	return fmt.Sprintf("listeners:\n  - address: %s\n    routes: [{cluster: origin}]\nclusters:\n  - name: origin\n    endpoints: [%s]\n%s",
		addr, strings.Join(endpoints, ", "), more)
}

// TestConfigResponseHeadLimit checks that limits.max_header_bytes bounds
// response heads as well as request heads, as docs/config.md says: a
// 100 KiB response head passes under 1MiB and gives 502 under the 64 KiB
// default.
func TestConfigResponseHeadLimit(t *testing.T) {
	const fields, fieldSize = 10, 10 << 10 // 100 KiB of head
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range fields {
			w.Header().Set(fmt.Sprintf("X-Big-%d", i), strings.Repeat("x", fieldSize))
		}
		io.WriteString(w, "big head\n")
	}))
	dir := t.TempDir()
	for _, tc := range []struct {
		name, limits string
		want         int
	}{
		{"Default", "", 502},
		{"1MiB", "limits:\n  max_header_bytes: 1MiB\n", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			p := runConfig(t, dir, tc.name+".yaml", listenerYAML(addr, []string{origin}, tc.limits), addr)
			resp, err := newClient(false).Get("http://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d; body %q\nstrait:\n%s", resp.StatusCode, tc.want, trunc(body), tail(p.stderr.String(), 10))
			}
			if tc.want == 200 && len(resp.Header.Get("X-Big-9")) != fieldSize {
				t.Errorf("X-Big-9 has %d bytes, want %d", len(resp.Header.Get("X-Big-9")), fieldSize)
			}
		})
	}
}
