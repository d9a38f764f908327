//go:build !linux

package proxy

import (
	"errors"
	"syscall"
)

// parker is Linux-only (epoll); elsewhere an idle connection waits on a
// goroutine of its own.
type parker struct{}

func newParker() (*parker, error)  { return nil, errors.ErrUnsupported }
func (p *parker) park(*conn) bool  { return false }
func (p *parker) wait(*conn) uint8 { return waitUnavailable }
func (p *parker) forget(*conn)     {}
func (p *parker) closeAll(bool)    {}
func connFD(syscall.RawConn) int32 { return -1 }
