//go:build !linux

package park

import (
	"errors"
	"time"
)

// Parker is Linux-only (epoll); elsewhere an idle connection waits on a
// goroutine of its own.
type Parker struct{}

type Conn interface {
	Resume()
	Close()
}

type Waiter struct{ IdleSince, IdleEnd, WokeAt time.Duration }

func (w *Waiter) Init(int32, Conn) {}
func (w *Waiter) Registered() bool { return false }

type Wake uint8

const (
	Readable Wake = iota
	Idle
	Closing
	Unavailable
)

const After = 20 * time.Millisecond

func New() (*Parker, error)         { return nil, errors.ErrUnsupported }
func (p *Parker) Park(*Waiter) bool { return false }
func (p *Parker) Wait(*Waiter) Wake { return Unavailable }
func (p *Parker) Forget(*Waiter)    {}
func (p *Parker) CloseAll(bool)     {}
