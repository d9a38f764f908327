// Package demo runs the tiny origins of strait's default config, so that
// strait can be tried on a machine with nothing else running.
package demo

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Origin answers every request with its name and the path it was asked.
type Origin struct {
	Name string
	srv  *http.Server
}

// Serve serves on ln in the background.
func Serve(name string, ln net.Listener) *Origin {
	o := &Origin{Name: name}
	o.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Origin", name)
			w.Write([]byte(name + "\n"))
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		if err := o.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic(err)
		}
	}()
	return o
}

// Stop shuts the origin down.
func (o *Origin) Stop(ctx context.Context) error { return o.srv.Shutdown(ctx) }
