package hop_test

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/hop"
	"github.com/straitproxy/strait/internal/http1"
)

// FuzzStripConnFields reads its input as a request head and as a response
// head, and checks that removing the connection's fields by the parser's
// marks (StripMarked) leaves what Strip, which asks IsConnField of
// every name, leaves.
func FuzzStripConnFields(f *testing.F) {
	many := new(strings.Builder)
	for i := range 70 {
		fmt.Fprintf(many, "X-%d: v\r\n", i)
	}
	for _, fields := range []string{
		"Host: a\r\n",
		"Host: a\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nAccept: */*\r\n",
		"Host: a\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nX-Kept: 2\r\n",
		"Host: a\r\nconnection: Upgrade\r\nUPGRADE: websocket\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n",
		"Host: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n",
		"Host: a\r\nTransfer-Encoding: chunked\r\nConnection: te\r\n",
		"Host: a\r\nConnection: keep-alive\r\n" + many.String() + "Keep-Alive: 1\r\n",
		"Host: a\r\n" + many.String() + "Connection: close\r\n",
	} {
		f.Add([]byte(fields))
	}
	f.Fuzz(func(t *testing.T, fields []byte) {
		var lim http1.Limits
		var req http1.Request
		r := http1.NewReader(bytes.NewReader(append([]byte("GET / HTTP/1.1\r\n"+string(fields)), "\r\n"...)), lim)
		if r.ReadRequest(&req) == nil {
			checkStrip(t, "request", &req.Header, req.Conn)
		}
		var resp http1.Response
		r = http1.NewReader(bytes.NewReader(append([]byte("HTTP/1.1 200 OK\r\n"+string(fields)), "\r\n"...)), lim)
		if r.ReadResponse(&resp, []byte("GET")) == nil {
			checkStrip(t, "response", &resp.Header, resp.Conn)
		}
	})
}

func checkStrip(t *testing.T, what string, h *header.Header, m hop.Marks) {
	t.Helper()
	var want, got header.Header
	want.CopyFrom(h)
	got.CopyFrom(h)
	hop.Strip(&want)
	hop.StripMarked(&got, m)
	if !reflect.DeepEqual(names(&got), names(&want)) {
		t.Fatalf("%s with fields %q (marks %+v): kept %q, want %q", what, names(h), m, names(&got), names(&want))
	}
}

func names(h *header.Header) []string {
	var out []string
	for _, f := range h.Fields() {
		out = append(out, string(f.Name)+": "+string(f.Value))
	}
	return out
}
