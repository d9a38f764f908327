package proxy

import (
	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/hop"
	"github.com/straitproxy/strait/internal/stream"
)

// upgradeOffer returns the protocols the client asks to switch to that
// Options.Upgrades allows, as the field to send upstream; nil if none (the
// request then goes as a plain one). h2c is never offered: strait speaks
// HTTP/1.1 upstream.
func (x *call) upgradeOffer() []byte {
	if x.head.Upgrade == nil {
		return nil
	}
	var offer []byte
	for tok := range header.Elements(x.head.Upgrade) {
		if x.srv.upgradeAllowed(tok) {
			if offer != nil {
				offer = append(offer, ", "...)
			}
			offer = append(offer, tok...)
		}
	}
	return offer
}

// upgradeAllowed reports whether Options.Upgrades lists the protocol of an
// Upgrade token ("websocket", "foo/2").
func (srv *Server) upgradeAllowed(tok []byte) bool {
	name := protocolName(tok)
	if header.EqualFold(name, "h2c") {
		return false
	}
	for _, p := range srv.opts.Upgrades {
		if header.EqualFold(name, p) {
			return true
		}
	}
	return false
}

// protocolName is an Upgrade token without its version.
func protocolName(tok []byte) []byte {
	for i, ch := range tok {
		if ch == '/' {
			return tok[:i]
		}
	}
	return tok
}

// switchedTo checks a 101 response against the upgrade the request
// offered, and returns the protocol it switches to: it must be one the
// client asked for and strait allows (RFC 9110 §7.8).
func switchedTo(resp *stream.Response, offer []byte) ([]byte, *Error) {
	if offer == nil {
		return nil, &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "upstream switched protocols unasked"}
	}
	proto := resp.Header.Get("upgrade")
	if len(proto) > 0 {
		for tok := range header.Elements(offer) {
			if header.EqualFold(protocolName(proto), protocolName(tok)) {
				return proto, nil
			}
		}
	}
	return nil, &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "upstream switched to a protocol not asked for"}
}

// tunnel relays the 101 response and then bytes both ways until both sides
// are done, the tunnel is idle for Timeouts.TunnelIdle, or the server
// closes.
func (x *call) tunnel(up stream.Upstream, resp *stream.Response, proto []byte) *Error {
	s := &x.sess
	hop.StripMarked(resp.Header, resp.Conn)
	x.answer = stream.ResponseHead{Status: 101, Reason: resp.Reason, Header: resp.Header, Upgrade: proto}
	if _, err := x.ds.WriteHead(&x.answer); err != nil {
		return &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "101 response head", Err: err}
	}
	s.answered = true
	s.Stats.Status = 101
	s.Response.Status = 101
	if err := x.ds.Flush(); err != nil {
		return downstreamWriteError(err)
	}
	r := x.ds.Tunnel(up, x.srv.opts.Timeouts.TunnelIdle)
	s.Stats.BytesIn += r.AtoB
	s.Stats.BytesOut += r.BtoA
	// The side at fault is the one whose connection failed: the client's
	// (a), or the upstream's (b). An idle tunnel is no one's failure.
	switch {
	case r.AErr != nil:
		return &Error{Side: Downstream, Kind: KindDownstreamGone, Where: "tunnel", Err: r.AErr}
	case r.BErr != nil:
		return &Error{Side: Upstream, Kind: KindClosed, Where: "tunnel", Err: r.BErr}
	}
	return nil
}
