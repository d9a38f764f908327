package e2e

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/proxytest"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// interopServer starts grpc-go's interop server (it listens on every
// address of the port) and returns its loopback address.
func interopServer(t *testing.T) (string, *proc) {
	t.Helper()
	bin := needTool(t, "grpc-interop-server")
	port := freePort(t)
	p := startProc(t, exec.Command(bin, "-port", strconv.Itoa(port)))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitPort(t, addr, 20*time.Second, p.exited)
	return addr, p
}

// interopCases are the cases of grpc-go's interop client strait must pass.
var interopCases = []string{"empty_unary", "large_unary", "client_streaming", "server_streaming", "ping_pong",
	"empty_stream", "timeout_on_sleeping_server", "cancel_after_begin", "cancel_after_first_response",
	"status_code_and_message", "special_status_message", "custom_metadata", "unimplemented_method",
	"unimplemented_service", "rpc_soak", "channel_soak"}

// TestGRPCInterop runs grpc-go's interop client through strait to grpc-go's
// interop server, over h2c and over TLS (h2 by ALPN): every case passes,
// the soak cases with 100 calls on 2 threads.
func TestGRPCInterop(t *testing.T) {
	client := needTool(t, "grpc-interop-client")
	origin, _ := interopServer(t)
	dir := t.TempDir()
	ca := newTestCA(t)
	cert, key := ca.issue(t, dir, "grpc", 2, "grpc.test")
	caFile := writeFile(t, dir, "ca.pem", ca.pem)
	plain := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	secure := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, dir, "grpc.yaml", fmt.Sprintf(`listeners:
  - {name: plain, address: %s, routes: [{cluster: o}]}
  - address: %s
    tls: {certificates: [{cert: %s, key: %s}]}
    routes: [{cluster: o}]
clusters: [{name: o, protocol: h2c, endpoints: [%q]}]
`, plain, secure, cert, key, origin), plain)
	waitPort(t, secure, 5*time.Second, p.exited)
	for _, listener := range []struct {
		name, addr string
		args       []string
	}{
		{"h2c", plain, nil},
		{"tls", secure, []string{"-use_tls", "-use_test_ca", "-ca_file", caFile, "-server_host_override", "grpc.test"}},
	} {
		t.Run(listener.name, func(t *testing.T) {
			host, port, _ := net.SplitHostPort(listener.addr)
			for _, tc := range interopCases {
				args := append([]string{"-server_host", host, "-server_port", port, "-test_case", tc,
					"-soak_iterations", "100", "-soak_num_threads", "2"}, listener.args...)
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				start := time.Now()
				out, err := exec.CommandContext(ctx, client, args...).CombinedOutput()
				cancel()
				if err != nil {
					t.Errorf("%s: %v after %v\n%s", tc, err, time.Since(start).Round(time.Millisecond), tail(string(out), 15))
				}
			}
		})
	}
	_, metrics := adminDo(t, "GET", "http://"+adminAddrOf(t, p)+"/metrics", nil)
	if n := metricValue(metrics, "strait_grpc_calls_total", `listener="plain"`); n < 200 {
		t.Errorf("strait_grpc_calls_total = %v on the h2c listener, want the interop calls (200 or more)", n)
	}
}

// testService is a TestService of the test's own, whose calls behave as
// their metadata asks.
type testService struct {
	testpb.UnimplementedTestServiceServer
	name     string
	calls    atomic.Int64
	fail     codes.Code   // answer every UnaryCall with this status, if not OK
	deadline atomic.Int64 // the last call's time left, in ms, as the server saw it
	canceled chan struct{}
}

func (s *testService) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	s.calls.Add(1)
	if d, ok := ctx.Deadline(); ok {
		s.deadline.Store(time.Until(d).Milliseconds())
	}
	if s.fail != codes.OK {
		return nil, status.Error(s.fail, s.name+" fails")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-sleep"); len(v) > 0 {
		d, _ := time.ParseDuration(v[0])
		if len(md.Get("x-ignore-deadline")) > 0 {
			time.Sleep(d)
			return nil, status.Error(codes.Internal, "slept through the deadline")
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
			if s.canceled != nil {
				s.canceled <- struct{}{}
			}
			return nil, ctx.Err()
		}
	}
	if req.GetResponseCompressed().GetValue() {
		if err := grpc.SetSendCompressor(ctx, gzip.Name); err != nil {
			return nil, err
		}
		return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, req.ResponseSize)},
			Username: strconv.Itoa(len(req.GetPayload().GetBody()))}, nil
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: []byte(s.name)}, Username: s.name}, nil
}

// startTestService serves svc over h2c on a loopback port (and grpc-go's
// health service, SERVING), returning its address and health server.
func startTestService(t *testing.T, svc *testService) (string, *health.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testpb.RegisterTestServiceServer(srv, svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), hs
}

// dialGRPC is a grpc-go client connection to strait at addr.
func dialGRPC(t *testing.T, addr string, opts ...grpc.DialOption) testpb.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testpb.NewTestServiceClient(cc)
}

// TestGRPCCompressed: a call compressed with gzip both ways (the interop
// client makes none, and its server takes none) goes through whole.
func TestGRPCCompressed(t *testing.T) {
	origin, _ := startTestService(t, &testService{name: "gzip"})
	addr, _ := straitToH2c(t, origin)
	// The bytes on the client's connection to strait, each way.
	var sent, received atomic.Int64
	c := dialGRPC(t, addr, grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", a)
		return &countingConn{Conn: nc, read: &received, written: &sent}, err
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body := []byte(strings.Repeat("compressible ", 20000))
	resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 100000, Payload: &testpb.Payload{Body: body},
		ResponseCompressed: &testpb.BoolValue{Value: true}}, grpc.UseCompressor(gzip.Name))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetPayload().GetBody()); n != 100000 || resp.Username != strconv.Itoa(len(body)) {
		t.Errorf("response payload of %d bytes, want 100000; the origin got %s bytes, want %d", n, resp.Username, len(body))
	}
	if sent.Load() > 20000 || received.Load() > 20000 {
		t.Errorf("%d bytes sent for a %d-byte message, %d received for a 100000-byte one: not compressed", sent.Load(), len(body), received.Load())
	}
}

// countingConn counts the bytes read and written on a connection.
type countingConn struct {
	net.Conn
	read, written *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// TestGRPCStatuses: the failures strait answers for a gRPC call are gRPC
// statuses of its own in a trailers-only response, never an HTTP error
// status (which grpc-go would report as "unexpected HTTP status code").
func TestGRPCStatuses(t *testing.T) {
	svc := &testService{name: "slow", canceled: make(chan struct{}, 4)}
	origin, _ := startTestService(t, svc)
	closed := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, t.TempDir(), "grpc.yaml", fmt.Sprintf(`listeners:
  - address: %s
    routes:
      - {path_prefix: /grpc.testing.TestService/UnaryCall, headers: [{name: x-route, exact: down}], cluster: down}
      - {path_prefix: /grpc.testing.TestService/UnaryCall, headers: [{name: x-route, exact: short}], cluster: o, timeouts: {upstream_total: 300ms}}
      - {path_prefix: /grpc.testing.TestService/UnaryCall, cluster: o, max_request_body: 1KiB}
clusters:
  - {name: o, protocol: h2c, endpoints: [%q]}
  - {name: down, protocol: h2c, endpoints: [%q]}
`, addr, origin, closed), addr)
	c := dialGRPC(t, addr)
	call := func(timeout time.Duration, body int, md ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, body)}})
		return err
	}
	for _, tc := range []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"failed connect", call(5*time.Second, 10, "x-route", "down"), codes.Unavailable, "upstream connect"},
		{"no route", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := c.EmptyCall(ctx, &testpb.Empty{})
			return err
		}(), codes.Unimplemented, "no route"},
		{"body over the limit", call(5*time.Second, 4000), codes.ResourceExhausted, "over the limit"},
		{"route's deadline", call(5*time.Second, 10, "x-route", "short", "x-sleep", "1s", "x-ignore-deadline", "1"), codes.DeadlineExceeded, "deadline"},
	} {
		st, _ := status.FromError(tc.err)
		if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
			t.Errorf("%s: got %v %q, want %v with %q", tc.name, st.Code(), st.Message(), tc.code, tc.msg)
		}
	}
	// The route's deadline (300 ms) reached the origin in grpc-timeout,
	// below the client's 5 s.
	if d := svc.deadline.Load(); d <= 0 || d > 300 {
		t.Errorf("the origin saw %d ms left, want the route's 300 ms at most", d)
	}
	// A client that cancels: its RST_STREAM CANCEL reaches the origin.
	// The client's own deadline (grpc-timeout) is strait's too.
	start := time.Now()
	err := call(300*time.Millisecond, 10, "x-sleep", "5s")
	if st, _ := status.FromError(err); st.Code() != codes.DeadlineExceeded {
		t.Errorf("client deadline: %v", err)
	}
	select {
	case <-svc.canceled:
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("the origin's call was cancelled after %v", d)
		}
	case <-time.After(3 * time.Second):
		t.Error("the origin's call was not cancelled when the client's deadline passed")
	}
}

// TestGRPCOriginKilled: an origin killed in the middle of a server stream
// gets the client UNAVAILABLE at once, never a hang.
func TestGRPCOriginKilled(t *testing.T) {
	origin, op := interopServer(t)
	addr, _ := straitToH2c(t, origin)
	c := dialGRPC(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	params := make([]*testpb.ResponseParameters, 20)
	for i := range params {
		params[i] = &testpb.ResponseParameters{Size: 100, IntervalUs: 200000}
	}
	stream, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	op.signal(syscall.SIGKILL)
	killed := time.Now()
	for {
		_, err := stream.Recv()
		if err == nil {
			continue
		}
		if st, _ := status.FromError(err); st.Code() != codes.Unavailable {
			t.Errorf("after the origin was killed: %v, want UNAVAILABLE", err)
		}
		if d := time.Since(killed); d > time.Second {
			t.Errorf("the client learnt after %v", d)
		}
		break
	}
}

// TestGRPCBalancing: calls on one client connection are balanced one by
// one over a cluster's endpoints (what an L4 balancer cannot do); calls
// an endpoint answers UNAVAILABLE go to another (retry_on_grpc); and an
// endpoint the gRPC health check finds NOT_SERVING takes no calls.
func TestGRPCBalancing(t *testing.T) {
	a, b := &testService{name: "a"}, &testService{name: "b"}
	bad := &testService{name: "bad", fail: codes.Unavailable}
	addrA, healthA := startTestService(t, a)
	addrB, _ := startTestService(t, b)
	addrBad, _ := startTestService(t, bad)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, t.TempDir(), "grpc.yaml", fmt.Sprintf(`listeners:
  - address: %s
    routes:
      - {headers: [{name: x-route, exact: retry}], cluster: retry}
      - {cluster: o}
clusters:
  - name: o
    protocol: h2c
    endpoints: [%q, %q]
    health_check: {kind: grpc, interval: 100ms, timeout: 1s, healthy: 1, unhealthy: 1}
  - name: retry
    protocol: h2c
    endpoints: [%q, %q]
    retry_on_grpc: [unavailable]
    outlier: {enabled: off}
`, addr, addrA, addrB, addrBad, addrB), addr)
	c := dialGRPC(t, addr)
	calls := func(n int, md ...string) (ok int, errs []error) {
		for range n {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ctx = metadata.AppendToOutgoingContext(ctx, md...)
			_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{})
			cancel()
			if err != nil {
				errs = append(errs, err)
			} else {
				ok++
			}
		}
		return ok, errs
	}
	if ok, errs := calls(40); ok != 40 {
		t.Fatalf("%d of 40 calls passed: %v", ok, errs)
	}
	if a.calls.Load() != 20 || b.calls.Load() != 20 {
		t.Errorf("calls on one connection went %d to a, %d to b; want 20 each", a.calls.Load(), b.calls.Load())
	}

	ok, errs := calls(40, "x-route", "retry")
	t.Logf("retry_on_grpc: %d of 40 calls passed; the failing endpoint took %d, the other %d", ok, bad.calls.Load(), b.calls.Load()-20)
	if ok != 40 {
		t.Errorf("%d of 40 calls passed with retry_on_grpc: %v", ok, errs[0])
	}
	if bad.calls.Load() < 10 {
		t.Errorf("the failing endpoint took %d calls: balancing did not reach it", bad.calls.Load())
	}

	healthA.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.stderr.String(), "endpoint unhealthy") {
		if time.Now().After(deadline) {
			t.Fatalf("no endpoint marked unhealthy:\n%s", tail(p.stderr.String(), 10))
		}
		time.Sleep(50 * time.Millisecond)
	}
	before := a.calls.Load()
	if ok, errs := calls(20); ok != 20 {
		t.Fatalf("%d of 20 calls passed: %v", ok, errs)
	}
	if n := a.calls.Load() - before; n != 0 {
		t.Errorf("the NOT_SERVING endpoint took %d calls", n)
	}
}

// grpcWebCall sends a gRPC-Web call (body: one message) over client and
// returns the response, its body decoded from base64 for the text form.
func grpcWebCall(t *testing.T, client *http.Client, url, contentType string, msg []byte, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	frame := append([]byte{0, byte(len(msg) >> 24), byte(len(msg) >> 16), byte(len(msg) >> 8), byte(len(msg))}, msg...)
	body := frame
	text := strings.HasPrefix(contentType, "application/grpc-web-text")
	if text {
		body = []byte(base64Std(frame))
	}
	req, _ := http.NewRequest("POST", url, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("X-Grpc-Web", "1")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if text {
		if got, err = decodeBase64Pieces(got); err != nil {
			t.Fatalf("grpc-web-text body: %v", err)
		}
	}
	return resp, got
}

var errNoTrailerFrame = errors.New("no trailer frame")

// webFrames splits a gRPC-Web body into its messages and its trailers.
func webFrames(body []byte) (msgs [][]byte, trailers string, err error) {
	for len(body) > 0 {
		if len(body) < 5 {
			return nil, "", fmt.Errorf("a frame cut short: %x", body)
		}
		n := int(body[1])<<24 | int(body[2])<<16 | int(body[3])<<8 | int(body[4])
		if len(body) < 5+n {
			return nil, "", fmt.Errorf("a frame of %d bytes cut short", n)
		}
		if body[0]&0x80 != 0 {
			return msgs, string(body[5 : 5+n]), nil
		}
		msgs = append(msgs, body[5:5+n])
		body = body[5+n:]
	}
	return msgs, "", errNoTrailerFrame
}

// TestGRPCWeb: gRPC-Web calls, binary and text, over HTTP/1.1 and HTTP/2,
// translated by strait for grpc-go's interop server, which speaks gRPC
// only (it refuses application/grpc-web with 415: a call that passes was
// translated); server streaming flushed per message; CORS answered from
// the allow-list.
func TestGRPCWeb(t *testing.T) {
	origin, _ := interopServer(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, t.TempDir(), "grpcweb.yaml", fmt.Sprintf(`listeners:
  - address: %s
    routes:
      - cluster: o
        grpc_web: {allow_origins: ["https://app.example"], allow_credentials: true, allow_headers: [authorization]}
clusters: [{name: o, protocol: h2c, endpoints: [%q]}]
`, addr, origin), addr)
	base := "http://" + addr
	clients := map[string]*http.Client{"HTTP/1.1": newClient(true), "HTTP/2": h2cClient()}
	for _, proto := range []string{"HTTP/1.1", "HTTP/2"} {
		for _, ct := range []string{"application/grpc-web+proto", "application/grpc-web-text"} {
			t.Run(proto+" "+ct, func(t *testing.T) {
				client := clients[proto]
				// UnaryCall asking for 1000 bytes: field 2 (response_size).
				resp, body := grpcWebCall(t, client, base+"/grpc.testing.TestService/UnaryCall", ct, []byte{0x10, 0xe8, 0x07}, nil)
				if resp.StatusCode != 200 || !strings.HasPrefix(resp.Proto, proto) || resp.Header.Get("Content-Type") != ct {
					t.Fatalf("%s %s %q", resp.Proto, resp.Status, resp.Header.Get("Content-Type"))
				}
				msgs, trailers, err := webFrames(body)
				if err != nil || len(msgs) != 1 || len(msgs[0]) < 1000 || !strings.Contains(trailers, "grpc-status: 0\r\n") {
					t.Errorf("unary: %d messages, trailers %q, %v", len(msgs), trailers, err)
				}
				// An unimplemented method: a trailers-only answer from the
				// origin keeps its status in the head.
				resp, body = grpcWebCall(t, client, base+"/grpc.testing.TestService/UnimplementedCall", ct, nil, nil)
				if resp.Header.Get("Grpc-Status") != "12" || len(body) != 0 {
					t.Errorf("unimplemented: grpc-status %q, body %q", resp.Header.Get("Grpc-Status"), body)
				}
			})
		}
	}

	// Server streaming: each message comes as the origin sends it, 300 ms
	// apart, not all at the end.
	t.Run("streaming", func(t *testing.T) {
		// StreamingOutputCallRequest with 3 response_parameters
		// {size: 10, interval_us: 300000}.
		param := []byte{0x08, 10, 0x10, 0xe0, 0xa7, 0x12}
		var msg []byte
		for range 3 {
			msg = append(append(msg, 0x12, byte(len(param))), param...)
		}
		frame := append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...)
		req, _ := http.NewRequest("POST", base+"/grpc.testing.TestService/StreamingOutputCall", strings.NewReader(string(frame)))
		req.Header.Set("Content-Type", "application/grpc-web+proto")
		resp, err := newClient(false).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var arrivals []time.Duration
		start := time.Now()
		buf := make([]byte, 4096)
		var all []byte
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				arrivals = append(arrivals, time.Since(start))
				all = append(all, buf[:n]...)
			}
			if err != nil {
				break
			}
		}
		msgs, trailers, err := webFrames(all)
		if err != nil || len(msgs) != 3 || !strings.Contains(trailers, "grpc-status: 0") {
			t.Fatalf("%d messages, trailers %q, %v", len(msgs), trailers, err)
		}
		if len(arrivals) < 3 || arrivals[len(arrivals)-1]-arrivals[0] < 400*time.Millisecond {
			t.Errorf("the messages came at %v: not flushed one by one", arrivals)
		}
	})

	// A grpc-web-text body that is not base64 is strait's to refuse: a
	// gRPC status of its own (INTERNAL), not a request to the origin.
	t.Run("bad text", func(t *testing.T) {
		req, _ := http.NewRequest("POST", base+"/grpc.testing.TestService/EmptyCall", strings.NewReader("AAAA!!!!"))
		req.Header.Set("Content-Type", "application/grpc-web-text")
		resp, err := newClient(false).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "13" || !strings.Contains(resp.Header.Get("Grpc-Message"), "grpc-web-text") {
			t.Errorf("%d grpc-status %q %q", resp.StatusCode, resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message"))
		}
	})

	t.Run("CORS", func(t *testing.T) {
		preflight := func(origin, method, headers string) *http.Response {
			req, _ := http.NewRequest("OPTIONS", base+"/grpc.testing.TestService/UnaryCall", nil)
			req.Header.Set("Origin", origin)
			req.Header.Set("Access-Control-Request-Method", method)
			req.Header.Set("Access-Control-Request-Headers", headers)
			resp, err := newClient(false).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp
		}
		resp := preflight("https://app.example", "POST", "content-type,x-grpc-web,authorization,x-secret")
		if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
			resp.Header.Get("Access-Control-Allow-Credentials") != "true" ||
			resp.Header.Get("Access-Control-Allow-Headers") != "content-type, x-grpc-web, authorization" {
			t.Errorf("allowed preflight: %d %v", resp.StatusCode, resp.Header)
		}
		for _, bad := range [][2]string{{"https://evil.example", "POST"}, {"https://app.example.evil", "POST"}, {"https://app.example", "PUT"}} {
			resp := preflight(bad[0], bad[1], "content-type")
			if resp.StatusCode != 403 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
				t.Errorf("preflight from %s for %s: %d, Allow-Origin %q", bad[0], bad[1], resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
			}
		}
		resp, _ = grpcWebCall(t, newClient(false), base+"/grpc.testing.TestService/EmptyCall", "application/grpc-web", nil,
			map[string]string{"Origin": "https://app.example"})
		if resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" || !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "grpc-status") {
			t.Errorf("call from an allowed origin: %v", resp.Header)
		}
		resp, _ = grpcWebCall(t, newClient(false), base+"/grpc.testing.TestService/EmptyCall", "application/grpc-web", nil,
			map[string]string{"Origin": "https://evil.example"})
		if v := resp.Header.Get("Access-Control-Allow-Origin"); v != "" {
			t.Errorf("call from another origin got Access-Control-Allow-Origin %q", v)
		}
	})
	_, metrics := adminDo(t, "GET", "http://"+adminAddrOf(t, p)+"/metrics", nil)
	if n := metricValue(metrics, "strait_grpc_web_translated_total"); n < 10 {
		t.Errorf("strait_grpc_web_translated_total = %v", n)
	}
	if n := metricValue(metrics, "strait_cors_preflights_refused_total"); n != 3 {
		t.Errorf("strait_cors_preflights_refused_total = %v, want 3", n)
	}
}

// TestGRPCOverTLSUpstream: strait speaks gRPC to an origin over TLS
// (protocol h2), and its gRPC health check does too.
func TestGRPCOverTLSUpstream(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	certFile, keyFile := ca.issue(t, dir, "origin", 3, "origin.test")
	creds, err := credentials.NewServerTLSFromFile(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(creds))
	svc := &testService{name: "tls"}
	testpb.RegisterTestServiceServer(srv, svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	defer srv.Stop()
	caFile := writeFile(t, dir, "ca.pem", ca.pem)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, dir, "grpc.yaml", fmt.Sprintf(`listeners:
  - {address: %s, routes: [{cluster: o}]}
clusters:
  - name: o
    protocol: h2
    endpoints: [%q]
    tls: {ca_file: %s, server_name: origin.test}
    health_check: {kind: grpc, interval: 100ms, healthy: 1, unhealthy: 1}
`, addr, ln.Addr().String(), caFile), addr)
	c := dialGRPC(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{})
	if err != nil || resp.Username != "tls" {
		t.Fatalf("%v %v", resp, err)
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.stderr.String(), "endpoint unhealthy") {
		if time.Now().After(deadline) {
			t.Fatalf("the TLS endpoint was not marked unhealthy:\n%s", tail(p.stderr.String(), 10))
		}
		time.Sleep(50 * time.Millisecond)
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	deadline = time.Now().Add(5 * time.Second)
	for !strings.Contains(p.stderr.String(), "endpoint healthy again") {
		if time.Now().After(deadline) {
			t.Fatalf("the TLS endpoint did not come back:\n%s", tail(p.stderr.String(), 10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// decodeBase64Pieces decodes base64 pieces, each padded, one after
// another, as gRPC-Web text responses come.
func decodeBase64Pieces(b []byte) ([]byte, error) {
	if len(b)%4 != 0 {
		return nil, fmt.Errorf("%d bytes of base64", len(b))
	}
	var out []byte
	for ; len(b) > 0; b = b[4:] {
		var err error
		if out, err = base64.StdEncoding.AppendDecode(out, b[:4]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// connectConformanceConfig is what strait in front of the reference
// server supports: gRPC and gRPC-Web (the Connect protocol is the
// origin's, not a proxy's), HTTP/1.1 and HTTP/2, every codec,
// compression and stream type, TLS with and without client certificates.
const connectConformanceConfig = `features:
  versions: [HTTP_VERSION_1, HTTP_VERSION_2]
  protocols: [PROTOCOL_GRPC, PROTOCOL_GRPC_WEB]
  codecs: [CODEC_PROTO, CODEC_JSON]
  compressions: [COMPRESSION_IDENTITY, COMPRESSION_GZIP, COMPRESSION_BR, COMPRESSION_ZSTD, COMPRESSION_DEFLATE, COMPRESSION_SNAPPY]
  stream_types: [STREAM_TYPE_UNARY, STREAM_TYPE_CLIENT_STREAM, STREAM_TYPE_SERVER_STREAM, STREAM_TYPE_HALF_DUPLEX_BIDI_STREAM, STREAM_TYPE_FULL_DUPLEX_BIDI_STREAM]
  supports_h2c: true
  supports_tls: true
  supports_tls_client_certs: true
  supports_trailers: true
  supports_half_duplex_bidi_over_http1: true
  supports_connect_get: false
  supports_message_receive_limit: true
`

// TestConnectConformance runs the Connect conformance suite
// (connectconformance v1.0.7, server mode) against strait in front of its
// reference server (test/e2e/connectwrap starts both): gRPC and gRPC-Web,
// HTTP/1.1 and HTTP/2, with and without TLS; every case passes. The
// reference server speaks gRPC only to strait, and strait's metrics show
// every gRPC-Web call translated (it would accept gRPC-Web itself, so a
// proxy that translated nothing would pass too).
func TestConnectConformance(t *testing.T) {
	runner := needTool(t, "connectconformance")
	ref := needTool(t, "referenceserver")
	dir := t.TempDir()
	wrap := filepath.Join(dir, "connectwrap")
	if out, err := exec.Command("go", "build", "-o", wrap, "./connectwrap").CombinedOutput(); err != nil {
		t.Fatalf("building connectwrap: %v\n%s", err, out)
	}
	conf := writeFile(t, dir, "conformance.yaml", []byte(connectConformanceConfig))
	metricsDir := filepath.Join(dir, "metrics")
	os.Mkdir(metricsDir, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, runner, "--mode", "server", "--conf", conf, "--",
		wrap, "-strait", straitBin, "-ref", ref, "-out", metricsDir)
	out, err := cmd.CombinedOutput()
	summary := regexp.MustCompile(`Total cases: (\d+)\n(\d+) passed, (\d+) failed`).FindStringSubmatch(string(out))
	if err != nil || summary == nil {
		t.Fatalf("connectconformance: %v\n%s", err, tail(string(out), 60))
	}
	total, _ := strconv.Atoi(summary[1])
	t.Logf("Connect conformance: %s cases, %s passed, %s failed", summary[1], summary[2], summary[3])
	if summary[3] != "0" || total < 5000 {
		t.Errorf("want every case of 5000 or more to pass:\n%s", tail(string(out), 60))
	}
	files, _ := filepath.Glob(filepath.Join(metricsDir, "metrics-*.txt"))
	if len(files) < 8 {
		t.Fatalf("metrics of %d strait processes, want one per server the runner started", len(files))
	}
	var webCalls float64
	for _, f := range files {
		b, _ := os.ReadFile(f)
		calls, translated := metricValue(string(b), "strait_grpc_calls_total"), metricValue(string(b), "strait_grpc_web_translated_total")
		web := strings.Contains(filepath.Base(f), "proto3-") // PROTOCOL_GRPC_WEB
		if web && (translated != calls || calls <= 0) || !web && translated != 0 {
			t.Errorf("%s: %v gRPC calls, %v translated from gRPC-Web", filepath.Base(f), calls, translated)
		}
		if web {
			webCalls += translated
		}
	}
	t.Logf("%v gRPC-Web calls, all sent upstream as gRPC", webCalls)
}

// TestGRPCWebConnectNode: Connect's gRPC-Web client for Node, over HTTP/1.1
// and HTTP/2, through strait's bridge to grpc-go's interop server (gRPC
// only): a unary call, a server stream, and an error status.
func TestGRPCWebConnectNode(t *testing.T) {
	node := needTool(t, "node")
	modules := os.Getenv("STRAIT_NODE_MODULES")
	if modules == "" {
		modules, _ = filepath.Abs("../../.tools/npm/node_modules")
	}
	if _, err := os.Stat(filepath.Join(modules, "@connectrpc", "connect-node")); err != nil {
		if inCI() {
			t.Fatalf("@connectrpc/connect-node is not installed in %s (scripts/test installs it)", modules)
		}
		t.Skipf("@connectrpc/connect-node is not installed in %s; scripts/test installs it", modules)
	}
	dir := t.TempDir()
	// The script beside the packages, and the service's descriptors from
	// the Go package's own.
	script, err := os.ReadFile("testdata/grpcweb-client.mjs")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "client.mjs", script)
	if err := os.Symlink(modules, filepath.Join(dir, "node_modules")); err != nil {
		t.Fatal(err)
	}
	b, err := proxytest.GRPCTestingProtoset()
	if err != nil {
		t.Fatal(err)
	}
	descriptors := writeFile(t, dir, "test.binpb", b)

	origin, _ := interopServer(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, dir, "grpcweb.yaml", fmt.Sprintf(`listeners:
  - {address: %s, routes: [{cluster: o, grpc_web: {allow_origins: ["*"]}}]}
clusters: [{name: o, protocol: h2c, endpoints: [%q]}]
`, addr, origin), addr)
	for _, version := range []string{"1.1", "2"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, node, filepath.Join(dir, "client.mjs"), descriptors, "http://"+addr, version).CombinedOutput()
		cancel()
		want := `{"unary":1000,"stream":[10,20,30],"error":{"code":9,"message":"precondition ☃"}}`
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("HTTP/%s: %v\n%s\nwant %s", version, err, out, want)
		}
	}
	_, metrics := adminDo(t, "GET", "http://"+adminAddrOf(t, p)+"/metrics", nil)
	if n := metricValue(metrics, "strait_grpc_web_translated_total"); n != 6 {
		t.Errorf("strait_grpc_web_translated_total = %v, want the 6 calls", n)
	}
}

// rawGRPCOrigin is an HTTP/2 origin in cleartext that answers each
// request's HEADERS with respond, and returns its address.
func rawGRPCOrigin(t *testing.T, respond func(fr *http2.Framer, id uint32, head []byte)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var hb strings.Builder
	enc := hpack.NewEncoder(&hb)
	enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
	head := []byte(hb.String())
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				if _, err := io.ReadFull(nc, make([]byte, len(http2.ClientPreface))); err != nil {
					return
				}
				fr := http2.NewFramer(nc, nc)
				fr.WriteSettings()
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					switch f := f.(type) {
					case *http2.SettingsFrame:
						if !f.IsAck() {
							fr.WriteSettingsAck()
						}
					case *http2.HeadersFrame:
						respond(fr, f.StreamID, head)
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestGRPCOriginCancels: an origin that resets its stream with CANCEL in
// the middle of a server stream has the client told CANCELLED (in the
// response's trailers), after the message that came before it.
func TestGRPCOriginCancels(t *testing.T) {
	origin := rawGRPCOrigin(t, func(fr *http2.Framer, id uint32, head []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: head, EndHeaders: true})
		fr.WriteData(id, false, []byte{0, 0, 0, 0, 0}) // an empty StreamingOutputCallResponse
		fr.WriteRSTStream(id, http2.ErrCodeCancel)
	})
	addr, _ := straitToH2c(t, origin)
	c := dialGRPC(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("the message before the reset: %v", err)
	}
	_, err = stream.Recv()
	if st, _ := status.FromError(err); st.Code() != codes.Canceled {
		t.Errorf("after the origin's CANCEL: %v, want CANCELLED", err)
	}
}

// TestGRPCWebCutMidMessage: a gRPC-Web response whose origin fails in the
// middle of a message is cut (the connection closed), not ended with a
// trailer frame, which the client would read as the rest of the message
// (found by review: a client got a corrupt message and no status).
func TestGRPCWebCutMidMessage(t *testing.T) {
	origin := rawGRPCOrigin(t, func(fr *http2.Framer, id uint32, head []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: head, EndHeaders: true})
		fr.WriteData(id, false, []byte("\x00\x00\x00\x00\x02hi\x00\x00\x00\x00\x64half"))
		fr.WriteRSTStream(id, http2.ErrCodeInternal)
	})
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, t.TempDir(), "grpcweb.yaml", fmt.Sprintf(`listeners:
  - {address: %s, routes: [{cluster: o, grpc_web: {allow_origins: ["*"]}}]}
clusters: [{name: o, protocol: h2c, endpoints: [%q]}]
`, addr, origin), addr)
	req, _ := http.NewRequest("POST", "http://"+addr+"/svc/M", strings.NewReader("\x00\x00\x00\x00\x00"))
	req.Header.Set("Content-Type", "application/grpc-web")
	resp, err := newClient(false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || strings.Contains(string(body), "grpc-status") {
		t.Errorf("body %q, read error %v: want the response cut, with no trailer frame", body, err)
	}
}
