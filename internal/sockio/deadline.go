package sockio

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/internal/mono"
)

// Deadline is the deadline of one direction of a socket, as last set, and
// the flag another goroutine raises to interrupt waits in that direction.
//
// Setting a deadline reads the clock twice and updates a runtime timer, so
// a connection remembers the deadline it set in each direction and moves
// it only when it is off by more than a quarter of its length (Ensure):
// the timeouts it enforces bound idleness, which need not be exact to the
// millisecond. Times are readings of mono.Now.
//
// Interrupting is the one way a goroutine stops another's socket wait (the
// body sender's, the watcher's, the exchange's): it raises the flag, then
// moves the socket's deadline into the past. The waiting goroutine checks
// the flag (Interrupted) after every re-arm of its deadline and before it
// waits, so an interrupt is never lost: either the waiter sees the flag,
// or the past deadline lands after its re-arm and ends its wait.
type Deadline struct {
	at   time.Duration // a reading of mono.Now; 0: none, or not known
	stop atomic.Bool   // waits are interrupted until Reset
}

// Past is a deadline in the past, to wake a blocked wait.
var Past = time.Unix(1, 0)

// ErrInterrupted is what a wait returns once another goroutine interrupted
// it. It is a deadline error, which the HTTP/1 codec does not keep as
// final: an interrupted read consumed nothing, and may be made again after
// Reset.
var ErrInterrupted = fmt.Errorf("wait interrupted: %w", os.ErrDeadlineExceeded)

// Interrupt ends the current wait in this direction and every later one
// until Reset. Any goroutine may call it; set is the socket's
// SetReadDeadline or SetWriteDeadline.
func (dl *Deadline) Interrupt(set func(time.Time) error) {
	dl.stop.Store(true)
	set(Past)
}

// Interrupted reports whether waits in this direction are interrupted.
func (dl *Deadline) Interrupted() bool { return dl.stop.Load() }

// Reset ends an interrupt once the goroutine that raised it is known to be
// done, and clears the deadline it moved (the next Ensure sets its own).
func (dl *Deadline) Reset(set func(time.Time) error) {
	if dl.stop.Load() {
		dl.stop.Store(false)
		dl.at = 0
		set(time.Time{})
	}
}

// Ensure makes the deadline now+d, or limit if that is earlier (0: no
// limit), where now is a reading of mono.Now. A deadline already set within
// a quarter of d before now+d is kept; a limit is kept exactly. set is the
// socket's SetReadDeadline or SetWriteDeadline.
func (dl *Deadline) Ensure(set func(time.Time) error, now, d, limit time.Duration) {
	want := now + d
	switch {
	case limit != 0 && limit < want:
		if dl.at == limit {
			return
		}
		want = limit
	case dl.at <= want && dl.at > want-d/4:
		return
	}
	dl.at = want
	set(mono.Wall(want))
}

// Set sets the deadline to t (zero: none) and forgets it: such deadlines
// are the exceptions (a slow head, a watched client), and the next Ensure
// sets its own.
func (dl *Deadline) Set(set func(time.Time) error, t time.Time) {
	dl.at = 0
	set(t)
}
