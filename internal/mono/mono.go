// Package mono is the clock of strait's data path: the monotonic time since
// the process started, as a time.Duration.
//
// Reading the clock is a vDSO call (time.Now makes two), and setting a
// deadline reads it twice more and updates a runtime timer. Setting a fresh
// deadline for every read and write cost a request about thirty clock
// reads: 8% of its user-space instructions. So the data path reads this
// clock alone, at most once per socket operation, and keeps times as
// offsets from one epoch (a time.Time costs more to add to than it saves).
package mono

import "time"

// epoch anchors Now. It is set once, when the package initializes.
var epoch = time.Now()

// Now reads the monotonic clock: the time since epoch. One vDSO call.
func Now() time.Duration { return time.Since(epoch) }

// Wall converts a reading of Now to a time.Time.
func Wall(m time.Duration) time.Time { return epoch.Add(m) }
