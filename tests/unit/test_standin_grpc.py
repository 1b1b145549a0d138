"""A stand-in's gRPC health service (netemu.node.grpcserver) and the
prober's grpc check (netemu.kernel.kubeprobe.grpc_call) against each other
on loopback (no root): SERVING passes; a fail switch makes it NOT_SERVING,
which fails as the kubelet words it; an HTTP/1 server on the port fails the
check, and an HTTP/1 client on the gRPC port is hung up on."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netemu.kernel import kubeprobe
from netemu.node.testserver import FAIL_LIVENESS, FAIL_READINESS, PodIdentity, TestServers

APP = PodIdentity(pod="app-1", namespace="default", pod_ip="10.244.1.5", node="node-1")


@pytest.fixture
def servers() -> Iterator[TestServers]:
    s = TestServers()
    s.start()
    yield s
    s.close()


def serve(servers: TestServers, flags: Path, grpc: bool = True) -> int:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    tcp.setblocking(False)
    port = int(tcp.getsockname()[1])
    grpc_ports = [(port, ["readiness"])] if grpc else []
    servers.serve("default/app-1/app", APP, [tcp], [], flags=flags, grpc_ports=grpc_ports)
    return port


def check(port: int, service: str = "") -> kubeprobe.Outcome:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        addr = f"127.0.0.1:{port}"
        return kubeprobe.grpc_call(sock, addr, service, time.monotonic() + 2, 2.0)


def test_serving_passes_for_any_service(servers: TestServers, tmp_path: Path) -> None:
    port = serve(servers, tmp_path)
    assert check(port) == kubeprobe.Outcome("success", "service healthy")
    assert check(port, "hipstershop.CartService") == kubeprobe.Outcome("success", "service healthy")


def test_the_switch_of_its_probe_kind_makes_it_not_serving(
    servers: TestServers, tmp_path: Path
) -> None:
    port = serve(servers, tmp_path)
    (tmp_path / FAIL_LIVENESS).touch()  # no liveness probe uses the port
    assert check(port).result == "success"
    (tmp_path / FAIL_READINESS).touch()
    assert check(port) == kubeprobe.Outcome(
        "failure", 'service unhealthy (responded with "NOT_SERVING")'
    )


def test_an_http1_server_fails_the_check(servers: TestServers, tmp_path: Path) -> None:
    port = serve(servers, tmp_path, grpc=False)
    # aiohttp answers the HTTP/2 preface 400 and closes the connection.
    with pytest.raises(ConnectionResetError, match="the server closed the connection"):
        check(port)


def test_an_http1_client_is_hung_up_on(servers: TestServers, tmp_path: Path) -> None:
    port = serve(servers, tmp_path)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        with pytest.raises((http.client.HTTPException, OSError)):
            conn.request("GET", "/")
            conn.getresponse()
    finally:
        conn.close()
