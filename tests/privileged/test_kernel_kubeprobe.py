"""The kubelet's probe actions (netemu.kernel.kubeprobe) inside a real
network namespace: HTTP status ranges and headers, TCP connect, exec exit
codes and timeouts, and the kubelet's wording of each failure."""

from __future__ import annotations

import http.server
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest

from netemu.kernel import kubeprobe, netns
from netemu.kernel.sandbox import SandboxSpec


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        _Handler.seen.append(dict(self.headers.items()))
        code = int(self.path.strip("/") or "200")
        self.send_response(code)
        if 300 <= code < 400:
            self.send_header("Location", "http://192.0.2.1/elsewhere")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"hi")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(namespace: str) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 inside `namespace`; its port. GET /<code>
    answers that status."""
    subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True)
    sock = netns.open_socket(namespace, socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Handler, bind_and_activate=False)
    httpd.socket.close()
    httpd.socket = sock
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_http_status_ranges_and_headers(namespace: str, server: int) -> None:
    def get(path: str, headers: tuple[tuple[str, str], ...] = ()) -> kubeprobe.Outcome:
        action = kubeprobe.HttpGet(namespace, "127.0.0.1", server, path, "HTTP", headers)
        return kubeprobe.run(action, 1.0)

    assert get("/200") == kubeprobe.Outcome("success", "hi")
    assert get("/399").result == "success"
    # A redirect is not followed: 3xx passes (elsewhere is off-lab anyway).
    assert get("/301").result == "success"
    assert get("/500") == kubeprobe.Outcome("failure", "HTTP probe failed with statuscode: 500")
    assert get("/404").result == "failure"
    _Handler.seen.clear()
    assert get("/200", (("X-Probe", "yes"), ("user-agent", "mine"))).result == "success"
    (headers,) = _Handler.seen
    assert headers["X-Probe"] == "yes"
    assert headers["user-agent"] == "mine", "a probe's header replaces the kubelet's"
    assert headers["Accept"] == "*/*" and headers["Connection"] == "close"
    assert headers["Host"] == f"127.0.0.1:{server}"
    _Handler.seen.clear()
    get("200")
    assert _Handler.seen[0]["User-Agent"] == kubeprobe.USER_AGENT == "kube-probe/1.31"


def test_refused_and_tcp(namespace: str, server: int) -> None:
    subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True)
    closed = server + 1 if server < 65535 else server - 1
    refused = kubeprobe.run(kubeprobe.HttpGet(namespace, "127.0.0.1", closed, "/"), 1.0)
    assert refused == kubeprobe.Outcome(
        "failure",
        f'Get "http://127.0.0.1:{closed}/": dial tcp 127.0.0.1:{closed}: connect: '
        "connection refused",
    )
    assert kubeprobe.run(kubeprobe.TcpConnect(namespace, "127.0.0.1", server), 1.0).result == (
        "success"
    )
    assert kubeprobe.run(kubeprobe.TcpConnect(namespace, "127.0.0.1", closed), 1.0) == (
        kubeprobe.Outcome("failure", f"dial tcp 127.0.0.1:{closed}: connect: connection refused")
    )


def test_exec_exit_codes_and_timeout(namespace: str) -> None:
    def run(argv: tuple[str, ...], timeout: float = 2.0) -> kubeprobe.Outcome:
        sandbox = SandboxSpec(hostname="probe-host", env=(("PATH", "/usr/bin:/bin"),))
        return kubeprobe.run(kubeprobe.Exec(namespace, argv, sandbox), timeout)

    assert run(("hostname",)) == kubeprobe.Outcome("success", "probe-host\n")
    # The probe runs as the container's user (nobody by default), in its environment.
    assert run(("sh", "-c", "id -u; env")) == kubeprobe.Outcome(
        "success", "65534\nPATH=/usr/bin:/bin\nPWD=/\n"
    )
    assert run(("sh", "-c", "echo no; exit 3")) == kubeprobe.Outcome(
        "failure", "command ['sh', '-c', 'echo no; exit 3'] exited with 3: no"
    )
    started = time.monotonic()
    assert run(("sleep", "10"), timeout=0.3) == kubeprobe.Outcome(
        "failure", "command ['sleep', '10'] timed out"
    )
    assert time.monotonic() - started < 2.0


def test_a_probe_that_cannot_be_sent_is_an_error() -> None:
    gone = "netemu_test_no_such_namespace"
    assert kubeprobe.run(kubeprobe.TcpConnect(gone, "127.0.0.1", 80), 0.5).result == "error"
    assert (
        kubeprobe.run(kubeprobe.Exec(gone, ("true",), SandboxSpec(hostname="h")), 0.5).result
        == "error"
    )
    assert kubeprobe.run(kubeprobe.HttpGet(gone, "web", 80), 0.5).result == "error"
