package grpcwire

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"

	"github.com/straitproxy/strait/header"
)

// The gRPC-Web protocol (grpc/grpc's doc/PROTOCOL-WEB.md) is gRPC's
// framing in an HTTP/1.1 or HTTP/2 body that browsers can read: the
// trailers become a last frame of the body, flagged 0x80, and in the text
// form the whole body is base64.

// UpstreamContentType is the gRPC Content-Type a gRPC-Web one becomes.
func UpstreamContentType(webContentType []byte) string {
	return "application/grpc" + Codec(webContentType)
}

// WebContentType is the gRPC-Web Content-Type of kind k a gRPC response's
// Content-Type becomes.
func WebContentType(grpcContentType []byte, k Kind) string {
	base := "application/grpc-web"
	if k == WebText {
		base = "application/grpc-web-text"
	}
	return base + Codec(grpcContentType)
}

// AppendTrailerFrame appends t as a gRPC-Web trailer frame: the flag
// 0x80, a four-byte length, then "name: value\r\n" for each field, names
// in lower case.
func AppendTrailerFrame(b []byte, t *header.Header) []byte {
	b = append(b, 0x80, 0, 0, 0, 0)
	start := len(b)
	for _, f := range t.Fields() {
		for _, c := range f.Name {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			b = append(b, c)
		}
		b = append(b, ':', ' ')
		b = append(b, f.Value...)
		b = append(b, '\r', '\n')
	}
	binary.BigEndian.PutUint32(b[start-4:start], uint32(len(b)-start))
	return b
}

// AppendText appends p in base64, padded: each piece on its own, which
// gRPC-Web clients decode as they come (PROTOCOL-WEB.md allows padded
// pieces one after another).
func AppendText(b, p []byte) []byte {
	return base64.StdEncoding.AppendEncode(b, p)
}

// ErrText is a grpc-web-text body that is not base64.
var ErrText = errors.New("grpc-web-text: the body is not base64")

// TextDecoder decodes a grpc-web-text request body as it streams in:
// base64 in groups of four, each padded group ending a piece, with a
// group split across reads kept for the next.
type TextDecoder struct {
	rest [4]byte
	n    int
}

// Reset readies d for another body.
func (d *TextDecoder) Reset() { d.n = 0 }

// Decode appends the bytes p decodes to (as far as whole groups go) to
// dst.
func (d *TextDecoder) Decode(dst, p []byte) ([]byte, error) {
	for len(p) > 0 {
		if d.n > 0 || len(p) < 4 {
			k := copy(d.rest[d.n:], p)
			d.n += k
			p = p[k:]
			if d.n < 4 {
				return dst, nil
			}
			var err error
			if dst, err = appendGroups(dst, d.rest[:4]); err != nil {
				return dst, err
			}
			d.n = 0
			continue
		}
		whole := len(p) &^ 3
		var err error
		if dst, err = appendGroups(dst, p[:whole]); err != nil {
			return dst, err
		}
		p = p[whole:]
	}
	return dst, nil
}

// appendGroups decodes whole groups of four, where a padded group may
// come before others.
func appendGroups(dst, p []byte) ([]byte, error) {
	if bytes.ContainsAny(p, "\r\n") {
		return dst, ErrText // which encoding/base64 would skip, moving the groups
	}
	for len(p) > 0 {
		// Up to the first padded group, in one call.
		end := len(p)
		for i := 0; i < len(p); i += 4 {
			if p[i+3] == '=' {
				end = i + 4
				break
			}
		}
		var err error
		if dst, err = base64.StdEncoding.AppendDecode(dst, p[:end]); err != nil {
			return dst, ErrText
		}
		p = p[end:]
	}
	return dst, nil
}

// End reports an error if the body ended inside a group.
func (d *TextDecoder) End() error {
	if d.n != 0 {
		return ErrText
	}
	return nil
}
