// Package clienthello reads the server name (SNI) and the application
// protocols (ALPN) a TLS ClientHello offers, from the first bytes of a
// connection, without terminating TLS: a TLS passthrough routes by them
// and relays the bytes as they came.
//
// The handshake message is reassembled across TLS records (a ClientHello
// with post-quantum key shares is about 1.8 KiB; one may span several
// records) up to MaxHello bytes. Parsing uses x/crypto's cryptobyte, and
// the fuzz test holds the answers to crypto/tls's own: what crypto/tls
// takes, Parse takes with the same name and protocols.
package clienthello

import (
	"errors"
	"strings"

	"golang.org/x/crypto/cryptobyte"
)

// MaxHello is the largest ClientHello message read, in bytes.
const MaxHello = 16 << 10

// MaxRead is the most bytes Parse may need to see: MaxHello and the
// headers of the records it may span (each at least one byte long).
const MaxRead = MaxHello + 4 + 5*64

// Info is what a ClientHello says of where the client means to go.
type Info struct {
	// ServerName is the SNI, its ASCII letters lower-cased; "" when the
	// client sent none.
	ServerName string
	// Protocols are the ALPN protocols offered, in the client's order.
	Protocols []string
}

var (
	// ErrIncomplete: the bytes are a ClientHello's beginning; more are
	// needed.
	ErrIncomplete = errors.New("clienthello: incomplete")
	ErrNotTLS     = errors.New("clienthello: not a TLS handshake")
	ErrMalformed  = errors.New("clienthello: malformed ClientHello")
	ErrTooLarge   = errors.New("clienthello: ClientHello larger than 16 KiB")
)

const (
	recordHandshake   = 22
	typeClientHello   = 1
	extServerName     = 0
	extALPN           = 16
	maxRecord         = 1<<14 + 2048 // crypto/tls's largest record
	maxRecordsInHello = 64
)

// Parse reads the ClientHello at the start of b, the first bytes a client
// sent: ErrIncomplete if b is a beginning of one, another error if it
// cannot become one.
func Parse(b []byte) (Info, error) {
	var msg []byte
	need := -1 // the handshake message's length, once known
	for records := 0; need < 0 || len(msg) < need; records++ {
		if records == maxRecordsInHello {
			return Info{}, ErrMalformed
		}
		if len(b) < 5 {
			return Info{}, ErrIncomplete
		}
		if b[0] != recordHandshake || b[1] >= 0x10 { // as crypto/tls tells TLS from other bytes
			return Info{}, ErrNotTLS
		}
		n := int(b[3])<<8 | int(b[4])
		if n == 0 || n > maxRecord {
			return Info{}, ErrMalformed
		}
		if len(b) < 5+n {
			if need < 0 && len(msg)+len(b)-5 >= 4 {
				// Its length is known already: refuse a large one now.
				if _, err := helloLength(append(msg[:len(msg):len(msg)], b[5:]...)); err != nil {
					return Info{}, err
				}
			}
			return Info{}, ErrIncomplete
		}
		msg = append(msg, b[5:5+n]...)
		b = b[5+n:]
		if need < 0 && len(msg) >= 4 {
			l, err := helloLength(msg)
			if err != nil {
				return Info{}, err
			}
			need = 4 + l
		}
	}
	return parseHello(msg[4:need])
}

// helloLength checks the handshake header at the start of msg and
// returns the message's length.
func helloLength(msg []byte) (int, error) {
	if msg[0] != typeClientHello {
		return 0, ErrNotTLS
	}
	l := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
	if l > MaxHello {
		return 0, ErrTooLarge
	}
	return l, nil
}

// parseHello parses a ClientHello's body.
func parseHello(body []byte) (Info, error) {
	s := cryptobyte.String(body)
	var version uint16
	var random, sessionID, suites, compression cryptobyte.String
	if !s.ReadUint16(&version) || !s.ReadBytes((*[]byte)(&random), 32) ||
		!s.ReadUint8LengthPrefixed(&sessionID) ||
		!s.ReadUint16LengthPrefixed(&suites) || len(suites)%2 != 0 ||
		!s.ReadUint8LengthPrefixed(&compression) {
		return Info{}, ErrMalformed
	}
	var info Info
	if s.Empty() {
		return info, nil // no extensions
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return Info{}, ErrMalformed
	}
	seen := make(map[uint16]bool)
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) || seen[typ] {
			return Info{}, ErrMalformed
		}
		seen[typ] = true
		switch typ {
		case extServerName:
			name, ok := serverName(data)
			if !ok {
				return Info{}, ErrMalformed
			}
			info.ServerName = name
		case extALPN:
			protos, ok := alpn(data)
			if !ok {
				return Info{}, ErrMalformed
			}
			info.Protocols = protos
		}
	}
	return info, nil
}

// serverName reads the server_name extension (RFC 6066 §3): its host
// name, as crypto/tls takes it.
func serverName(data cryptobyte.String) (string, bool) {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || list.Empty() || !data.Empty() {
		return "", false
	}
	name := ""
	for !list.Empty() {
		var typ uint8
		var host cryptobyte.String
		if !list.ReadUint8(&typ) || !list.ReadUint16LengthPrefixed(&host) || host.Empty() {
			return "", false
		}
		if typ != 0 {
			continue
		}
		if name != "" {
			return "", false
		}
		name = string(host)
		if strings.HasSuffix(name, ".") {
			return "", false // RFC 6066: no trailing dot
		}
	}
	return asciiLower(name), true
}

// asciiLower lower-cases the ASCII letters of s only: a name is A-labels
// (RFC 6066 §3), and strings.ToLower would make the Kelvin sign a k, so
// that "\u212aube.test" took kube.test's route.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// alpn reads the application_layer_protocol_negotiation extension
// (RFC 7301 §3.1).
func alpn(data cryptobyte.String) ([]string, bool) {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || list.Empty() || !data.Empty() {
		return nil, false
	}
	var protos []string
	for !list.Empty() {
		var p cryptobyte.String
		if !list.ReadUint8LengthPrefixed(&p) || p.Empty() {
			return nil, false
		}
		protos = append(protos, string(p))
	}
	return protos, true
}
