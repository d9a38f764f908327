package proxy

import (
	"testing"

	"github.com/straitproxy/strait/internal/grpcwire"
	"github.com/straitproxy/strait/internal/stream"
)

// TestGRPCCode pins the mapping of failures to gRPC statuses that
// docs/grpc.md documents.
func TestGRPCCode(t *testing.T) {
	for _, tc := range []struct {
		e      Error
		status int
		want   grpcwire.Code
	}{
		{Error{Side: Upstream, Kind: KindConnect}, 502, grpcwire.Unavailable},
		{Error{Side: Upstream, Kind: KindTimeout}, 504, grpcwire.DeadlineExceeded},
		{Error{Side: Upstream, Kind: KindTimeout, Where: "upstream connect timeout"}, 504, grpcwire.DeadlineExceeded},
		{Error{Side: Internal, Kind: KindNoPeer}, 503, grpcwire.Unavailable},
		{Error{Side: Upstream, Kind: KindClosed}, 502, grpcwire.Unavailable},
		{Error{Side: Upstream, Kind: KindClosed, Err: stream.ErrCanceled}, 502, grpcwire.Canceled},
		{Error{Side: Upstream, Kind: KindProtocol}, 502, grpcwire.Internal},
		{Error{Side: Internal, Kind: KindLimit}, 503, grpcwire.ResourceExhausted},
		{Error{Side: Downstream, Kind: KindLimit}, 413, grpcwire.ResourceExhausted},
		{Error{Side: Downstream, Kind: KindRequestRejected}, 404, grpcwire.Unimplemented},
		{Error{Side: Downstream, Kind: KindTimeout}, 408, grpcwire.DeadlineExceeded},
		{Error{Side: Downstream, Kind: KindProtocol}, 400, grpcwire.Internal},
		{Error{Side: Internal, Kind: KindFilter}, 401, grpcwire.Unauthenticated},
		{Error{Side: Internal, Kind: KindFilter}, 403, grpcwire.PermissionDenied},
		{Error{Side: Internal, Kind: KindFilter}, 500, grpcwire.Internal},
		{Error{Side: Internal, Kind: KindFilter}, 429, grpcwire.ResourceExhausted},
		{Error{Side: Internal, Kind: KindOther}, 418, grpcwire.Unknown},
	} {
		if got := grpcCode(&tc.e, tc.status); got != tc.want {
			t.Errorf("%v with %d: %v, want %v", &tc.e, tc.status, got, tc.want)
		}
	}
}
