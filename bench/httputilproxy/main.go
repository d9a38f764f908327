// Command httputilproxy is the baseline the benchmark measures strait
// against: Go's standard httputil.ReverseProxy in an http.Server, with
// nothing added. It is what a Go developer gets in a dozen lines, so it
// shows what strait's own codec and pool are worth.
//
//	httputilproxy -listen 127.0.0.1:8081 -upstream http://127.0.0.1:8080
package main

import (
	"flag"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "`address` to listen on")
	upstream := flag.String("upstream", "", "upstream `URL` (http://host:port)")
	flag.Parse()
	u, err := url.Parse(*upstream)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		fmt.Fprintf(os.Stderr, "httputilproxy: -upstream %q: want http://host:port\n", *upstream)
		os.Exit(2)
	}

	// The default Transport keeps only 2 idle connections per host, so
	// with 50 concurrent clients it would dial (and leave in TIME_WAIT)
	// a new upstream connection for most requests. 1000 lets it pool like
	// the other proxies do; everything else stays at Go's defaults.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 1000
	tr.MaxIdleConnsPerHost = 1000

	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = tr
	// No access log. Errors (an upstream that fails) still go to stderr
	// through the log package, which the benchmark shows if it is not
	// empty: a proxy that logs errors under load has a problem to report.

	srv := &http.Server{Addr: *listen, Handler: rp}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "httputilproxy:", err)
		os.Exit(1)
	}
}
