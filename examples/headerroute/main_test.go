package main

import (
	"io"
	"net/http"
	"testing"

	"github.com/straitproxy/strait/internal/proxytest"
	"github.com/straitproxy/strait/proxy"
)

func named(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
}

func TestHeaderRoute(t *testing.T) {
	blue := proxytest.Origin(t, named("blue"))
	green := proxytest.Origin(t, named("green"))
	_, addr := proxytest.Proxy(t, phases(blue, green), proxy.Options{})
	c := proxytest.Client()
	for _, tc := range []struct{ header, want string }{
		{"", "blue"}, {"green", "green"}, {"GREEN", "green"}, {"blue", "blue"}, {"other", "blue"},
	} {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		if tc.header != "" {
			req.Header.Set("X-Backend", tc.header)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != tc.want {
			t.Errorf("X-Backend %q: answered by %q, want %q", tc.header, body, tc.want)
		}
	}
}
