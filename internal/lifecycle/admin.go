package lifecycle

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/internal/admin"
)

// AdminAddr is where cfg's admin listener goes, or "" for none.
func AdminAddr(cfg *config.Config) string {
	switch a := cfg.Admin.Address; a {
	case config.AdminOff:
		return ""
	case "":
		return config.DefaultAdminAddress
	default:
		return a
	}
}

// startAdmin serves the admin API of cfg, on a socket of its own.
func (p *Process) startAdmin(cfg *config.Config) error {
	api := &admin.API{Metrics: p.o.Metrics, Clusters: p.gw.Clusters, Pprof: cfg.Admin.Pprof}
	if p.o.Load != nil {
		api.Reload = func() admin.ReloadResult { return p.Reload("admin") }
	}
	for _, h := range cfg.Admin.Hosts {
		api.Hosts = append(api.Hosts, strings.ToLower(h))
	}
	if f := cfg.Admin.TokenFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("admin token_file: %w", err)
		}
		if api.Token = strings.TrimSpace(string(b)); api.Token == "" {
			return fmt.Errorf("admin token_file %s is empty", f)
		}
	}
	shown, err := showConfig(cfg)
	if err != nil {
		return fmt.Errorf("admin: showing the config: %w", err)
	}
	api.Config = shown
	addr := AdminAddr(cfg)
	ln, err := p.listen("admin", addr)
	if err != nil {
		return &ListenError{"admin listener", addr, err}
	}
	srv := &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second}
	fmt.Fprintf(p.o.Stderr, "strait: admin API on http://%s\n", ln.Addr())
	go func() {
		if err := srv.Serve(ln); err != http.ErrServerClosed {
			p.errc <- fmt.Errorf("admin listener: %w", err)
		}
	}()
	p.api, p.adminHS = api, srv
	return nil
}

// showConfig writes cfg as YAML without the keys left at their zero
// value, so /config shows what the file set, with no secrets: the values
// of header rules (an Authorization sent upstream, say) are redacted, and
// the admin token is in a file of its own, which is named, not read.
func showConfig(cfg *config.Config) ([]byte, error) {
	shown := *cfg
	shown.Listeners = slices.Clone(cfg.Listeners)
	for i := range shown.Listeners {
		l := &shown.Listeners[i]
		l.Routes = slices.Clone(l.Routes)
		for j := range l.Routes {
			r := &l.Routes[j]
			for _, h := range []*config.HeaderRules{&r.RequestHeaders, &r.ResponseHeaders} {
				h.Set, h.Add = redacted(h.Set), redacted(h.Add)
			}
		}
	}
	b, err := yaml.Marshal(&shown)
	if err != nil {
		return nil, err
	}
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	v = prune(v)
	// A sampling of 0 is no default: keep it.
	if t := cfg.Tracing; t.Sampling.Set && t.Sampling.Value == 0 {
		if m, ok := v.(map[string]any)["tracing"].(map[string]any); ok {
			m["sampling"] = 0
		}
	}
	return yaml.Marshal(v)
}

func redacted(hs []config.HeaderValue) []config.HeaderValue {
	out := make([]config.HeaderValue, len(hs))
	for i, h := range hs {
		out[i] = config.HeaderValue{Name: h.Name, Value: "(redacted)"}
	}
	return out
}

// prune drops zero values (empty, 0, false, "0s") from maps, deeply.
func prune(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if e = prune(e); e == nil {
				delete(x, k)
			} else {
				x[k] = e
			}
		}
		if len(x) == 0 {
			return nil
		}
	case []any:
		for i, e := range x {
			if p := prune(e); p != nil {
				x[i] = p
			}
		}
		if len(x) == 0 {
			return nil
		}
	case string:
		if x == "" || x == "0s" {
			return nil
		}
	case int:
		if x == 0 {
			return nil
		}
	case bool:
		if !x {
			return nil
		}
	}
	return v
}
