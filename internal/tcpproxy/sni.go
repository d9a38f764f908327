package tcpproxy

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/straitproxy/strait/cluster"
	"github.com/straitproxy/strait/internal/clienthello"
	"github.com/straitproxy/strait/internal/sockio"
)

// Route sends TLS connections by their ClientHello, unterminated.
type Route struct {
	// Names are server names: exact, or *.example.com for one label
	// more; lower case.
	Names []string
	// ALPN, if set, also needs the client to offer one of these.
	ALPN    []string
	Cluster *cluster.Cluster
}

// matches reports whether r takes a ClientHello naming name and offering
// protos.
func (r *Route) matches(name string, protos []string) bool {
	if len(r.ALPN) > 0 && !slices.ContainsFunc(protos, func(p string) bool { return slices.Contains(r.ALPN, p) }) {
		return false
	}
	for _, n := range r.Names {
		if n == name {
			return true
		}
		if suffix, ok := strings.CutPrefix(n, "*"); ok && strings.HasSuffix(name, suffix) &&
			!strings.Contains(name[:len(name)-len(suffix)], ".") && len(name) > len(suffix) {
			return true
		}
	}
	return false
}

// maxHelloPeeks bounds the segments a ClientHello may come in: each is
// peeked and parsed whole again, so a hello sent a byte at a time would
// cost its square (16 KiB comes in 12 segments of a common MSS).
const maxHelloPeeks = 48

var errHelloDrip = errors.New("tcp: the ClientHello came in too many pieces")

// helloBufs are the buffers ClientHellos are peeked into.
var helloBufs = sync.Pool{New: func() any { b := make([]byte, clienthello.MaxRead); return &b }}

// peekHello reads the ClientHello at the start of c without taking it
// from the socket, so that the relay passes it on as it came (and the
// socket stays bare for splice). It waits up to timeout for all of it.
func peekHello(c sockio.Conn, timeout time.Duration) (clienthello.Info, error) {
	bp := helloBufs.Get().(*[]byte)
	defer helloBufs.Put(bp)
	var info clienthello.Info
	peeks := 0
	err := sockio.PeekUntil(c, *bp, time.Now().Add(timeout), func(b []byte) (bool, error) {
		var err error
		info, err = clienthello.Parse(b)
		if err == clienthello.ErrIncomplete {
			if peeks++; peeks == maxHelloPeeks {
				return false, errHelloDrip
			}
			return false, nil
		}
		return true, err
	})
	if err == sockio.ErrPeekFull {
		err = clienthello.ErrTooLarge
	}
	return info, err
}
