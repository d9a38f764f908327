//go:build !linux

package proxy

import "net"

// Raw socket I/O is Linux-only (see rawio_linux.go); elsewhere every read
// and write goes through net.Conn.

func plainFD(net.Conn, int32) int32 { return -1 }
func rawRead(int32, []byte) int     { return 0 }
func rawWrite(int32, []byte) int    { return 0 }
func shutdown(net.Conn) bool        { return false }
