package observe

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/proxy"
)

// TestTracingAgainstClients: what a client controls cannot force
// sampling (a trace id ending in zeros, which a ratio sampler always
// takes), name spans (an unknown method is _OTHER), or swell attributes
// (cut at 512 bytes).
func TestTracingAgainstClients(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tr, err := newTracer(&config.Tracing{Exporter: "otlp_http", Sampling: config.Ratio{Value: 0.01, Set: true}},
		sdktrace.WithSyncer(exp))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	request := func(method, path, traceparent string) {
		s := &proxy.Session{Request: proxy.Request{Method: method, Path: []byte(path)}}
		s.ClientAddr = netip.MustParseAddrPort("192.0.2.7:5555")
		s.Stats.Start = time.Now()
		if traceparent != "" {
			s.Request.Header.Add("traceparent", traceparent)
		}
		tr.Start(s, "web").End(s, nil)
	}
	for range 2000 {
		request("GET", "/", "00-5bf92f3577b34da60000000000000000-00f067aa0ba902b7-01")
	}
	if n := len(exp.GetSpans()); n > 100 {
		t.Errorf("%d of 2,000 requests with a zero-tailed trace id sampled at 1%%", n)
	}
	exp.Reset()
	tr2, _ := newTracer(&config.Tracing{Exporter: "otlp_http"}, sdktrace.WithSyncer(exp))
	defer tr2.Shutdown(context.Background())
	s := &proxy.Session{Request: proxy.Request{Method: "XMETHOD7", Path: []byte("/" + strings.Repeat("a", 4000))}}
	s.Stats.Start = time.Now()
	tr2.Start(s, "web").End(s, nil)
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	if spans[0].Name != "HTTP" {
		t.Errorf("span name %q, want HTTP", spans[0].Name)
	}
	for _, a := range spans[0].Attributes {
		if a.Key == "http.request.method" && a.Value.AsString() != "_OTHER" {
			t.Errorf("method %q, want _OTHER", a.Value.AsString())
		}
		if len(a.Value.AsString()) > 512 {
			t.Errorf("%s is %d bytes long", a.Key, len(a.Value.AsString()))
		}
	}
}

// TestExportErrors: a collector that is down is logged once a minute,
// with a count of the errors between.
func TestExportErrors(t *testing.T) {
	var buf strings.Builder
	h := &exportErrors{logger: slog.New(slog.NewTextHandler(&buf, nil))}
	for range 100 {
		h.Handle(errors.New("connection refused"))
	}
	if n := strings.Count(buf.String(), "export failed"); n != 1 || h.more != 99 {
		t.Errorf("%d lines, %d counted: %s", n, h.more, buf.String())
	}
}
