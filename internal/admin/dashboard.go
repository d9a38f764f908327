package admin

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"
)

// Limits of the dashboard's event streams.
const (
	// eventInterval is how often /events sends a snapshot: the dashboard's
	// refresh.
	eventInterval = time.Second
	// maxEventStreams bounds the /events streams open at once: each
	// gathers every metric once a second, and a page left open in many
	// tabs should not add up to a load.
	maxEventStreams = 16
	// eventWriteTimeout bounds writing one event: a client that stops
	// reading is dropped rather than holding a stream.
	eventWriteTimeout = 10 * time.Second
	// eventRetry is how long a browser waits before it reconnects a stream
	// that broke, in milliseconds.
	eventRetry = 2000
)

// dashboardHTML is the page at /: plain HTML, CSS and JavaScript, with
// charts drawn in SVG by hand, that reads /events.
//
//go:embed dashboard.html
var dashboardHTML []byte

// dashboardCSP lets the page run its own script and style, and talk to
// the admin listener only.
var dashboardCSP = contentPolicy(dashboardHTML)

// contentPolicy is the Content-Security-Policy of page: its one inline
// script and style block allowed by hash, nothing else but connections
// to where it came from.
func contentPolicy(page []byte) string {
	hash := func(start, end string) string {
		_, rest, _ := bytes.Cut(page, []byte(start))
		body, _, _ := bytes.Cut(rest, []byte(end))
		sum := sha256.Sum256(body)
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	return "default-src 'none'; script-src " + hash("<script>", "</script>") +
		"; style-src " + hash("<style>", "</style>") +
		"; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

func (a *API) dashboard(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	w.Write(dashboardHTML)
}

// sample reads the metrics and the clusters now, and keeps what it read
// as the previous sample of /summary.
func (a *API) sample() *sample {
	a.sampleMu.Lock()
	defer a.sampleMu.Unlock()
	s := a.read()
	a.last = s
	return s
}

func (a *API) read() *sample {
	var s *sample
	if a.Metrics != nil {
		// A collector that fails leaves the others' families.
		families, _ := a.Metrics.Registry().Gather()
		s = readSample(families, time.Now())
	} else {
		s = readSample(nil, time.Now())
	}
	for _, name := range slices.Sorted(maps.Keys(a.Clusters)) {
		c := a.Clusters[name]
		s.clusters = append(s.clusters, clusterSample{name, c.Endpoints(), c.Stats()})
	}
	return s
}

// summary answers one snapshot, its rates over the time since the
// previous sample (of /summary or of a stream).
func (a *API) summary(w http.ResponseWriter, r *http.Request) {
	a.sampleMu.Lock()
	prev := a.last
	cur := a.read()
	a.last = cur
	a.sampleMu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(makeSnapshot(prev, cur))
}

// events streams a snapshot a second as Server-Sent Events, until the
// client leaves or the server closes.
func (a *API) events(w http.ResponseWriter, r *http.Request) {
	if a.streams.Add(1) > maxEventStreams {
		a.streams.Add(-1)
		w.Header().Set("Retry-After", "10")
		text(w, http.StatusServiceUnavailable, fmt.Sprintf("admin: %d event streams are open, the most there may be: close one", maxEventStreams))
		return
	}
	defer a.streams.Add(-1)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	tick := time.NewTicker(eventInterval)
	defer tick.Stop()
	buf := fmt.Appendf(nil, "retry: %d\n", eventRetry)
	var prev *sample
	for {
		cur := a.sample()
		b, err := json.Marshal(makeSnapshot(prev, cur))
		if err != nil {
			return
		}
		prev = cur
		buf = append(append(append(buf, "data: "...), b...), "\n\n"...)
		rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
		if _, err := w.Write(buf); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		buf = buf[:0]
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}
