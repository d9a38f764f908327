package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Origin is an HTTP/1.1 origin that says what it received: the
// request's protocol, method, target, Host and a few fields, and its
// body's length and sha256. /trailer answers with a trailer field.
func h2Origin(t *testing.T) (string, *atomic.Int64) {
	var requests atomic.Int64
	addr := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/trailer" {
			w.Header().Set("Trailer", "X-Sum")
		}
		sum := sha256.Sum256(body)
		fmt.Fprintf(w, "%s %s %s host=%s cookie=%q proto=%s te=%q len=%d sum=%x req-trailer=%q",
			r.Proto, r.Method, r.RequestURI, r.Host, r.Header.Get("Cookie"), r.Header.Get("X-Forwarded-Proto"),
			r.Header.Get("Te"), len(body), sum[:4], r.Trailer.Get("X-Req-T"))
		if r.URL.Path == "/trailer" {
			w.Header().Set("X-Sum", fmt.Sprintf("%x", sum[:4]))
		}
	}))
	return addr, &requests
}

// h2Strait runs strait with a cleartext listener and a TLS one, both to
// origin, and returns their addresses and the CA file.
func h2Strait(t *testing.T, origin, extra string) (plain, secure, caFile string, p *proc) {
	ca := newTestCA(t)
	dir := t.TempDir()
	cert, key := ca.issue(t, dir, "h2", 7, "h2.test")
	caFile = writeFile(t, dir, "ca.pem", ca.pem)
	plain = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	secure = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p = runConfig(t, dir, "h2.yaml", fmt.Sprintf(`listeners:
  - {address: %s, routes: [{cluster: o}]}
  - address: %s
    tls: {certificates: [{cert: %s, key: %s}]}
    routes: [{cluster: o}]
clusters: [{name: o, endpoints: [%q]}]
%s`, plain, secure, cert, key, origin, extra), plain)
	waitPort(t, secure, 5*time.Second, nil)
	return plain, secure, caFile, p
}

// TestHTTP2Clients: curl (prior knowledge, and TLS with ALPN), Go's
// HTTP/2 transport and h2load reach an HTTP/1.1 origin through strait;
// HTTP/1.1 goes on on the same port.
func TestHTTP2Clients(t *testing.T) {
	origin, _ := h2Origin(t)
	plain, secure, caFile, _ := h2Strait(t, origin, "")
	_, port, _ := net.SplitHostPort(secure)

	r := mustCurl(t, "-sS", "--http2-prior-knowledge", "-w", " %{http_version}", "-H", "Cookie: a=1", "http://"+plain+"/x?y=1")
	if got := string(r.Stdout); !strings.HasPrefix(got, "HTTP/1.1 GET /x?y=1 host="+plain+` cookie="a=1" proto=http`) || !strings.HasSuffix(got, " 2") {
		t.Errorf("curl h2c: %q", got)
	}
	r = mustCurl(t, "-sS", "--http2", "--cacert", caFile, "--resolve", "h2.test:"+port+":127.0.0.1", "-w", " %{http_version}",
		"--data-binary", "hello", "https://h2.test:"+port+"/p")
	if got := string(r.Stdout); !strings.HasPrefix(got, "HTTP/1.1 POST /p host=h2.test:"+port) || !strings.Contains(got, "proto=https") ||
		!strings.Contains(got, "len=5") || !strings.HasSuffix(got, " 2") {
		t.Errorf("curl h2 over TLS: %q", got)
	}
	if r := mustCurl(t, "-sS", "--http1.1", "-w", " %{http_version}", "http://"+plain+"/h1"); !strings.HasSuffix(string(r.Stdout), " 1.1") {
		t.Errorf("HTTP/1.1 on the same port: %q", r.Stdout)
	}

	// Go's transport: h2c, a 1 MiB body up, and trailers both ways.
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: &protos}, Timeout: 10 * time.Second}
	body := randomBytes(1 << 20)
	sum := sha256.Sum256(body)
	req, _ := http.NewRequest("PUT", "http://"+plain+"/trailer", io.MultiReader(bytes.NewReader(body)))
	req.Trailer = http.Header{"X-Req-T": nil}
	req.Body = &trailerBody{r: bytes.NewReader(body), set: func() { req.Trailer.Set("X-Req-T", "t1") }}
	resp, err := h2c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := fmt.Sprintf("len=%d sum=%x req-trailer=\"t1\"", len(body), sum[:4])
	if resp.ProtoMajor != 2 || !strings.Contains(string(got), want) {
		t.Errorf("Go h2c PUT: %s %q, want %q", resp.Proto, got, want)
	}
	if v := resp.Trailer.Get("X-Sum"); v != fmt.Sprintf("%x", sum[:4]) {
		t.Errorf("response trailer X-Sum %q", v)
	}

	// h2load: 2,000 requests, 4 connections of 10 streams each.
	if h2load := needTool(t, "h2load"); h2load != "" {
		out, err := exec.Command(h2load, "-n", "2000", "-c", "4", "-m", "10", "http://"+plain+"/").CombinedOutput()
		if err != nil || !regexp.MustCompile(`requests: 2000 total, 2000 started, 2000 done, 2000 succeeded`).Match(out) ||
			!strings.Contains(string(out), "status codes: 2000 2xx") {
			t.Errorf("h2load: %v\n%s", err, out)
		}
	}
}

// trailerBody is a request body that sets its trailer when read whole.
type trailerBody struct {
	r   io.Reader
	set func()
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.set()
	}
	return n, err
}
func (b *trailerBody) Close() error { return nil }

// h2Client is a raw HTTP/2 client over cleartext: frames as they are
// written, for requests no well-behaved client would send.
type h2Client struct {
	settings *http2.SettingsFrame // the server's first
	nc       net.Conn
	fr       *http2.Framer
	enc      *hpack.Encoder
	hb       bytes.Buffer
}

func dialH2(t *testing.T, addr string) *h2Client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &h2Client{nc: nc}
	c.fr = http2.NewFramer(nc, bufio.NewReader(nc))
	c.enc = hpack.NewEncoder(&c.hb)
	io.WriteString(nc, http2.ClientPreface)
	c.fr.WriteSettings()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's preface: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			c.settings = sf
			c.fr.WriteSettingsAck()
			return c
		}
	}
}

// headers sends a HEADERS frame of fields, given as name, value pairs,
// encoded as they are.
func (c *h2Client) headers(id uint32, end bool, fields ...string) {
	c.hb.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hb.Bytes(), EndStream: end, EndHeaders: true})
}

// outcome reads frames until stream id ends, and returns what ended it:
// "status NNN", "rst CODE" or "goaway CODE".
func (c *h2Client) outcome(id uint32) string {
	status := ""
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == ":status" {
			status = f.Value
		}
	})
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return "error " + err.Error()
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			dec.Write(f.HeaderBlockFragment())
			if f.StreamID == id && f.StreamEnded() {
				return "status " + status
			}
		case *http2.DataFrame:
			if f.StreamID == id && f.StreamEnded() {
				return "status " + status
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "rst " + f.ErrCode.String()
			}
		case *http2.GoAwayFrame:
			return "goaway " + f.ErrCode.String()
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				c.fr.WritePing(true, f.Data)
			}
		}
	}
}

// TestHTTP2Malformed: requests HTTP/2 forbids, or that would become an
// ambiguous HTTP/1.1 request, are reset with PROTOCOL_ERROR and never
// reach the origin; the connection goes on.
func TestHTTP2Malformed(t *testing.T) {
	origin, requests := h2Origin(t)
	plain, _, _, _ := h2Strait(t, origin, "")
	base := []string{":method", "GET", ":scheme", "http", ":path", "/", ":authority", "a.test"}
	with := func(extra ...string) []string { return append(append([]string(nil), base...), extra...) }
	cases := map[string][]string{
		"upper-case name":         with("X-Upper", "1"),
		"connection":              with("connection", "keep-alive"),
		"keep-alive":              with("keep-alive", "5"),
		"proxy-connection":        with("proxy-connection", "close"),
		"transfer-encoding":       with("transfer-encoding", "chunked"),
		"upgrade":                 with("upgrade", "websocket"),
		"te gzip":                 with("te", "gzip"),
		"CR in a value":           with("x-a", "a\rb"),
		"LF in a value":           with("x-a", "a\nx-injected: 1"),
		"NUL in a value":          with("x-a", "a\x00b"),
		"leading space":           with("x-a", " a"),
		"colon in a name":         with("x:a", "1"),
		"host differs":            with("host", "b.test"),
		"two content-lengths":     with("content-length", "1", "content-length", "2"),
		"content-length with +":   with("content-length", "+0"),
		"space in :path":          {":method", "GET", ":scheme", "http", ":path", "/a b", ":authority", "a.test"},
		"LF in :path":             {":method", "GET", ":scheme", "http", ":path", "/a\nb", ":authority", "a.test"},
		"relative :path":          {":method", "GET", ":scheme", "http", ":path", "a", ":authority", "a.test"},
		"method not a token":      {":method", "GE T", ":scheme", "http", ":path", "/", ":authority", "a.test"},
		"no :path":                {":method", "GET", ":scheme", "http", ":authority", "a.test"},
		"empty :path":             {":method", "GET", ":scheme", "http", ":path", "", ":authority", "a.test"},
		"two :path":               with(":path", "/b"),
		":status in a request":    with(":status", "200"),
		"unknown pseudo-field":    with(":protocol", "websocket"),
		"pseudo after regular":    {":method", "GET", "x-a", "1", ":scheme", "http", ":path", "/", ":authority", "a.test"},
		"space in :authority":     {":method", "GET", ":scheme", "http", ":path", "/", ":authority", "a.test x"},
		"content-length, no body": with("content-length", "3"),
		"CONNECT with :path":      {":method", "CONNECT", ":authority", "a.test:443", ":path", "/"},
		"trailing tab in a value": with("x-a", "a\t"),
		"DEL in a value":          with("x-a", "a\x7fb"),
		"empty name":              with("", "x"),
		"upper-case Host":         {":method", "get", ":scheme", "http", ":path", "/", ":authority", "a.test", "Host", "a.test"},
		// What HTTP/1.1 would refuse (the attacker review: a host route
		// was bypassed with the first two).
		"slash in :authority":    {":method", "GET", ":scheme", "http", ":path", "/", ":authority", "internal.example/.public.example"},
		"hash in :authority":     {":method", "GET", ":scheme", "http", ":path", "/", ":authority", "internal.example#.public.example"},
		"userinfo in :authority": {":method", "GET", ":scheme", "http", ":path", "/", ":authority", "user:pw@a.test"},
		"quote in :authority":    {":method", "GET", ":scheme", "http", ":path", "/", ":authority", `a"test`},
		"hash in :path":          {":method", "GET", ":scheme", "http", ":path", "/echo#frag", ":authority", "a.test"},
		"quote in :path":         {":method", "GET", ":scheme", "http", ":path", `/echo"<>`, ":authority", "a.test"},
		"bad escape in :path":    {":method", "GET", ":scheme", "http", ":path", "/echo?a=%zz", ":authority", "a.test"},
		"slash in host":          with("host", "a.test/x"),
	}
	c := dialH2(t, plain)
	id := uint32(1)
	for name, fields := range cases {
		c.headers(id, true, fields...)
		if got := c.outcome(id); got != "rst PROTOCOL_ERROR" {
			t.Errorf("%s: %s, want rst PROTOCOL_ERROR", name, got)
		}
		id += 2
	}
	// A stream that depends on itself is reset and never started.
	c.hb.Reset()
	for i := 0; i+1 < len(base); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: base[i], Value: base[i+1]})
	}
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hb.Bytes(), EndStream: true, EndHeaders: true,
		Priority: http2.PriorityParam{StreamDep: id, Weight: 1}})
	if got := c.outcome(id); got != "rst PROTOCOL_ERROR" {
		t.Errorf("a stream that depends on itself: %s", got)
	}
	id += 2
	// A body longer than its content-length.
	c.headers(id, false, with("content-length", "2")...)
	c.fr.WriteData(id, true, []byte("abc"))
	if got := c.outcome(id); got != "rst PROTOCOL_ERROR" {
		t.Errorf("a body longer than content-length: %s", got)
	}
	id += 2
	if n := requests.Load(); n != 0 {
		t.Errorf("the origin received %d of the malformed requests", n)
	}
	// A header list over 64 KiB, in CONTINUATION frames: 431.
	c.hb.Reset()
	for i := 0; i+1 < len(base); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: base[i], Value: base[i+1]})
	}
	c.enc.WriteField(hpack.HeaderField{Name: "x-big", Value: strings.Repeat("v", 70<<10)})
	block := c.hb.Bytes()
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block[:16384], EndStream: true})
	for rest := block[16384:]; len(rest) > 0; {
		n := min(len(rest), 16384)
		c.fr.WriteContinuation(id, n == len(rest), rest[:n])
		rest = rest[n:]
	}
	if got := c.outcome(id); got != "status 431" {
		t.Errorf("a header list over 64 KiB: %s, want status 431", got)
	}
	id += 2
	if n := requests.Load(); n != 0 {
		t.Errorf("the origin received the request with the large header list")
	}
	// The connection goes on: a good request, with split cookies joined.
	c.headers(id, true, with("cookie", "a=1", "cookie", "b=2", "te", "trailers")...)
	if got := c.outcome(id); got != "status 200" {
		t.Errorf("a good request after the malformed ones: %s", got)
	}
	if requests.Load() != 1 {
		t.Errorf("the good request did not reach the origin")
	}
}

// TestH2spec runs h2spec v2.2.1 against strait: every case passes over TLS
// and on a cleartext port that serves HTTP/2 only. On a cleartext port
// that serves HTTP/1.1 too, 3.5/2 (an invalid preface, which must close
// the connection) is the one failure: "INVALID CONNECTION PREFACE" parses
// as an HTTP/1.1 request line, and gets 400 as one.
func TestH2spec(t *testing.T) {
	h2spec := needTool(t, "h2spec")
	if h2spec == "" {
		return
	}
	origin, _ := h2Origin(t)
	only := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	plain, secure, _, _ := h2Strait(t, origin, "")
	// A third strait: a cleartext listener that serves HTTP/2 only.
	runConfig(t, t.TempDir(), "only.yaml", fmt.Sprintf(`listeners:
  - {address: %s, http2: only, routes: [{cluster: o}]}
clusters: [{name: o, endpoints: [%q]}]
`, only, origin), only)
	run := func(addr string, args ...string) (string, string) {
		host, port, _ := net.SplitHostPort(addr)
		out, _ := exec.Command(h2spec, append([]string{"-h", host, "-p", port, "-o", "5"}, args...)...).CombinedOutput()
		m := regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("h2spec %s: no summary:\n%s", addr, out)
		}
		return string(m[0]), string(out)
	}
	for name, c := range map[string]struct {
		addr string
		args []string
		want string
	}{
		"tls":         {secure, []string{"-t", "-k"}, "145 tests, 145 passed, 0 skipped, 0 failed"},
		"h2c only":    {only, nil, "145 tests, 145 passed, 0 skipped, 0 failed"},
		"h2c with h1": {plain, nil, "145 tests, 144 passed, 0 skipped, 1 failed"},
	} {
		sum, out := run(c.addr, c.args...)
		if sum != c.want {
			t.Errorf("h2spec %s: %s, want %s\n%s", name, sum, c.want, out[strings.Index(out, "Failures"):])
		} else if name == "h2c with h1" && !strings.Contains(out, "3.5. HTTP/2 Connection Preface\n      × 2: Sends invalid connection preface") {
			t.Errorf("h2spec %s: the failure is not 3.5/2:\n%s", name, out[strings.Index(out, "Failures"):])
		}
		t.Logf("h2spec %s: %s", name, sum)
	}
}

// TestHTTP2Bodies: request bodies strait does not read (answered 413
// early) give their bytes back to the connection's window, and the
// trailers or DATA a client sends after strait's reset are dropped, not
// answered with the connection's end; a client that waits for 100
// Continue gets it.
func TestHTTP2Bodies(t *testing.T) {
	origin, _ := h2Origin(t)
	plain, _, _, _ := h2Strait(t, origin, "limits: {max_request_body: 1KiB}\n")
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &protos}, Timeout: 10 * time.Second}
	big := bytes.Repeat([]byte("x"), 60<<10)
	for i := range 100 { // 6 MiB refused, on one connection: past its 1 MiB window if not given back
		resp, err := client.Post("http://"+plain+"/up", "application/octet-stream", bytes.NewReader(big))
		if err != nil {
			t.Fatalf("upload %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Fatalf("upload %d: %d, want 413", i, resp.StatusCode)
		}
	}
	start := time.Now()
	resp, err := client.Post("http://"+plain+"/small", "text/plain", strings.NewReader("hello"))
	if err != nil || resp.StatusCode != 200 || time.Since(start) > 2*time.Second {
		t.Fatalf("a small upload after 100 refused: %v %v after %v", resp, err, time.Since(start))
	}
	resp.Body.Close()

	// Trailers and DATA after strait answered and reset the stream.
	c := dialH2(t, plain)
	c.headers(1, false, ":method", "POST", ":scheme", "http", ":path", "/up", ":authority", "a.test", "content-length", "100000")
	if got := c.outcome(1); got != "status 413" {
		t.Fatalf("an upload over the limit: %s", got)
	}
	c.fr.WriteData(1, false, []byte("late"))
	c.headers(1, true, "x-trailer", "late")
	c.headers(3, true, ":method", "GET", ":scheme", "http", ":path", "/after", ":authority", "a.test")
	if got := c.outcome(3); got != "status 200" {
		t.Errorf("a request after late trailers: %s, want the connection to go on", got)
	}

	r := mustCurl(t, "-sS", "--http2-prior-knowledge", "-H", "Expect: 100-continue", "--expect100-timeout", "10",
		"--data-binary", "abc", "-w", " %{time_total}", "http://"+plain+"/c")
	var took float64
	fmt.Sscanf(string(r.Stdout[bytes.LastIndexByte(r.Stdout, ' ')+1:]), "%g", &took)
	if !strings.Contains(string(r.Stdout), "len=3") || took > 2 {
		t.Errorf("Expect: 100-continue: %q", r.Stdout)
	}
}

// TestHTTP2OnlyTLS: a TLS listener with http2: only serves clients that
// offer h2, and refuses the handshake of one that offers http/1.1 only
// (crypto/tls would go on without ALPN, and the client get HTTP/2 bytes).
func TestHTTP2OnlyTLS(t *testing.T) {
	origin, _ := h2Origin(t)
	ca := newTestCA(t)
	dir := t.TempDir()
	cert, key := ca.issue(t, dir, "o", 8, "o.test")
	caFile := writeFile(t, dir, "ca.pem", ca.pem)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, dir, "o.yaml", fmt.Sprintf(`listeners:
  - address: %s
    http2: only
    tls: {certificates: [{cert: %s, key: %s}]}
    routes: [{cluster: o}]
clusters: [{name: o, endpoints: [%q]}]
`, addr, cert, key, origin), addr)
	_, port, _ := net.SplitHostPort(addr)
	base := []string{"-sS", "--cacert", caFile, "--resolve", "o.test:" + port + ":127.0.0.1", "-w", " %{http_version}"}
	if r := mustCurl(t, append(base, "--http2", "https://o.test:"+port+"/")...); !strings.HasSuffix(string(r.Stdout), " 2") {
		t.Errorf("h2: %q", r.Stdout)
	}
	if r := runCurl(t, append(base, "--http1.1", "https://o.test:"+port+"/")...); r.ExitCode != 35 {
		t.Errorf("an http/1.1-only client: curl exit %d (want 35, a failed handshake): %q %s", r.ExitCode, r.Stdout, r.Stderr)
	}
}

// TestHTTP2BodyTimeout: a stream whose client stops sending its body is
// answered 408 after the body timeout, and only that stream: the others on
// its connection go on meanwhile, and so does the connection. The origin
// never gets a whole request from the stalled stream.
func TestHTTP2BodyTimeout(t *testing.T) {
	var complete, partial atomic.Int64
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			partial.Add(1)
			return
		}
		if r.URL.Path == "/stalled" {
			complete.Add(1)
		}
		io.WriteString(w, "ok")
	}))
	for _, buffering := range []string{"on", "off"} {
		t.Run("request_buffering="+buffering, func(t *testing.T) {
			plain := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			runConfig(t, t.TempDir(), "h2.yaml", fmt.Sprintf(`listeners:
  - {address: %s, routes: [{cluster: o, request_buffering: %s}]}
clusters: [{name: o, endpoints: [%q]}]
timeouts: {body: 600ms}
`, plain, buffering, origin), plain)
			c := dialH2(t, plain)
			start := time.Now()
			c.headers(1, false, ":method", "POST", ":scheme", "http", ":path", "/stalled", ":authority", "a.test", "content-length", "100")
			c.fr.WriteData(1, false, []byte("abc"))
			// Another stream meanwhile is served at once.
			c.headers(3, true, ":method", "GET", ":scheme", "http", ":path", "/other", ":authority", "a.test")
			if got := c.outcome(3); got != "status 200" || time.Since(start) > 500*time.Millisecond {
				t.Fatalf("a stream beside the stalled one: %s after %v", got, time.Since(start))
			}
			got := c.outcome(1)
			took := time.Since(start)
			if got != "status 408" && got != "rst INTERNAL_ERROR" && got != "rst CANCEL" {
				t.Errorf("the stalled stream: %s, want 408 or a reset", got)
			}
			if took < 500*time.Millisecond || took > 3*time.Second {
				t.Errorf("the stalled stream ended after %v; the body timeout is 600ms", took)
			}
			c.headers(5, true, ":method", "GET", ":scheme", "http", ":path", "/after", ":authority", "a.test")
			if got := c.outcome(5); got != "status 200" {
				t.Errorf("a stream after the timeout: %s, want the connection to go on", got)
			}
			t.Logf("request_buffering %s: the stalled stream ended with %s after %v", buffering, got, took.Round(time.Millisecond))
		})
	}
	if n := complete.Load(); n != 0 {
		t.Errorf("the origin got %d whole requests from stalled streams", n)
	}
	// Unbuffered, the origin got the head and 3 bytes, then the abort.
	if n := partial.Load(); n != 1 {
		t.Errorf("the origin saw %d requests whose body broke off, want 1 (the unbuffered one)", n)
	}
}
