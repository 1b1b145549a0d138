"""The gRPC health checking protocol (grpc.health.v1.Health/Check) on the
wire, pure: what the kubelet's grpc probe sends and what a server answers
(github.com/grpc/grpc doc/health-checking.md; doc/PROTOCOL-HTTP2.md for the
framing). Messages are the grpcio-health-checking package's generated
protobuf classes; HTTP/2 is left to the `h2` package by the callers
(netemu.node.grpcserver serves it, netemu.kernel.kubeprobe probes it).
"""

from __future__ import annotations

import struct

from grpc_health.v1 import health_pb2

CHECK_PATH = "/grpc.health.v1.Health/Check"
CONTENT_TYPE = "application/grpc"
# gRPC status codes (google.golang.org/grpc/codes) the probe tells apart.
OK = 0
DEADLINE_EXCEEDED = 4
UNIMPLEMENTED = 12
CODE_NAMES = {
    0: "OK",
    1: "Canceled",
    2: "Unknown",
    3: "InvalidArgument",
    4: "DeadlineExceeded",
    5: "NotFound",
    7: "PermissionDenied",
    12: "Unimplemented",
    13: "Internal",
    14: "Unavailable",
}
_PREFIX = struct.Struct(">BI")  # compressed flag, message length


def frame(message: bytes) -> bytes:
    """A length-prefixed, uncompressed gRPC message."""
    return _PREFIX.pack(0, len(message)) + message


def unframe(data: bytes) -> bytes | None:
    """The first message of `data`, or None while it is incomplete."""
    if len(data) < _PREFIX.size:
        return None
    _, length = _PREFIX.unpack_from(data)
    end = _PREFIX.size + length
    return data[_PREFIX.size : end] if len(data) >= end else None


def check_request(service: str) -> bytes:
    return frame(health_pb2.HealthCheckRequest(service=service).SerializeToString())


def requested_service(data: bytes) -> str | None:
    """The service a framed HealthCheckRequest asks about (None: incomplete)."""
    message = unframe(data)
    if message is None:
        return None
    return str(health_pb2.HealthCheckRequest.FromString(message).service)


def check_response(serving: bool) -> bytes:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    return frame(health_pb2.HealthCheckResponse(status=status).SerializeToString())


def response_status(data: bytes) -> str | None:
    """The ServingStatus name of a framed HealthCheckResponse (None: incomplete)."""
    message = unframe(data)
    if message is None:
        return None
    status = health_pb2.HealthCheckResponse.FromString(message).status
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
