package proxy

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/internal/grpcwire"
	"github.com/straitproxy/strait/internal/hop"
	"github.com/straitproxy/strait/internal/mono"
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
	result  chan *Error     // the goroutine's result; buffered
	done    atomic.Bool     // the goroutine has its result
	state   atomic.Int32    // what the goroutine is doing, or is asked to do next
	running bool            // started and not yet waited for
	err     *Error          // the result, once waited for
	sentAt  atomic.Int64    // when the whole body was sent (mono); 0: not yet
	up      stream.Upstream // what it sends to, for its task
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
	b.sentAt.Store(0)
	b.state.Store(sending)
	x.ds.Share()
	up.Share()
	b.up = up
	// On a worker kept from an earlier body, not a new goroutine: one a
	// request saves its creation, and the growth of its stack.
	x.srv.senders.Run((*sendTask)(x))
}

type sendTask call

func (t *sendTask) Run() {
	x := (*call)(t)
	up := x.body.up
	x.body.up = nil
	x.sendBody(up)
}

// sendBody is the body sender's goroutine. If the client's side fails (it
// left, stalled, or broke the framing) or a body filter does, the
// exchange's wait for the response is interrupted: the request is over.
// An upstream that stops reading is left to answer (it may have, early).
func (x *call) sendBody(up stream.Upstream) {
	b := &x.body
	e := x.copyBody(up)
	if e == nil {
		b.sentAt.Store(int64(mono.Now()))
	}
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

// bodyStarted reports whether any of the request body was consumed and
// cannot be sent again, which rules out sending the request again.
func (x *call) bodyStarted() bool {
	return x.head.ContentLength != 0 && !x.bufWhole && (x.ds.BodyDone() || x.sess.Stats.BytesIn > 0)
}

// readBody reads the next piece of the request body from the client,
// counted against the body-size limit and passed through the body
// filter; io.EOF comes with the last.
func (x *call) readBody() ([]byte, *Error, bool) {
	s := &x.sess
	ds := x.ds
	data, rerr := ds.ReadBody()
	if rerr != nil && rerr != io.EOF {
		var pe stream.ProtocolError
		switch {
		case ds.Interrupted(stream.Read):
			return nil, errBodyAborted, false
		case errors.As(rerr, &pe):
			return nil, &Error{Side: Downstream, Kind: KindProtocol, Status: pe.HTTPStatus(), Where: "request body", Err: rerr}, false
		case isTimeout(rerr):
			return nil, &Error{Side: Downstream, Kind: KindTimeout, Status: 408, Where: "request body timeout", Err: rerr}, false
		}
		return nil, &Error{Side: Downstream, Kind: KindDownstreamGone, Where: "request body", Err: rerr}, false
	}
	s.Stats.BytesIn += int64(len(data))
	if limit := x.bodyLimit(); limit > 0 && s.Stats.BytesIn > limit {
		x.srv.counters.BodyTooLarge.Add(1)
		return nil, &Error{Side: Downstream, Kind: KindLimit, Status: 413, Where: "request body over the limit"}, false
	}
	end := rerr == io.EOF
	if x.web && x.grpc == grpcwire.WebText {
		var err error
		x.webIn, err = x.textIn.Decode(x.webIn[:0], data)
		if err == nil && end {
			err = x.textIn.End()
		}
		if err != nil {
			return nil, &Error{Side: Downstream, Kind: KindProtocol, Status: 400, Where: "grpc-web-text request body", Err: err}, false
		}
		data = x.webIn
	}
	if filter := x.srv.phases.RequestBodyFilter; filter != nil {
		var err error
		if data, err = filter(s, data, end); err != nil {
			return nil, asError(err, Internal, KindFilter, 500, "request body filter"), false
		}
	}
	if end {
		if t := ds.Trailer(); t.Len() > 0 {
			hop.CopyTrailers(&s.Request.Trailer, t)
			for _, name := range s.Override.StripFields {
				s.Request.Trailer.Del(name)
			}
		}
	}
	return data, nil, end
}

// copyBody sends the request body to up: what was buffered, then the rest
// as it comes from the client.
func (x *call) copyBody(up stream.Upstream) *Error {
	writeErr := func(err error) *Error {
		if up.Interrupted(stream.Write) {
			return errBodyAborted
		}
		return &Error{Side: Upstream, Kind: KindClosed, Status: 502, Where: "upstream write", Err: err}
	}
	for _, b := range [...][]byte{x.buffered, x.pending} {
		if len(b) > 0 {
			if err := up.WriteBody(b); err != nil {
				return writeErr(err)
			}
		}
	}
	// A gRPC call that may be retried on a status keeps what it streams,
	// within the buffering limit: whole, it may go again (retryGRPC).
	keep := !x.bufWhole && x.grpc != grpcwire.NotGRPC && len(x.sess.Override.RetryGRPC) > 0 && x.keep(x.pending)
	x.pending = nil // a retry has none: it cannot happen after streaming
	if !x.bufWhole && !x.ds.BodyBuffered() {
		// What the client sent so far goes before waiting for more: a
		// stream's client may wait for an answer to it first.
		if err := up.Flush(); err != nil {
			return writeErr(err)
		}
	}
	for end := x.bufWhole; !end; {
		var data []byte
		var e *Error
		if data, e, end = x.readBody(); e != nil {
			return e
		}
		if len(data) > 0 {
			if err := up.WriteBody(data); err != nil {
				return writeErr(err)
			}
		}
		if keep && !x.keep(data) {
			keep = false
			x.dropBuffer() // too long to go again: nothing need be kept
		}
		if !end && !x.ds.BodyBuffered() {
			if err := up.Flush(); err != nil {
				return writeErr(err)
			}
		}
	}
	if err := up.EndBody(&x.sess.Request.Trailer); err != nil {
		return writeErr(err)
	}
	if err := up.Flush(); err != nil {
		return writeErr(err)
	}
	if keep && x.sess.Request.Trailer.Len() == 0 {
		x.bufWhole = true // read by the exchange once the sender is done
	}
	return nil
}

// keep adds a piece of a streamed body to the buffer, within the
// buffering limit and budget, and reports whether it could.
func (x *call) keep(data []byte) bool {
	limit := x.srv.opts.Buffering.Max
	if l := x.sess.Override.BufferMax; l != 0 {
		limit = l
	}
	need := len(x.buffered) + len(data)
	if limit <= 0 || int64(need) > limit || need > cap(x.buffered) && !x.growBuffer(need, -1, limit) {
		return false
	}
	x.buffered = append(x.buffered, data...)
	return true
}

// Buffered bodies are held in pooled buffers of a few sizes, the smallest
// that fits, so that a small body holds little memory; the budget counts
// what each holds.
var bodyBufSizes = [...]int{4 << 10, 16 << 10, DefaultBufferMax}

var bodyBufPools [len(bodyBufSizes)]sync.Pool

// getBodyBuf returns an empty buffer of capacity at least n: a pooled
// one up to DefaultBufferMax, else a new one of n.
func getBodyBuf(n int) *[]byte {
	for i, size := range bodyBufSizes {
		if n <= size {
			if p, ok := bodyBufPools[i].Get().(*[]byte); ok {
				return p
			}
			b := make([]byte, 0, size)
			return &b
		}
	}
	b := make([]byte, 0, n)
	return &b
}

func putBodyBuf(p *[]byte) {
	for i, size := range bodyBufSizes {
		if cap(*p) == size {
			*p = (*p)[:0]
			bodyBufPools[i].Put(p)
			return
		}
	}
}

// bufferBody reads the request body before an upstream is chosen, if it
// is no larger than the buffering limit and fits the budget, so that a
// slow client holds no upstream connection while it sends it. A body
// larger than the limit, or than what the budget has left, streams: a
// chunked one from where it outgrew them (pending), unless the Server
// refuses bodies over the budget (503). The budget counts the memory the
// buffer holds, not only the bytes in it.
func (x *call) bufferBody() *Error {
	opts := &x.srv.opts.Buffering
	limit := opts.Max
	if l := x.sess.Override.BufferMax; l != 0 {
		limit = l
	}
	n := x.head.ContentLength
	if n == 0 || limit <= 0 || n > limit {
		return nil // no body, no buffering, or too large: it streams
	}
	x.ds.Continue()
	for {
		if x.grpc != grpcwire.NotGRPC && !x.ds.BodyBuffered() {
			// A gRPC stream's client may wait for answers before it
			// sends more: only what is there is taken (grpc.go).
			return nil
		}
		data, e, end := x.readBody()
		if e != nil {
			return e
		}
		need := len(x.buffered) + len(data)
		if int64(need) > limit {
			x.pending = data // a chunked body past the limit streams from here
			return nil
		}
		if need > cap(x.buffered) {
			if !x.growBuffer(need, n, limit) {
				x.srv.counters.BufferOverBudget.Add(1)
				if opts.RefuseOverBudget {
					return &Error{Side: Internal, Kind: KindLimit, Status: 503, Where: "request body: buffer budget spent"}
				}
				x.pending = data
				return nil
			}
		}
		x.buffered = append(x.buffered, data...)
		if end {
			x.bufWhole = true
			x.srv.counters.BodiesBuffered.Add(1)
			return nil
		}
	}
}

// growBuffer makes room for need bytes of a body of length n (-1 if
// unknown) within limit, taking the memory from the budget, and reports
// whether it could. A body of known length gets room for all of it at
// once; one of unknown length, four times what it has, at least.
func (x *call) growBuffer(need int, n, limit int64) bool {
	size := int64(need) // at least: a body filter may make a body longer
	if n > 0 {
		size = max(size, n)
	} else {
		size = min(max(size, 4*int64(cap(x.buffered))), limit)
	}
	p := getBodyBuf(int(size))
	grow := int64(cap(*p)) - x.bufTaken
	if !x.srv.opts.Buffering.Budget.Take(grow) {
		putBodyBuf(p)
		return false
	}
	x.bufTaken += grow
	*p = append(*p, x.buffered...)
	if x.bufp != nil {
		putBodyBuf(x.bufp)
	}
	x.bufp, x.buffered = p, *p
	return true
}

// dropBuffer gives back a buffered body's memory and budget.
func (x *call) dropBuffer() {
	if x.bufTaken > 0 {
		x.srv.opts.Buffering.Budget.Release(x.bufTaken)
	}
	if x.bufp != nil {
		putBodyBuf(x.bufp)
	}
	x.buffered, x.pending, x.bufWhole, x.bufTaken, x.bufp = nil, nil, false, 0, nil
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
