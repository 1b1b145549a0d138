"""The kubelet's container probes, as actions with side effects: an HTTP GET
or a TCP connect sent from inside a node's namespace (kubelet probes come
from the node, so they reach the pod IP through the node's pod bridge), or
a command run inside a pod's namespace with a deadline.

Results follow pkg/probe (http, tcp, exec) of the kubelet: an HTTP status
from 200 to 399 is success (redirects are not followed: a 3xx is success,
as the kubelet counts a redirect to another host), anything else or no
answer within the timeout is failure; a TCP probe succeeds once connected;
an exec probe succeeds on exit code 0 and fails on any other exit code or
after the timeout (its process group is killed then). "error" is for a
probe that could not be sent at all (its namespace is gone, say): the
kubelet throws such a result away (prober/worker.go).

A grpc probe calls grpc.health.v1.Health/Check over cleartext HTTP/2, as
pkg/probe/grpc does: SERVING is success; a refused or timed-out connection,
an error status (UNIMPLEMENTED: no health service) or any other serving
status is failure, with the kubelet's messages.

Requests carry the kubelet's headers (User-Agent kube-probe/<version>,
Accept */*, Connection close) with the probe's httpHeaders on top; HTTPS
probes skip certificate checks, as the kubelet's do.

Owns: the sockets and processes it starts, gone before it returns. Must
not touch anything else in a namespace.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from netemu.kernel import netns
from netemu.kernel.processes import command_in
from netemu.net import grpchealth
from netemu.net.addresses import host_port

# The kubelet's User-Agent names its own minor version (pkg/probe/http).
KUBE_VERSION = "1.31"
USER_AGENT = f"kube-probe/{KUBE_VERSION}"
# The kubelet keeps at most this much of a probe's output (pkg/probe: maxReadLength).
MAX_OUTPUT = 10 * 1024

Result = Literal["success", "failure", "error"]


@dataclass(frozen=True)
class HttpGet:
    netns: str  # the namespace the request is sent from (the node's)
    host: str  # an IP literal
    port: int
    path: str = "/"
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TcpConnect:
    netns: str
    host: str
    port: int


@dataclass(frozen=True)
class Exec:
    netns: str  # the pod's namespace
    argv: tuple[str, ...]
    hostname: str
    # A hostNetwork pod's own /etc files (processes.command_in's `etc`).
    etc: Path | None = None


@dataclass(frozen=True)
class GrpcCheck:
    netns: str
    host: str
    port: int
    service: str = ""


Action = HttpGet | TcpConnect | Exec | GrpcCheck


@dataclass(frozen=True)
class Outcome:
    result: Result
    output: str = ""


def run(action: Action, timeout: float) -> Outcome:
    """Run one probe; never raises for what happens on the wire."""
    if isinstance(action, HttpGet):
        return http_get(action, timeout)
    if isinstance(action, TcpConnect):
        return tcp_connect(action, timeout)
    if isinstance(action, GrpcCheck):
        return grpc_check(action, timeout)
    return exec_command(action, timeout)


def _family(host: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


class _CannotSendError(Exception):
    """The probe's socket could not be made (its namespace is gone, say)."""


def _connected(name: str, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection from inside `name`; raises OSError (TimeoutError too)."""
    try:
        sock = netns.open_socket(name, _family(host), socket.SOCK_STREAM)
    except OSError as exc:
        raise _CannotSendError(f"namespace {name}: {exc}") from exc
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _dial_error(exc: OSError, host: str, port: int) -> str:
    """How Go's net.Dial words a failure, as the kubelet reports it."""
    where = f"dial tcp {host_port(host, port)}"
    if isinstance(exc, TimeoutError):
        return f"{where}: i/o timeout"
    if isinstance(exc, ConnectionRefusedError):
        return f"{where}: connect: connection refused"
    return f"{where}: connect: {exc.strerror or exc}"


def _bad_target(host: str) -> str | None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        # A lab node has no resolver: a name would be looked up by the host's.
        return f"probe host {host!r} is not an IP address (netemu resolves no names for probes)"
    return None


def tcp_connect(action: TcpConnect, timeout: float) -> Outcome:
    if (problem := _bad_target(action.host)) is not None:
        return Outcome("error", problem)
    try:
        sock = _connected(action.netns, action.host, action.port, timeout)
    except _CannotSendError as exc:
        return Outcome("error", str(exc))
    except OSError as exc:
        return Outcome("failure", _dial_error(exc, action.host, action.port))
    sock.close()
    return Outcome("success")


def http_get(action: HttpGet, timeout: float) -> Outcome:
    if (problem := _bad_target(action.host)) is not None:
        return Outcome("error", problem)
    path = action.path if action.path.startswith("/") else "/" + action.path
    url = f"{action.scheme.lower()}://{host_port(action.host, action.port)}{path}"
    deadline = time.monotonic() + timeout
    try:
        sock = _connected(action.netns, action.host, action.port, timeout)
    except _CannotSendError as exc:
        return Outcome("error", str(exc))
    except OSError as exc:
        return Outcome("failure", f'Get "{url}": {_dial_error(exc, action.host, action.port)}')
    conn = http.client.HTTPConnection(action.host, action.port, timeout=timeout)
    try:
        if action.scheme == "HTTPS":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock)
        conn.sock = sock
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close"}
        for name, value in action.headers:
            # A probe's header replaces the kubelet's of that name.
            headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
            headers[name] = value
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        body = response.read(MAX_OUTPUT).decode("utf-8", errors="replace")
    except TimeoutError:
        return Outcome(
            "failure",
            f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting '
            "headers)",
        )
    except (OSError, http.client.HTTPException) as exc:
        return Outcome("failure", f'Get "{url}": {type(exc).__name__}: {exc}')
    finally:
        conn.close()
        sock.close()
    if 200 <= response.status < 400:
        return Outcome("success", body)
    return Outcome("failure", f"HTTP probe failed with statuscode: {response.status}")


def grpc_check(action: GrpcCheck, timeout: float) -> Outcome:
    """grpc.health.v1.Health/Check of `action.service` (pkg/probe/grpc)."""
    if (problem := _bad_target(action.host)) is not None:
        return Outcome("error", problem)
    addr = host_port(action.host, action.port)
    deadline = time.monotonic() + timeout
    try:
        sock = _connected(action.netns, action.host, action.port, timeout)
    except _CannotSendError as exc:
        return Outcome("error", str(exc))
    except TimeoutError:
        return Outcome(
            "failure", f'timeout: failed to connect service "{addr}" within {timeout:g}s'
        )
    except OSError as exc:
        return Outcome(
            "failure",
            f'error: failed to connect service at "{addr}": '
            f"{_dial_error(exc, action.host, action.port)}",
        )
    try:
        return grpc_call(sock, addr, action.service, deadline, timeout)
    except TimeoutError:
        return Outcome("failure", f"timeout: health rpc did not complete within {timeout:g}s")
    except (OSError, h2.exceptions.H2Error) as exc:
        return Outcome("failure", f"error: health rpc probe failed: {type(exc).__name__}: {exc}")
    finally:
        sock.close()


def grpc_call(
    sock: socket.socket, addr: str, service: str, deadline: float, timeout: float
) -> Outcome:
    """The health Check on a connected socket, answered by `deadline`
    (monotonic); raises OSError (TimeoutError too) or h2's errors for what
    goes wrong on the wire."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(
        stream,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", grpchealth.CHECK_PATH),
            (":authority", addr),
            ("content-type", grpchealth.CONTENT_TYPE),
            ("te", "trailers"),
            ("user-agent", USER_AGENT),
        ],
    )
    conn.send_data(stream, grpchealth.check_request(service), end_stream=True)
    sock.sendall(conn.data_to_send())
    headers: dict[str, str] = {}
    body = bytearray()
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        data = sock.recv(65536)
        if not data:
            raise ConnectionResetError("the server closed the connection")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                headers.update(dict(cast(list[tuple[str, str]], event.headers)))
            elif isinstance(event, h2.events.DataReceived):
                body.extend(event.data)
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                raise ConnectionResetError(f"stream reset (code {event.error_code})")
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                return _grpc_outcome(headers, bytes(body), timeout)
        sock.sendall(conn.data_to_send())


def _grpc_outcome(headers: dict[str, str], body: bytes, timeout: float) -> Outcome:
    code = int(headers.get("grpc-status", "2"))
    message = headers.get("grpc-message", "")
    if code == grpchealth.UNIMPLEMENTED:
        return Outcome(
            "failure",
            "error: this server does not implement the grpc health protocol "
            f"(grpc.health.v1.Health): {message}",
        )
    if code == grpchealth.DEADLINE_EXCEEDED:
        return Outcome("failure", f"timeout: health rpc did not complete within {timeout:g}s")
    if code != grpchealth.OK:
        name = grpchealth.CODE_NAMES.get(code, f"Code({code})")
        return Outcome(
            "failure", f"error: health rpc probe failed: rpc error: code = {name} desc = {message}"
        )
    status = grpchealth.response_status(body)
    if status != "SERVING":
        return Outcome("failure", f'service unhealthy (responded with "{status}")')
    return Outcome("success", "service healthy")


def exec_command(action: Exec, timeout: float) -> Outcome:
    return run_in(action.netns, action.argv, action.hostname, timeout, action.etc)


def run_in(
    name: str, argv: Sequence[str], hostname: str, timeout: float, etc: Path | None = None
) -> Outcome:
    """Run `argv` in namespace `name` (with `hostname`, and `etc`'s files
    over /etc), its output captured."""
    if not netns.exists(name):
        return Outcome("error", f"namespace {name} does not exist")
    try:
        process = subprocess.Popen(
            command_in(name, argv, hostname, etc),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
            start_new_session=True,  # its own process group: killed as one on timeout
        )
    except OSError as exc:
        return Outcome("error", f"{type(exc).__name__}: {exc}")
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        # pkg/probe/exec: a command that runs past its timeout is a failure.
        return Outcome("failure", f"command {list(argv)!r} timed out")
    text = out[:MAX_OUTPUT].decode("utf-8", errors="replace")
    if process.returncode == 0:
        return Outcome("success", text)
    return Outcome(
        "failure", f"command {list(argv)!r} exited with {process.returncode}: {text}".rstrip()
    )
