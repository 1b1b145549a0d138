"""The built-in test server's health switches and access log, on loopback
sockets (no root): /healthz and /readyz answer 200 until told to fail by
/fail-liveness, /fail-readiness or a flag file; a restart (stop_serving,
then serve again) clears what was asked over HTTP but not a flag file; and
every request is appended to the container's log."""

from __future__ import annotations

import http.client
import re
import socket
from pathlib import Path

import pytest

from netemu.node.testserver import FAIL_LIVENESS, FAIL_READINESS, PodIdentity, TestServers

WEB = PodIdentity(pod="web-abc", namespace="default", pod_ip="10.244.1.5", node="node-1")
KEY = "default/web-abc/web"


def serve(servers: TestServers, log: Path | None = None, flags: Path | None = None) -> int:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    tcp.setblocking(False)
    port = int(tcp.getsockname()[1])
    servers.serve(KEY, WEB, [tcp], [], log=log, flags=flags)
    return port


def get(port: int, path: str, agent: str | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"User-Agent": agent} if agent else {})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_health_checks_pass_by_default(servers: TestServers) -> None:
    port = serve(servers)
    assert get(port, "/healthz") == (200, "ok")
    assert get(port, "/readyz") == (200, "ok")


@pytest.mark.parametrize(
    ("check", "path", "other"),
    [("readiness", "/readyz", "/healthz"), ("liveness", "/healthz", "/readyz")],
)
def test_fail_and_pass_switch_one_check(
    servers: TestServers, check: str, path: str, other: str
) -> None:
    port = serve(servers)
    status, text = get(port, f"/fail-{check}")
    assert status == 200
    assert text == f"web-abc: {check} ({path}) now fails\n"
    status, text = get(port, path)
    assert status == 500
    assert text == f"{check} failing: fail-{check} was requested\n"
    assert get(port, other) == (200, "ok"), "the other check is not touched"
    assert get(port, "/")[0] == 200, "the server still answers"
    assert get(port, f"/pass-{check}") == (200, f"web-abc: {check} ({path}) now passes\n")
    assert get(port, path) == (200, "ok")


def test_a_restart_clears_the_switches_but_not_flag_files(
    servers: TestServers, tmp_path: Path
) -> None:
    flags = tmp_path / "health"
    flags.mkdir()
    port = serve(servers, flags=flags)
    get(port, "/fail-liveness")
    (flags / FAIL_READINESS).touch()
    assert get(port, "/readyz") == (
        500,
        f"readiness failing: flag file {flags / FAIL_READINESS} exists\n",
    )
    servers.stop_serving(KEY)
    port = serve(servers, flags=flags)
    assert get(port, "/healthz") == (200, "ok"), "a restarted process forgot the switch"
    assert get(port, "/readyz")[0] == 500, "a flag file outlives the process"
    # /pass-readiness cannot overrule a flag file: only removing it does.
    assert get(port, "/pass-readiness") == (200, "web-abc: readiness (/readyz) now fails\n")
    (flags / FAIL_READINESS).unlink()
    assert get(port, "/readyz") == (200, "ok")
    (flags / FAIL_LIVENESS).touch()
    assert get(port, "/healthz")[0] == 500


def test_requests_are_appended_to_the_containers_log(servers: TestServers, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "default" / "web-abc" / "web.log"
    port = serve(servers, log=log)
    get(port, "/readyz", agent="kube-probe/1.31")
    get(port, "/nope")
    servers.stop_serving(KEY)
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    when = r"\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]"
    probe = rf'127\.0\.0\.1 - - {when} "GET /readyz HTTP/1\.1" 200 2 "-" "kube-probe/1\.31"'
    assert re.fullmatch(probe, lines[0]), lines[0]
    missing = rf'127\.0\.0\.1 - - {when} "GET /nope HTTP/1\.1" 404 \S+ "-" "-"'
    assert re.fullmatch(missing, lines[1]), lines[1]
    # Served again (a restart), the log is appended to.
    port = serve(servers, log=log)
    get(port, "/")
    servers.stop_serving(KEY)
    assert len(log.read_text().splitlines()) == 3


def test_udp_datagrams_are_logged(servers: TestServers, tmp_path: Path) -> None:
    log = tmp_path / "web.log"
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    port = int(udp.getsockname()[1])
    servers.serve(KEY, WEB, [], [udp], log=log)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.connect(("127.0.0.1", port))
        client.send(b"ping")
        client.recv(65535)
    servers.stop_serving(KEY)
    (line,) = log.read_text().splitlines()
    assert re.fullmatch(r'127\.0\.0\.1 - - \[.*\] "UDP datagram of 4 bytes" - \d+', line), line
