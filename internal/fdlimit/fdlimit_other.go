//go:build !unix

package fdlimit

func Limit() int64         { return 0 }
func Exhausted(error) bool { return false }

type Spare struct{}

func Reserve() Spare           { return Spare{} }
func (s *Spare) Release() bool { return false }
func (s *Spare) Held() bool    { return false }
