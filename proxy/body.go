package proxy

import (
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/internal/hop"
	"github.com/straitproxy/strait/internal/stream"
)

// bodySender sends a request body upstream on a goroutine of its own, so
// that a response that comes first (401, 413, a stream) is relayed at once.
// The exchange starts it, then either waits for it (an upgrade needs the
// whole body first) or stops it (the response is complete, or the exchange
// failed). Either way the exchange learns whether the whole body went out:
// only then may the upstream connection carry another request.
//
// If the response is slow to come, the exchange asks the sender to watch
// the client once the body is sent: the sender's goroutine goes on as the
// watcher, and its result waits until it is stopped.
type bodySender struct {
	result  chan *Error  // the goroutine's result; buffered
	done    atomic.Bool  // the goroutine has its result
	state   atomic.Int32 // what the goroutine is doing, or is asked to do next
	running bool         // started and not yet waited for
	err     *Error       // the result, once waited for
}

// The body sender's states. The exchange moves sending to watchWanted when
// it would have the client watched, and back when it would rather not (an
// upgrade); the sender, with the body sent, moves watchWanted to watching,
// or else stores sent. Whichever comparison-and-swap fails learns the
// other's move.
const (
	sending     int32 = iota // the body is being sent
	sent                     // the goroutine is done with the body, and finishes
	watchWanted              // it is to watch the client once the body is sent
	watching                 // it sent the body and watches the client
)

// errBodyAborted is the body sender's result when the exchange stopped it
// before the whole body was sent. It never leaves the exchange.
var errBodyAborted = &Error{Side: Internal, Kind: KindOther, Where: "request body: stopped by the exchange"}

// startBody starts sending the request body to up.
func (x *call) startBody(up stream.Upstream) {
	b := &x.body
	b.running, b.err = true, nil
	b.done.Store(false)
	b.state.Store(sending)
	x.ds.Share()
	up.Share()
	go x.sendBody(up)
}

// sendBody is the body sender's goroutine. If the client's side fails (it
// left, stalled, or broke the framing) or a body filter does, the
// exchange's wait for the response is interrupted: the request is over.
// An upstream that stops reading is left to answer (it may have, early).
func (x *call) sendBody(up stream.Upstream) {
	b := &x.body
	e := x.copyBody(up)
	if e != nil && e != errBodyAborted && e.Side != Upstream {
		if e.Kind == KindDownstreamGone {
			x.sess.end(ErrClientGone)
		}
		up.Interrupt(stream.Read)
	}
	// Unless the exchange is over, it goes on waiting for the response:
	// if it asked, watch the client until it is stopped.
	goesOn := e == nil || e.Side == Upstream
	for !b.state.CompareAndSwap(sending, sent) {
		if b.state.CompareAndSwap(watchWanted, watching) {
			if goesOn {
				x.ds.Watch(x)
			}
			break
		}
	}
	b.done.Store(true)
	b.result <- e
}

// finishBody waits for the whole body to be sent, stopping the watch the
// body sender may have begun, and returns the sender's result.
func (x *call) finishBody(up stream.Upstream) *Error {
	b := &x.body
	if b.running && !b.state.CompareAndSwap(watchWanted, sending) && b.state.Load() == watching {
		x.ds.Interrupt(stream.Read) // the body is sent: this ends the watch only
	}
	e := x.waitBody(up)
	x.ds.ClearInterrupt(stream.Read)
	return e
}

// waitBody waits for the body sender to finish and returns its result.
func (x *call) waitBody(up stream.Upstream) *Error {
	b := &x.body
	if b.running {
		b.running = false
		b.err = <-b.result
		x.ds.Unshare()
		up.Unshare()
	}
	return b.err
}

// abortBody stops the body sender if it has not finished, waits for it,
// and returns its result: errBodyAborted if it was stopped first. The
// request body is left where the sender stopped; what is left of it may
// still be read (the interrupt consumed nothing).
func (x *call) abortBody(up stream.Upstream) *Error {
	b := &x.body
	if !b.running {
		return b.err
	}
	if !b.done.Load() {
		x.ds.Interrupt(stream.Read)
		up.Interrupt(stream.Write)
	}
	e := x.waitBody(up)
	x.ds.ClearInterrupt(stream.Read)
	up.ClearInterrupt(stream.Write)
	return e
}

// bodyStarted reports whether any of the request body was consumed, which
// rules out sending the request again.
func (x *call) bodyStarted() bool {
	return x.head.ContentLength != 0 && (x.ds.BodyDone() || x.sess.Stats.BytesIn > 0)
}

// copyBody copies the request body to up, through the body filter.
func (x *call) copyBody(up stream.Upstream) *Error {
	s := &x.sess
	ds := x.ds
	writeErr := func(err error) *Error {
		if up.Interrupted(stream.Write) {
			return errBodyAborted
		}
		return &Error{Side: Upstream, Kind: KindClosed, Status: 502, Where: "upstream write", Err: err}
	}
	filter := x.srv.phases.RequestBodyFilter
	limit := x.bodyLimit()
	for {
		data, rerr := ds.ReadBody()
		if rerr != nil && rerr != io.EOF {
			var pe stream.ProtocolError
			switch {
			case ds.Interrupted(stream.Read):
				return errBodyAborted
			case errors.As(rerr, &pe):
				return &Error{Side: Downstream, Kind: KindProtocol, Status: pe.HTTPStatus(), Where: "request body", Err: rerr}
			case isTimeout(rerr):
				return &Error{Side: Downstream, Kind: KindTimeout, Status: 408, Where: "request body timeout", Err: rerr}
			}
			return &Error{Side: Downstream, Kind: KindDownstreamGone, Where: "request body", Err: rerr}
		}
		s.Stats.BytesIn += int64(len(data))
		if limit > 0 && s.Stats.BytesIn > limit {
			x.srv.counters.BodyTooLarge.Add(1)
			return &Error{Side: Downstream, Kind: KindLimit, Status: 413, Where: "request body over the limit"}
		}
		if filter != nil {
			var err error
			if data, err = filter(s, data, rerr == io.EOF); err != nil {
				return asError(err, Internal, KindFilter, 500, "request body filter")
			}
		}
		if len(data) > 0 {
			if err := up.WriteBody(data); err != nil {
				return writeErr(err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if !ds.BodyBuffered() {
			if err := up.Flush(); err != nil {
				return writeErr(err)
			}
		}
	}
	if t := ds.Trailer(); t.Len() > 0 {
		hop.CopyTrailers(&s.Request.Trailer, t)
	}
	if err := up.EndBody(&s.Request.Trailer); err != nil {
		return writeErr(err)
	}
	if err := up.Flush(); err != nil {
		return writeErr(err)
	}
	return nil
}

// While a request waits for a slow upstream, nothing reads the client's
// connection, so a client that gives up would go unnoticed until the
// response is written. The client is watched (stream.Downstream.Watch)
// beside the exchange for responses slower than watchAfter, so fast
// requests pay nothing for it, and its goroutine ends with the wait: an
// idle connection keeps none. For a request with a body, the body sender
// becomes the watcher once it has sent the body.

// watchAfter is how long the exchange waits for a response head before it
// starts watching the client.
const watchAfter = 20 * time.Millisecond

// startWatch starts a watcher on a goroutine of its own, and reports
// whether it did: not if the watch buffer is full (the client sent plenty;
// it is there). The request body, if any, must have been sent.
func (x *call) startWatch(up stream.Upstream) bool {
	if !x.ds.CanWatch() {
		return false
	}
	x.ds.Share()
	up.Share()
	go func() {
		x.ds.Watch(x)
		x.watchDone <- struct{}{}
	}()
	return true
}

// stopWatch ends the watcher's read and waits for it. Its findings
// (clientGone, the bytes it read) may be used from then on.
func (x *call) stopWatch(up stream.Upstream) {
	x.ds.Interrupt(stream.Read)
	<-x.watchDone
	x.ds.ClearInterrupt(stream.Read)
	x.ds.Unshare()
	up.Unshare()
}

// ClientGone ends the request of a watched client that went away: its
// context, and the exchange's wait for the upstream
// (stream.ClientGoneNotifier).
func (x *call) ClientGone() {
	x.clientGone = true
	x.sess.end(ErrClientGone)
	x.up.Interrupt(stream.Read)
}
