package admin

import "testing"

func TestHostAllowed(t *testing.T) {
	a := &API{Hosts: []string{"strait.internal"}}
	for host, want := range map[string]bool{
		"127.0.0.1":                 true,
		"127.0.0.1:9901":            true,
		"127.3.4.5:80":              true,
		"[::1]:9901":                true,
		"::1":                       true,
		"localhost:9901":            true,
		"LOCALHOST":                 true,
		"strait.internal:9901":      true,
		"STRAIT.internal":           true,
		"":                          false,
		"evil.example":              false,
		"127.0.0.1.evil.example":    false,
		"localhost.evil.example":    false,
		"10.0.0.1:9901":             false,
		"[::ffff:10.0.0.1]:9901":    false,
		"strait.internal.evil:9901": false,
		"0.0.0.0:9901":              false,
	} {
		if got := a.hostAllowed(host); got != want {
			t.Errorf("hostAllowed(%q) = %v, want %v", host, got, want)
		}
	}
}
