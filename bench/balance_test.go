package main

import (
	"fmt"
	"testing"

	straitconfig "github.com/straitproxy/strait/config"
)

// Every strait-* target's config is one strait accepts, with the
// target's policy and the origin's ports as the cluster's endpoints.
func TestStraitBalanceConf(t *testing.T) {
	b := &bench{oports: []int{9001, 9002, 9003}}
	for _, bt := range balanceTargets {
		cfg, err := straitconfig.Parse(bt.name+".yaml", []byte(b.straitBalanceConf(8000, bt.policy)))
		if err != nil {
			t.Errorf("%s: %v", bt.name, err)
			continue
		}
		if len(cfg.Listeners) != 1 || cfg.Listeners[0].Address != "127.0.0.1:8000" {
			t.Errorf("%s: listeners %+v, want one on 127.0.0.1:8000", bt.name, cfg.Listeners)
		}
		if len(cfg.Clusters) != 1 {
			t.Fatalf("%s: %d clusters, want 1", bt.name, len(cfg.Clusters))
		}
		c := cfg.Clusters[0]
		if c.Balance != bt.policy {
			t.Errorf("%s: balance %q, want %q", bt.name, c.Balance, bt.policy)
		}
		if fmt.Sprint(c.Endpoints) != "[127.0.0.1:9001 127.0.0.1:9002 127.0.0.1:9003]" {
			t.Errorf("%s: endpoints %q", bt.name, c.Endpoints)
		}
	}
}

func TestPickRef(t *testing.T) {
	for _, tc := range []struct {
		ref, targets, want string
	}{
		{"", "direct,strait,nginx", "strait"},
		{"", "direct,strait-rr,strait-lr,strait-ring", "strait-rr"},
		{"", "strait-lr,strait-rr", "strait-lr"},
		{"nginx", "strait,nginx", "nginx"},
		{"", "direct", "direct"},
	} {
		targets, err := pickTargets(tc.targets, false)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := pickRef(tc.ref, targets); err != nil || got != tc.want {
			t.Errorf("pickRef(%q, %s) = %q, %v; want %q", tc.ref, tc.targets, got, err, tc.want)
		}
	}
	if _, err := pickRef("haproxy", []string{"strait", "nginx"}); err == nil {
		t.Error("pickRef accepted a -ref that is not measured")
	}
}
