package grpcwire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HealthCheckPath is the gRPC health protocol's Check method
// (grpc.health.v1).
const HealthCheckPath = "/grpc.health.v1.Health/Check"

// Serving is the HealthCheckResponse status that passes a check.
const Serving = 1

// HealthRequest is a length-prefixed grpc.health.v1.HealthCheckRequest
// for service ("" asks after the server as a whole).
func HealthRequest(service string) []byte {
	msg := []byte{}
	if service != "" {
		msg = append(msg, 0x0a) // field 1, length-delimited
		msg = binary.AppendUvarint(msg, uint64(len(service)))
		msg = append(msg, service...)
	}
	b := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// HealthStatus reads the status of the length-prefixed
// grpc.health.v1.HealthCheckResponse in body (UNKNOWN, 0, if the message
// leaves it out).
func HealthStatus(body []byte) (int, error) {
	if len(body) < 5 {
		return 0, errors.New("grpc health: no response message")
	}
	if body[0] != 0 {
		return 0, errors.New("grpc health: a compressed response")
	}
	n := binary.BigEndian.Uint32(body[1:5])
	msg := body[5:]
	if uint64(len(msg)) < uint64(n) {
		return 0, errors.New("grpc health: a response message cut short")
	}
	msg = msg[:n]
	status := 0
	for len(msg) > 0 {
		key, k := binary.Uvarint(msg)
		if k <= 0 {
			return 0, errors.New("grpc health: a malformed response message")
		}
		msg = msg[k:]
		switch key & 7 {
		case 0: // varint
			v, k := binary.Uvarint(msg)
			if k <= 0 {
				return 0, errors.New("grpc health: a malformed response message")
			}
			msg = msg[k:]
			if key>>3 == 1 {
				status = int(v)
			}
		case 2: // length-delimited: skipped
			l, k := binary.Uvarint(msg)
			if k <= 0 || uint64(len(msg)-k) < l {
				return 0, errors.New("grpc health: a malformed response message")
			}
			msg = msg[k+int(l):]
		default:
			return 0, fmt.Errorf("grpc health: unexpected wire type %d", key&7)
		}
	}
	return status, nil
}
