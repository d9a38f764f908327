//go:build !linux

package sockio

import "net"

// No portable non-blocking peek exists here: descriptors are not looked
// at (FD is -1), a stale pooled connection is caught by the retry of an
// idempotent request instead, and an idle connection's wait blocks in a
// read with a buffer.

func FD(net.Conn) int32   { return -1 }
func Readable(int32) bool { return false }
func Quiet(int32) bool    { return true }

type Readiness struct{}

func (r *Readiness) Init(net.Conn) int32 { return -1 }
func (r *Readiness) Wait() error         { return nil }
