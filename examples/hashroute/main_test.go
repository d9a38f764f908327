package main

import (
	"io"
	"net/http"
	"testing"

	"github.com/straitproxy/strait/internal/proxytest"
	"github.com/straitproxy/strait/proxy"
)

// TestHashRoute: each user sticks to one upstream, users spread over
// both, and a drained upstream's users move to the other while the rest
// stay where they were.
func TestHashRoute(t *testing.T) {
	named := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
	}
	a, b := proxytest.Origin(t, named("a")), proxytest.Origin(t, named("b"))
	c, err := users([]string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	_, addr := proxytest.Proxy(t, phases(c), proxy.Options{})
	client := proxytest.Client()
	get := func(user string) string {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Header.Set("X-User", user)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	users := []string{"ann", "bob", "cy", "dee", "eve", "fay", "gus", "hal", "ivy", "jo", "kim", "lee"}
	first := map[string]string{}
	count := map[string]int{}
	for _, u := range users {
		first[u] = get(u)
		count[first[u]]++
		for range 3 {
			if got := get(u); got != first[u] {
				t.Fatalf("%s went to %s, then to %s", u, first[u], got)
			}
		}
	}
	if count["a"] == 0 || count["b"] == 0 {
		t.Fatalf("every user went to one upstream: %v", count)
	}
	if err := c.Drain(a); err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if got := get(u); got != "b" {
			t.Errorf("with a draining, %s went to %s", u, got)
		}
	}
	c.Undrain(a)
	for _, u := range users {
		if got := get(u); got != first[u] {
			t.Errorf("undrained, %s went to %s, first to %s", u, got, first[u])
		}
	}
}
