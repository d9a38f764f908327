//go:build !unix

package proxy

func fdLimit() int64               { return 0 }
func isFDExhausted(err error) bool { return false }

type spareFD struct{}

func reserveFD() spareFD         { return spareFD{} }
func (s *spareFD) release() bool { return false }
func (s *spareFD) held() bool    { return false }
