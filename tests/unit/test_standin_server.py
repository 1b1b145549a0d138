"""The built-in test server as a stand-in (netemu.node.testserver), on
loopback sockets (no root): its probe paths answer 200 and follow the fail
switches of the probes that use them, and its TLS ports speak HTTPS with the
self-signed certificate, made once per TestServers."""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from cryptography import x509

from netemu.node.testserver import FAIL_READINESS, PodIdentity, TestServers

APP = PodIdentity(pod="app-1", namespace="default", pod_ip="10.244.1.5", node="node-1")
PATHS = (("/ready", ("readiness",)), ("/healthz", ("liveness", "readiness")), ("/", ("liveness",)))


@pytest.fixture
def servers() -> Iterator[TestServers]:
    s = TestServers()
    s.start()
    yield s
    s.close()


def listener() -> tuple[socket.socket, int]:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    tcp.setblocking(False)
    return tcp, int(tcp.getsockname()[1])


def serve(
    servers: TestServers,
    key: str = "default/app-1/app",
    tls: bool = False,
    flags: Path | None = None,
    paths: Iterable[tuple[str, Iterable[str]]] = PATHS,
) -> int:
    tcp, port = listener()
    servers.serve(
        key, APP, [tcp], [], flags=flags, tls_ports=[port] if tls else [], probe_paths=paths
    )
    return port


def get(port: int, path: str, tls: bool = False) -> tuple[int, str]:
    conn: http.client.HTTPConnection
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_any_probe_path_answers_200(servers: TestServers) -> None:
    port = serve(servers)
    assert get(port, "/ready") == (200, "ok")
    assert get(port, "/ready?full=1") == (200, "ok")
    assert get(port, "/healthz") == (200, "ok")
    # A probe path the test server has a route for keeps its answer.
    status, body = get(port, "/")
    assert status == 200 and '"pod": "app-1"' in body
    # Paths no probe uses are the test server's as ever.
    assert get(port, "/nope")[0] == 404


def test_the_fail_switches_fail_the_probe_paths_of_their_kind(servers: TestServers) -> None:
    port = serve(servers)
    get(port, "/fail-readiness")
    assert get(port, "/ready")[0] == 500
    assert get(port, "/healthz")[0] == 500  # readiness probes use it too
    assert get(port, "/")[0] == 200  # only the liveness probe does
    get(port, "/pass-readiness")
    get(port, "/fail-liveness")
    assert get(port, "/ready")[0] == 200
    assert get(port, "/")[0] == 500
    assert get(port, "/healthz")[0] == 500
    get(port, "/pass-liveness")
    assert [get(port, p)[0] for p in ("/ready", "/healthz", "/")] == [200, 200, 200]


def test_a_flag_file_fails_them_too(servers: TestServers, tmp_path: Path) -> None:
    port = serve(servers, flags=tmp_path)
    (tmp_path / FAIL_READINESS).touch()
    assert get(port, "/ready") == (
        500,
        f"readiness failing: flag file {tmp_path / FAIL_READINESS} exists\n",
    )
    (tmp_path / FAIL_READINESS).unlink()
    assert get(port, "/ready") == (200, "ok")


def test_tls_ports_speak_https_with_one_certificate(servers: TestServers) -> None:
    first = serve(servers, tls=True)
    second = serve(servers, key="default/app-2/app", tls=True)
    plain = serve(servers, key="default/app-3/app")
    assert get(first, "/ready", tls=True) == (200, "ok")
    assert get(plain, "/ready") == (200, "ok")
    certs = [
        x509.load_pem_x509_certificate(ssl.get_server_certificate(("127.0.0.1", p)).encode())
        for p in (first, second)
    ]
    assert certs[0] == certs[1]
    assert certs[0].issuer == certs[0].subject  # self-signed
    with pytest.raises(ssl.SSLError):
        get(plain, "/ready", tls=True)
