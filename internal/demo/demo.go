// Package demo runs the tiny origins of strait's default config, so that
// strait can be tried on a machine with nothing else running.
package demo

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Origin answers every request with its name and the path it was asked.
type Origin struct {
	Name    string
	srv     *http.Server
	ln      net.Listener
	closing atomic.Bool // answers say Connection: close
}

// Serve serves on ln in the background.
func Serve(name string, ln net.Listener) *Origin {
	o := &Origin{Name: name, ln: ln}
	o.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Origin", name)
			if o.closing.Load() {
				w.Header().Set("Connection", "close")
			}
			w.Write([]byte(name + "\n"))
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	// Serve ends when the listener closes: at Stop, or when strait stops
	// before it started (its sockets closed).
	go o.srv.Serve(ln)
	return o
}

// Handover stops accepting and ends keep-alive, leaving the socket to the
// new process of an upgrade: connections the new process made to this
// origin are told Connection: close on their next response, rather than
// closed under a request when this process stops.
func (o *Origin) Handover() {
	// Not SetKeepAlivesEnabled(false): it closes idle connections at
	// once, under requests on their way.
	o.closing.Store(true)
	o.ln.Close()
}

// Stop shuts the origin down.
func (o *Origin) Stop(ctx context.Context) error { return o.srv.Shutdown(ctx) }
