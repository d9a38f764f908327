// Package admin is strait's admin API, on a listener of its own:
// /metrics, /live, /ready, /config, /clusters, endpoint drains, a live
// dashboard (/, /events, /summary), and optionally /debug/pprof/.
//
// Binding to loopback protects nothing from a browser: any page can send
// a request to 127.0.0.1, and with DNS rebinding read the answer under a
// name of its own. So every request must name a loopback address,
// localhost or a configured host in its Host field; a request that
// changes state must be a POST carrying the X-Strait-Admin field (which a
// page cannot send across origins without a preflight, and strait answers
// none); and with a token, every request must carry it as a bearer token.
package admin

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/cluster"
	"github.com/straitproxy/strait/internal/observe"
)

// StateHeader is the field a request that changes state must carry.
const StateHeader = "X-Strait-Admin"

// API is the admin API of one running config.
type API struct {
	Metrics  *observe.Metrics
	Clusters map[string]*cluster.Cluster
	// Config is the running config as shown by /config, secrets removed.
	Config []byte
	// Hosts are Host values accepted besides loopback addresses and
	// localhost, lower case.
	Hosts []string
	// Token, if set, must come with every request as
	// "Authorization: Bearer TOKEN".
	Token string
	Pprof bool // serve /debug/pprof/
	// Reload, if set, loads the config file again and runs it (POST
	// /reload); GET /reload shows its last result.
	Reload func() ReloadResult

	running atomic.Pointer[running] // what a reload made; nil: Clusters and Config
	reload  struct {
		sync.Mutex
		last *ReloadResult
	}
	ready   atomic.Bool
	streams atomic.Int32 // /events streams open

	sampleMu sync.Mutex
	kept     []*sample // /summary's samples, a second apart, oldest first
}

// running is a config's part of the API: its clusters and how /config
// shows it.
type running struct {
	clusters map[string]*cluster.Cluster
	config   []byte
}

// SetRunning makes a reloaded config's clusters and shown config the
// API's.
func (a *API) SetRunning(clusters map[string]*cluster.Cluster, config []byte) {
	a.running.Store(&running{clusters, config})
}

func (a *API) cur() *running {
	if r := a.running.Load(); r != nil {
		return r
	}
	return &running{a.Clusters, a.Config}
}

// ReloadResult is what a reload did: shown by GET /reload, and answered
// to POST /reload.
type ReloadResult struct {
	Time   time.Time `json:"time"`
	OK     bool      `json:"ok"`
	Source string    `json:"source"`           // what asked: SIGHUP, admin, watch
	Errors []string  `json:"errors,omitempty"` // file:line: key: message, one each
	// Changes say what the reload did: listeners added, removed or given
	// a new server, routes swapped, clusters replaced.
	Changes []string `json:"changes,omitempty"`
	// Conflict: the process could not reload now (an upgrade is under
	// way, it stops, it has no file), whatever the file says.
	Conflict bool `json:"conflict,omitempty"`
}

// SetReloaded records the result of a reload, whoever asked for it.
func (a *API) SetReloaded(r ReloadResult) {
	a.reload.Lock()
	a.reload.last = &r
	a.reload.Unlock()
}

func (a *API) reloadStatus(w http.ResponseWriter, r *http.Request) {
	a.reload.Lock()
	last := a.reload.last
	a.reload.Unlock()
	if last == nil {
		text(w, 404, "admin: no reload yet")
		return
	}
	writeJSON(w, 200, last)
}

func (a *API) doReload(w http.ResponseWriter, r *http.Request) {
	if a.Reload == nil {
		text(w, 409, "admin: this process has no config file to reload: strait runs from flags")
		return
	}
	res := a.Reload()
	status := 200
	switch {
	case res.Conflict:
		status = 409
	case !res.OK:
		status = 422 // the file is what is wrong; the running config stays
	}
	writeJSON(w, status, res)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// SetReady sets what /ready answers: 200 once strait serves, 503 while it
// starts or drains. A nil API (no admin listener) ignores it.
func (a *API) SetReady(ready bool) {
	if a != nil {
		a.ready.Store(ready)
	}
}

// Handler returns the API's handler.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.Metrics.Handler())
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, r *http.Request) { text(w, 200, "live") })
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		if a.ready.Load() {
			text(w, 200, "ready")
		} else {
			text(w, 503, "not ready")
		}
	})
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(a.cur().config)
	})
	mux.HandleFunc("GET /clusters", a.clusters)
	mux.HandleFunc("GET /reload", a.reloadStatus)
	mux.HandleFunc("POST /reload", a.doReload)
	mux.HandleFunc("GET /{$}", a.dashboard)
	mux.HandleFunc("GET /events", a.events)
	mux.HandleFunc("GET /summary", a.summary)
	mux.HandleFunc("POST /clusters/{name}/endpoints/{address}/drain", a.drain(true))
	mux.HandleFunc("POST /clusters/{name}/endpoints/{address}/undrain", a.drain(false))
	if a.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return a.guard(mux)
}

// guard refuses requests from where a browser's page could send them.
func (a *API) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.hostAllowed(r.Host) {
			text(w, http.StatusForbidden, "admin: Host not allowed: name a loopback address, localhost, or one of admin.hosts")
			return
		}
		// A page of another site may still send requests with a loopback
		// Host (an iframe holding /events streams, say): what browsers say
		// of where a request comes from is believed.
		if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
			text(w, http.StatusForbidden, "admin: requests from another site's pages are refused")
			return
		}
		if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host {
			text(w, http.StatusForbidden, "admin: requests from another origin's pages are refused")
			return
		}
		if a.Token != "" {
			// The scheme is case-insensitive (RFC 9110 §11.1).
			scheme, got, _ := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
			got = strings.TrimSpace(got)
			if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(got), []byte(a.Token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="strait admin"`)
				text(w, http.StatusUnauthorized, "admin: a bearer token is required")
				return
			}
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Header.Get(StateHeader) == "" {
			text(w, http.StatusForbidden, "admin: a request that changes state must carry "+StateHeader)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// hostAllowed reports whether host (a Host field, with or without a port)
// names a loopback address, localhost, or one of a.Hosts.
func (a *API) hostAllowed(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if host == "localhost" || slices.Contains(a.Hosts, host) {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// clusterState is what /clusters shows of a cluster.
type clusterState struct {
	Endpoints []cluster.Endpoint `json:"endpoints"`
	Stats     cluster.Stats      `json:"stats"`
}

func (a *API) clusters(w http.ResponseWriter, r *http.Request) {
	clusters := a.cur().clusters
	out := make(map[string]clusterState, len(clusters))
	for name, c := range clusters {
		out[name] = clusterState{c.Endpoints(), c.Stats()}
	}
	writeJSON(w, 200, out)
}

func (a *API) drain(draining bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := a.cur().clusters[r.PathValue("name")]
		if c == nil {
			text(w, 404, "admin: no cluster "+r.PathValue("name"))
			return
		}
		var err error
		if draining {
			err = c.Drain(r.PathValue("address"))
		} else {
			err = c.Undrain(r.PathValue("address"))
		}
		switch {
		case errors.Is(err, cluster.ErrNoEndpoint):
			text(w, 404, "admin: "+err.Error())
		case err != nil:
			text(w, 500, "admin: "+err.Error())
		default:
			a.clusters(w, r)
		}
	}
}

func text(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write([]byte(msg + "\n"))
}
