package proxy

import (
	"errors"
	"fmt"

	"github.com/straitproxy/strait/internal/stream"
)

// Side says which party an error came from.
type Side uint8

const (
	Internal   Side = iota // strait itself, or a hook
	Downstream             // the client
	Upstream               // the peer
)

func (s Side) String() string {
	switch s {
	case Downstream:
		return "downstream"
	case Upstream:
		return "upstream"
	}
	return "internal"
}

// Kind says what went wrong.
type Kind uint8

const (
	KindOther           Kind = iota
	KindConnect              // could not connect to the peer
	KindTimeout              // a named timeout expired
	KindProtocol             // the other side broke HTTP
	KindClosed               // the other side closed the connection
	KindNoPeer               // no peer could take the request
	KindLimit                // a limit was reached
	KindDownstreamGone       // the client went away; nothing can be answered
	KindFilter               // a hook returned an error
	KindRequestRejected      // the request was refused before proxying
	KindStatus               // the peer answered with a status chosen for a retry
)

var kindNames = [...]string{"other", "connect", "timeout", "protocol", "closed", "no_peer", "limit", "downstream_gone", "filter", "rejected", "status"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Error is a failed request: where it failed, how, the status to answer
// with, and whether another attempt is safe.
type Error struct {
	Side   Side
	Kind   Kind
	Status int    // status to answer with if no response was started
	Where  string // the step or timeout that failed, e.g. "upstream connect"
	Err    error  // the cause
	// Retry asks for another attempt (see Phases.FailToConnect).
	Retry bool
}

func (e *Error) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("%s %s: %s", e.Side, e.Kind, e.Where)
	}
	return fmt.Sprintf("%s %s: %s: %v", e.Side, e.Kind, e.Where, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// asError returns err as an *Error, wrapping a plain error as an internal
// one with the given status.
func asError(err error, side Side, kind Kind, status int, where string) *Error {
	var e *Error
	if errors.As(err, &e) {
		cp := *e // hooks may change it; a shared value must not be
		return &cp
	}
	return &Error{Side: side, Kind: kind, Status: status, Where: where, Err: err}
}

// ErrClientGone is the cause (context.Cause) of a Session's context when
// the client went away before its request was done.
var ErrClientGone = errors.New("proxy: client went away")

// ErrUnprocessed is what an Error's Err wraps when the peer said it did
// not process the request (an HTTP/2 GOAWAY above its stream, or
// REFUSED_STREAM): the request may go again, whatever its method, and the
// peer did not fail.
var ErrUnprocessed = stream.ErrUnprocessed
