package proxy_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// scriptedOrigin is an origin that can be told to misbehave. It parses
// every request it reads with net/http (a strict, independent parser) and
// records what it received on which connection, so that a test can check,
// after a failure, that no request reached it damaged and that the next one
// arrived whole: the sign that strait did not reuse a connection it left in
// an unknown state.
type scriptedOrigin struct {
	addr   string
	handle func(oc *originConn, req *http.Request) bool

	mu    sync.Mutex
	seen  []*seenRequest
	conns int
}

// seenRequest is one request the origin read, or failed to read.
type seenRequest struct {
	conn    int
	method  string
	path    string
	header  http.Header
	body    string
	err     error // reading the head or the body failed
	trailer http.Header
}

// originConn is one connection to a scriptedOrigin.
type originConn struct {
	id int
	c  net.Conn
	br *bufio.Reader
	o  *scriptedOrigin
}

// newOrigin starts a scripted origin on a free loopback port. handle serves
// each request (after its head was read) and reports whether the connection
// goes on; nil serves every request with serveOK. Connections close when
// the test ends.
func newOrigin(t testing.TB, handle func(oc *originConn, req *http.Request) bool) *scriptedOrigin {
	t.Helper()
	if handle == nil {
		handle = serveOK
	}
	o := &scriptedOrigin{handle: handle}
	var wg sync.WaitGroup
	var conns sync.Map
	o.addr = acceptLoop(t, func(c net.Conn) {
		wg.Add(1)
		defer wg.Done()
		conns.Store(c, true)
		defer conns.Delete(c)
		o.mu.Lock()
		o.conns++
		oc := &originConn{id: o.conns, c: c, br: bufio.NewReader(c), o: o}
		o.mu.Unlock()
		for {
			req, err := http.ReadRequest(oc.br)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isConnReset(err) {
					o.record(&seenRequest{conn: oc.id, err: fmt.Errorf("request head: %w", err)})
				}
				return
			}
			if !handle(oc, req) {
				return
			}
		}
	})
	t.Cleanup(func() {
		conns.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
	})
	return o
}

func isConnReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

func (o *scriptedOrigin) record(s *seenRequest) {
	o.mu.Lock()
	o.seen = append(o.seen, s)
	o.mu.Unlock()
}

// requests returns what the origin has seen so far.
func (o *scriptedOrigin) requests() []seenRequest {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]seenRequest, len(o.seen))
	for i, s := range o.seen {
		out[i] = *s
	}
	return out
}

// readBody reads the request's body to its end and records the request.
func (oc *originConn) readBody(req *http.Request) *seenRequest {
	body, err := io.ReadAll(req.Body)
	s := &seenRequest{conn: oc.id, method: req.Method, path: req.URL.RequestURI(), header: req.Header, body: string(body), trailer: req.Trailer}
	if err != nil {
		s.err = fmt.Errorf("request body: %w", err)
	}
	oc.o.record(s)
	return s
}

// recordHead records the request without reading its body.
func (oc *originConn) recordHead(req *http.Request) {
	oc.o.record(&seenRequest{conn: oc.id, method: req.Method, path: req.URL.RequestURI(), header: req.Header})
}

func (oc *originConn) write(s string) error {
	_, err := io.WriteString(oc.c, s)
	return err
}

// serveOK reads the body and answers 200 with the path as the body.
func serveOK(oc *originConn, req *http.Request) bool {
	s := oc.readBody(req)
	if s.err != nil {
		return false
	}
	return oc.write(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(s.path), s.path)) == nil
}

// checkNext sends GET /next through the proxy on a new client connection
// and checks that it is answered by the origin, which received it whole;
// and that nothing the origin read before was damaged, other than the
// requests whose paths are in damaged.
func checkNext(t *testing.T, proxyAddr string, o *scriptedOrigin, damaged ...string) {
	t.Helper()
	c, br := rawConn(t, proxyAddr)
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET /next after the failure: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "/next" {
		t.Errorf("GET /next after the failure: %d %q", resp.StatusCode, body)
	}
	found := false
	for _, s := range o.requests() {
		ok := false
		for _, d := range damaged {
			ok = ok || s.path == d
		}
		if s.err != nil && !ok {
			t.Errorf("the origin read a damaged request on connection %d (%s %s): %v", s.conn, s.method, s.path, s.err)
		}
		if s.path == "/next" && s.err == nil && s.method == "GET" {
			found = true
		}
	}
	if !found {
		t.Errorf("the origin did not receive GET /next whole: %+v", o.requests())
	}
}

// waitFor polls cond for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}
