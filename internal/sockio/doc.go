// Package sockio is the socket layer under strait's connections, client
// and upstream alike: raw reads and writes that skip net.Conn's locks,
// peeks and readiness waits that need no buffer, and deadlines that are
// cheap to keep and that another goroutine can interrupt.
package sockio
