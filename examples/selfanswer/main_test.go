package main

import (
	"io"
	"net/http"
	"testing"

	"github.com/straitproxy/strait/internal/proxytest"
	"github.com/straitproxy/strait/proxy"
)

func TestSelfAnswer(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "origin key="+r.Header.Get("X-Api-Key")+" auth="+r.Header.Get("X-Authenticated"))
	}))
	_, addr := proxytest.Proxy(t, phases(origin, "k1"), proxy.Options{})
	c := proxytest.Client()
	for _, tc := range []struct {
		path, key  string
		wantStatus int
		wantBody   string
	}{
		{"/healthz", "", 200, "ok\n"},
		{"/healthz?probe=1", "", 200, "ok\n"},
		{"/data", "", 401, "missing or wrong X-Api-Key\n"},
		{"/data", "wrong", 401, "missing or wrong X-Api-Key\n"},
		{"/data", "k1", 200, "origin key= auth=yes"},
	} {
		req, _ := http.NewRequest("GET", "http://"+addr+tc.path, nil)
		if tc.key != "" {
			req.Header.Set("X-Api-Key", tc.key)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.wantStatus || string(body) != tc.wantBody {
			t.Errorf("%s key %q: %d %q, want %d %q", tc.path, tc.key, resp.StatusCode, body, tc.wantStatus, tc.wantBody)
		}
	}
}
