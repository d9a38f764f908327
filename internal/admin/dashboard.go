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
	// maxStreamLife bounds one stream.
	maxStreamLife = 5 * time.Minute
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

func (a *API) read() *sample {
	var s *sample
	if a.Metrics != nil {
		// A collector that fails leaves the others' families.
		families, _ := a.Metrics.Registry().Gather()
		s = readSample(families, time.Now())
	} else {
		s = readSample(nil, time.Now())
	}
	clusters := a.cur().clusters
	for _, name := range slices.Sorted(maps.Keys(clusters)) {
		c := clusters[name]
		s.clusters = append(s.clusters, clusterSample{name, c.Endpoints(), c.Stats()})
	}
	return s
}

// summary answers one snapshot, its rates over at least the last second
// (at most two) however often it is asked: it keeps a sample a second of
// its own, apart from the streams'.
func (a *API) summary(w http.ResponseWriter, r *http.Request) {
	a.sampleMu.Lock()
	cur := a.read()
	var prev *sample
	for _, s := range a.kept { // oldest first: the newest a second old
		if cur.at.Sub(s.at) >= time.Second {
			prev = s
		}
	}
	if prev == nil && len(a.kept) > 0 {
		prev = a.kept[0] // none a second old yet: the oldest there is
	}
	if n := len(a.kept); n == 0 || cur.at.Sub(a.kept[n-1].at) >= time.Second {
		a.kept = append(a.kept, cur)
		if len(a.kept) > 3 {
			a.kept = a.kept[1:]
		}
	}
	a.sampleMu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
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
	// A stream ends after maxStreamLife, and the page opens another: a
	// client that stops reading but keeps its socket holds a slot only
	// until then (the kernel would take events for an hour before the
	// write deadline met a full buffer).
	end := time.Now().Add(maxStreamLife)
	for time.Now().Before(end) {
		cur := a.read()
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
