package proxy

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// Reading the clock is a vDSO call (time.Now makes two), and setting a
// deadline reads it twice more and updates a runtime timer. Setting a fresh
// deadline for every read and write cost a request about thirty clock
// reads: 8% of its user-space instructions. So the data path reads the
// monotonic clock alone, at most once per socket operation, and keeps times
// as offsets from epoch (a time.Time costs more to add to than it saves);
// and each connection remembers the deadline it set in each direction,
// moving it only when it is off by more than a quarter of its length: the
// timeouts it enforces bound idleness, which need not be exact to the
// millisecond.

// epoch anchors mono. It is set once, when the package initializes.
var epoch = time.Now()

// mono reads the monotonic clock: the time since epoch. One vDSO call.
func mono() time.Duration { return time.Since(epoch) }

// wallOf converts a reading of mono to a time.Time.
func wallOf(m time.Duration) time.Time { return epoch.Add(m) }

// deadline is the deadline of one direction of a socket, as last set, and
// the flag another goroutine raises to interrupt waits in that direction.
//
// Interrupting is the one way a goroutine stops another's socket wait (the
// body sender's, the watcher's, the exchange's): it raises the flag, then
// moves the socket's deadline into the past. The waiting goroutine checks
// the flag after every re-arm of its deadline (ensure) and before it
// waits, so an interrupt is never lost: either the waiter sees the flag, or
// the past deadline lands after its re-arm and ends its wait.
type deadline struct {
	at   time.Duration // a reading of mono; 0: none, or not known
	stop atomic.Bool   // waits are interrupted until reset
}

// errInterrupted is what a wait returns once another goroutine interrupted
// it. It is a deadline error, which the codec does not keep as final: an
// interrupted read consumed nothing, and may be made again after reset.
var errInterrupted = fmt.Errorf("proxy: wait interrupted: %w", os.ErrDeadlineExceeded)

// interrupt ends the current wait in this direction and every later one
// until reset. Any goroutine may call it; set is the socket's
// SetReadDeadline or SetWriteDeadline.
func (dl *deadline) interrupt(set func(time.Time) error) {
	dl.stop.Store(true)
	set(aLongTimeAgo)
}

// interrupted reports whether waits in this direction are interrupted.
func (dl *deadline) interrupted() bool { return dl.stop.Load() }

// reset ends an interrupt once the goroutine that raised it is known to be
// done, and clears the deadline it moved (the next ensure sets its own).
func (dl *deadline) reset(set func(time.Time) error) {
	if dl.stop.Load() {
		dl.stop.Store(false)
		dl.at = 0
		set(time.Time{})
	}
}

// ensure makes the deadline now+d, or limit if that is earlier (0: no
// limit), where now is a reading of mono. A deadline already set within a
// quarter of d before now+d is kept; a limit is kept exactly. set is the
// socket's SetReadDeadline or SetWriteDeadline.
func (dl *deadline) ensure(set func(time.Time) error, now, d, limit time.Duration) {
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
	set(wallOf(want))
}

// set sets the deadline to t (zero: none) and forgets it: such deadlines
// are the exceptions (a slow head, a watched client), and the next ensure
// sets its own.
func (dl *deadline) set(set func(time.Time) error, t time.Time) {
	dl.at = 0
	set(t)
}

// forget records that the deadline was set some other way: the next ensure
// sets it.
func (dl *deadline) forget() { dl.at = 0 }
