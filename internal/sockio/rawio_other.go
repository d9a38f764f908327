//go:build !linux

package sockio

import "net"

// Raw socket I/O is Linux-only (see rawio_linux.go); elsewhere every read
// and write goes through net.Conn.

func PlainFD(net.Conn, int32) int32 { return -1 }
func Read(int32, []byte) int        { return 0 }
func Write(int32, []byte) int       { return 0 }
func Shutdown(net.Conn) bool        { return false }
