package proxy

import "time"

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

// deadline is the deadline of one direction of a socket, as last set.
type deadline struct {
	at time.Duration // a reading of mono; 0: none, or not known
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
