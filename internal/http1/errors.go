package http1

// Error is a message the codec refuses. Status is the response status that
// RFC 9110/9112 name for it when the message is a request; for a response
// from an upstream the caller answers 502 instead. After an Error the
// connection's framing is in doubt, so it must be closed.
//
// The codec returns the package's sentinel values, so a rejection allocates
// nothing and callers can test for a rule with errors.Is.
type Error struct {
	Status int    // 400, 414, 431, 501 or 505
	Reason string // which rule the message broke
}

func (e *Error) Error() string { return "http1: " + e.Reason }

// HTTPStatus is Status (stream.ProtocolError).
func (e *Error) HTTPStatus() int { return e.Status }

func newError(status int, reason string) *Error { return &Error{Status: status, Reason: reason} }

// The rules. Each names what the message did.
var (
	ErrBareLF            = newError(400, "bare LF or CR without LF as line ending")
	ErrBareCR            = newError(400, "bare CR inside a line")
	ErrRequestLine       = newError(400, "malformed request line")
	ErrMethod            = newError(400, "invalid method")
	ErrTarget            = newError(400, "invalid request target")
	ErrVersion           = newError(400, "malformed HTTP version")
	ErrVersionNotSupp    = newError(505, "HTTP version not supported")
	ErrRequestLineTooBig = newError(414, "request line too long")
	ErrHeaderTooBig      = newError(431, "header block too large")
	ErrTooManyFields     = newError(431, "too many header fields")
	ErrObsFold           = newError(400, "obsolete line folding")
	ErrFieldName         = newError(400, "invalid header field name")
	ErrSpaceBeforeColon  = newError(400, "whitespace between field name and colon")
	ErrFieldValue        = newError(400, "invalid character in header field value")
	ErrMissingColon      = newError(400, "header line without colon")
	ErrLookalikeField    = newError(400, "field name resembles Content-Length or Transfer-Encoding")
	ErrConnectBody       = newError(400, "CONNECT request with a body")
	ErrMissingHost       = newError(400, "HTTP/1.1 request without Host")
	ErrMultipleHost      = newError(400, "more than one Host")
	ErrInvalidHost       = newError(400, "invalid Host")
	ErrContentLength     = newError(400, "invalid Content-Length")
	ErrMultipleCL        = newError(400, "more than one Content-Length")
	ErrCLAndTE           = newError(400, "both Content-Length and Transfer-Encoding")
	ErrTENotChunkedLast  = newError(400, "Transfer-Encoding does not end in chunked")
	ErrTEInvalid         = newError(400, "malformed Transfer-Encoding")
	ErrTEUnsupported     = newError(501, "transfer coding other than chunked")
	ErrTEInHTTP10        = newError(400, "Transfer-Encoding in HTTP/1.0")
	ErrBodyInGetHead     = newError(400, "chunked body on GET or HEAD")
	ErrChunkSize         = newError(400, "invalid chunk size")
	ErrChunkExt          = newError(400, "invalid chunk extension")
	ErrChunkLineTooBig   = newError(400, "chunk size line too long")
	ErrChunkData         = newError(400, "chunk data not followed by CRLF")
	ErrStatusLine        = newError(400, "malformed status line")
	ErrTrailerTooBig     = newError(431, "trailer section too large")
)
