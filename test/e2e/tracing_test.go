package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	collector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver collects the spans exported to it, over OTLP/HTTP or
// OTLP/gRPC.
type otlpReceiver struct {
	collector.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (r *otlpReceiver) add(req *collector.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			r.spans = append(r.spans, ss.Spans...)
		}
	}
}

func (r *otlpReceiver) Export(_ context.Context, req *collector.ExportTraceServiceRequest) (*collector.ExportTraceServiceResponse, error) {
	r.add(req)
	return &collector.ExportTraceServiceResponse{}, nil
}

// startOTLP starts a receiver of kind otlp_http or otlp_grpc on a free
// loopback port.
func startOTLP(t *testing.T, kind string) (*otlpReceiver, string) {
	r := &otlpReceiver{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if kind == "otlp_grpc" {
		srv := grpc.NewServer()
		collector.RegisterTraceServiceServer(srv, r)
		go srv.Serve(ln)
		t.Cleanup(srv.Stop)
		return r, ln.Addr().String()
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var m collector.ExportTraceServiceRequest
		if req.URL.Path != "/v1/traces" || proto.Unmarshal(body, &m) != nil {
			http.Error(w, "bad export", 400)
			return
		}
		r.add(&m)
		out, _ := proto.Marshal(&collector.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return r, ln.Addr().String()
}

// trace returns the spans of trace id (hex), waiting up to d for n.
func (r *otlpReceiver) trace(id string, n int, d time.Duration) []*tracepb.Span {
	deadline := time.Now().Add(d)
	for {
		r.mu.Lock()
		var out []*tracepb.Span
		for _, s := range r.spans {
			if hex.EncodeToString(s.TraceId) == id {
				out = append(out, s)
			}
		}
		r.mu.Unlock()
		if len(out) >= n || time.Now().After(deadline) {
			return out
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func attr(s *tracepb.Span, key string) string {
	for _, a := range s.Attributes {
		if a.Key == key {
			v := a.Value
			if sv := v.GetStringValue(); sv != "" {
				return sv
			}
			return fmt.Sprint(v.GetIntValue())
		}
	}
	return ""
}

// TestTracing: a request from a trusted client, sampled by its
// traceparent, gives a server span under the client's span and a client
// span per try under it (the first try refused, the second answered); the
// origin gets the context of its try. From an untrusted client the trace
// is continued but not sampled (sampling 0): nothing is exported.
func TestTracing(t *testing.T) {
	for _, kind := range []string{"otlp_http", "otlp_grpc"} {
		t.Run(kind, func(t *testing.T) {
			recv, endpoint := startOTLP(t, kind)
			var mu sync.Mutex
			var gotParent []string
			origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				gotParent = append(gotParent, r.Header.Get("traceparent"))
				mu.Unlock()
				io.WriteString(w, "ok")
			}))
			start := func(trusted string) string {
				addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
				runConfig(t, t.TempDir(), "t.yaml", fmt.Sprintf(`listeners:
  - {name: web, address: %s, routes: [{name: all, cluster: c}]}
clusters:
  - {name: c, endpoints: [%s, %q], outlier: {enabled: off}}
tracing: {exporter: %s, endpoint: %q, sampling: 0, trusted_parents: [%s]}
`, addr, closedAddr(t), origin, kind, endpoint, trusted), addr)
				return addr
			}
			const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
			const parentID = "00f067aa0ba902b7"
			get := func(addr string) {
				req, _ := http.NewRequest("GET", "http://"+addr+"/x?y=1", nil)
				req.Header.Set("traceparent", "00-"+traceID+"-"+parentID+"-01")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
			}

			get(start("127.0.0.0/8"))
			spans := recv.trace(traceID, 3, 10*time.Second)
			var server *tracepb.Span
			var clients []*tracepb.Span
			for _, s := range spans {
				switch s.Kind {
				case tracepb.Span_SPAN_KIND_SERVER:
					server = s
				case tracepb.Span_SPAN_KIND_CLIENT:
					clients = append(clients, s)
				}
			}
			if server == nil || len(clients) != 2 {
				t.Fatalf("spans of the trace: %v", spans)
			}
			if hex.EncodeToString(server.ParentSpanId) != parentID {
				t.Errorf("server span's parent %x, want the client's %s", server.ParentSpanId, parentID)
			}
			for k, want := range map[string]string{"http.request.method": "GET", "url.path": "/x", "http.route": "all",
				"strait.cluster": "c", "strait.listener": "web", "http.response.status_code": "200", "strait.attempts": "2"} {
				if got := attr(server, k); got != want {
					t.Errorf("server span %s = %q, want %q", k, got, want)
				}
			}
			for i, c := range clients {
				if string(c.ParentSpanId) != string(server.SpanId) {
					t.Errorf("client span %d's parent is not the server span", i)
				}
			}
			failed, ok := clients[0], clients[1]
			if attr(failed, "strait.attempt") != "1" {
				failed, ok = ok, failed
			}
			if failed.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || ok.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR ||
				attr(ok, "server.address") != origin || attr(ok, "http.response.status_code") != "200" {
				t.Errorf("tries: %v / %v", failed, ok)
			}
			mu.Lock()
			want := "00-" + traceID + "-" + hex.EncodeToString(ok.SpanId) + "-01"
			if len(gotParent) != 1 || gotParent[0] != want {
				t.Errorf("the origin got traceparent %q, want %q (its try's)", gotParent, want)
			}
			gotParent = nil
			mu.Unlock()

			// Untrusted: continued, not sampled, nothing exported.
			const otherID = "11112222333344445555666677778888"
			addr := start("10.0.0.0/8")
			req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
			req.Header.Set("traceparent", "00-"+otherID+"-"+parentID+"-01")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := recv.trace(otherID, 1, 2500*time.Millisecond); len(got) != 0 {
				t.Errorf("an untrusted client's traceparent got %d spans exported", len(got))
			}
			mu.Lock()
			if len(gotParent) != 1 || !strings.HasPrefix(gotParent[0], "00-"+otherID+"-") || !strings.HasSuffix(gotParent[0], "-00") {
				t.Errorf("the origin got %q: want the trace continued, not sampled", gotParent)
			}
			mu.Unlock()
		})
	}
}
