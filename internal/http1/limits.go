package http1

// Default limits. They match what large deployments of nginx and HAProxy
// accept, so that no client that works behind them breaks behind strait.
const (
	// DefaultMaxRequestLine bounds the request line (method, target,
	// version): 16 KiB, HAProxy's whole default buffer, twice nginx's 8 KiB
	// large_client_header_buffers. Longer lines get 414.
	DefaultMaxRequestLine = 16 << 10
	// DefaultMaxHeaderBytes bounds a message head, start line included:
	// 64 KiB. Larger heads get 431 (or, from an upstream, 502).
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultMaxHeaderCount bounds the number of fields in a head or in a
	// trailer section: 100, nginx's and Go's practical ceiling. More get 431.
	DefaultMaxHeaderCount = 100
	// maxChunkLine bounds a chunk-size line with its extensions. Chunk
	// extensions have no registered use; 4 KiB leaves room for any
	// legitimate one while keeping the scan bounded.
	maxChunkLine = 4 << 10
)

// Limits bound what a Reader accepts. A zero field means the default;
// negative values are not allowed.
type Limits struct {
	MaxRequestLine int // bytes; default DefaultMaxRequestLine
	MaxHeaderBytes int // bytes, start line included; default DefaultMaxHeaderBytes
	MaxHeaderCount int // fields; default DefaultMaxHeaderCount
}

func (l Limits) withDefaults() Limits {
	if l.MaxRequestLine <= 0 {
		l.MaxRequestLine = DefaultMaxRequestLine
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxHeaderCount <= 0 {
		l.MaxHeaderCount = DefaultMaxHeaderCount
	}
	if l.MaxRequestLine > l.MaxHeaderBytes {
		l.MaxRequestLine = l.MaxHeaderBytes
	}
	return l
}
