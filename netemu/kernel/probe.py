"""Real requests sent from inside a lab namespace, without spawning a process:
the client socket is created in the namespace (netns.open_socket) and used
from the calling thread, so the packets take the pod's routes and meet the
node's rules exactly as a program in that pod would.

HTTP goes through http.client (the socket is swapped in by overriding
`connect`); failures are reported as an outcome, never raised, so tests and
the CLI can assert "refused" or "timeout" as readily as an answer.

Owns: the client sockets it opens (closed before returning, or when an
HttpSession closes). Must not touch: anything else in the namespace.
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import json
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from netemu.kernel import netns

Outcome = Literal["answered", "refused", "timeout", "unreachable", "error"]

_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH}
_MAX_DATAGRAM = 65535


@dataclass(frozen=True)
class ProbeResult:
    outcome: Outcome
    status: int | None = None  # HTTP status
    body: str = ""
    reply: dict[str, Any] | None = None  # parsed JSON body (test server reply) if any
    local: tuple[str, int] | None = None  # the client's own address:port
    elapsed: float = 0.0
    detail: str = ""
    data: bytes = b""  # udp_request: the answer's bytes as received (a DNS answer is binary)


def _family(host: str) -> int:
    # Only IP literals: a lab namespace has no resolver of its own, and name
    # lookups would silently use the host's.
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def _address(sock: socket.socket) -> tuple[str, int]:
    name = sock.getsockname()
    return str(name[0]), int(name[1])


def _outcome(exc: BaseException) -> Outcome:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    # socket.timeout is TimeoutError; a kernel ETIMEDOUT also lands here.
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return "unreachable"
    return "error"


def _failure(
    exc: BaseException, started: float, local: tuple[str, int] | None = None
) -> ProbeResult:
    return ProbeResult(
        outcome=_outcome(exc),
        local=local,
        elapsed=time.monotonic() - started,
        detail=f"{type(exc).__name__}: {exc}",
    )


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class _SessionClosedError(ConnectionError):
    """A session's connection is gone; it never opens a second one, since a
    new connection would hide what happened to the first."""


class _NetnsHTTPConnection(http.client.HTTPConnection):
    """http.client connection whose socket lives in namespace `netns_name`."""

    def __init__(
        self,
        netns_name: str,
        host: str,
        port: int,
        timeout: float,
        source_port: int | None = None,
        once: bool = False,
        abortive_close: bool = True,
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self.netns_name = netns_name
        self.source_port = source_port
        self.once = once
        self.abortive_close = abortive_close
        self.connected_from: tuple[str, int] | None = None

    def connect(self) -> None:
        if self.once and self.connected_from is not None:
            raise _SessionClosedError("the session's connection was closed")
        family = _family(self.host)
        sock = netns.open_socket(self.netns_name, family, socket.SOCK_STREAM)
        try:
            # As http.client does: requests are small, don't wait for Nagle.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.source_port is not None:
                # The same source port again may find the last connection's
                # TIME_WAIT still there. If this side happens to close first
                # (the server's FIN still in flight), only an abortive close
                # (linger 0: RST, no TIME_WAIT) frees the 4-tuple at once.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if self.abortive_close:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", self.source_port))
            sock.settimeout(self.timeout)
            sock.connect((self.host, self.port))
            self.connected_from = _address(sock)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _get(conn: _NetnsHTTPConnection, path: str, started: float, close: bool) -> ProbeResult:
    try:
        headers = {"Connection": "close"} if close else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return _failure(exc, started, conn.connected_from)
    body = raw.decode("utf-8", errors="replace")
    is_json = (response.getheader("Content-Type") or "").startswith("application/json")
    return ProbeResult(
        outcome="answered",
        status=response.status,
        body=body,
        reply=_json_object(body) if is_json else None,
        local=conn.connected_from,
        elapsed=time.monotonic() - started,
    )


def http_get(
    netns_name: str,
    host: str,
    port: int,
    path: str = "/",
    timeout: float = 2.0,
    source_port: int | None = None,
    abortive_close: bool = True,
) -> ProbeResult:
    """One HTTP GET on a fresh connection from inside `netns_name`; `host` is
    an IP literal, `timeout` bounds the connect and each read. With a
    `source_port` the connection ends with a RST unless `abortive_close` is
    false (a tracer wants the ordinary FIN exchange on the wire)."""
    started = time.monotonic()
    conn = _NetnsHTTPConnection(
        netns_name, host, port, timeout, source_port, abortive_close=abortive_close
    )
    try:
        # Asking the server to close lets it close first, which normally
        # leaves TIME_WAIT on its side, not ours: a fixed source_port can
        # then be used again at once.
        return _get(conn, path, started, close=True)
    finally:
        conn.close()


def udp_request(
    netns_name: str,
    host: str,
    port: int,
    payload: bytes = b"ping",
    timeout: float = 2.0,
    source_port: int | None = None,
) -> ProbeResult:
    """Send one datagram from inside `netns_name` and wait for one answer.

    The socket is connected, as a typical client's is: an ICMP port
    unreachable then surfaces as "refused", and only an answer from
    (host, port) is accepted, so a reply whose source was not translated
    back to the address asked is lost ("timeout"), as it would be for a
    real client.
    """
    started = time.monotonic()
    local: tuple[str, int] | None = None
    try:
        sock = netns.open_socket(netns_name, _family(host), socket.SOCK_DGRAM)
    except OSError as exc:
        return _failure(exc, started)
    try:
        sock.settimeout(timeout)
        if source_port is not None:
            sock.bind(("0.0.0.0", source_port))
        sock.connect((host, port))
        local = _address(sock)
        sock.send(payload)
        data = sock.recv(_MAX_DATAGRAM)
    except OSError as exc:
        return _failure(exc, started, local)
    finally:
        sock.close()
    body = data.decode("utf-8", errors="replace")
    return ProbeResult(
        outcome="answered",
        body=body,
        reply=_json_object(body),
        data=data,
        local=local,
        elapsed=time.monotonic() - started,
    )


def free_port(netns_name: str, proto: str, family: int = socket.AF_INET) -> int:
    """A source port nothing in `netns_name` uses now, chosen by the kernel
    from its ephemeral range (the socket that found it is closed again);
    `family` AF_INET6 for a port free on IPv6."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = netns.open_socket(netns_name, family, kind)
    try:
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        return int(sock.getsockname()[1])
    finally:
        sock.close()


def source_address(netns_name: str, host: str) -> str:
    """The source address the namespace's routing picks for packets to
    `host` (a connected UDP socket: no packet is sent)."""
    sock = netns.open_socket(netns_name, _family(host), socket.SOCK_DGRAM)
    try:
        sock.connect((host, 9))
        return _address(sock)[0]
    finally:
        sock.close()


def icmp_echo(netns_name: str, host: str, ident: int, timeout: float = 2.0) -> ProbeResult:
    """One ICMP echo request (built with Scapy) from inside `netns_name` on a
    raw socket, waiting for the echo reply with the same id; an ICMP
    destination unreachable about it is "unreachable"; ICMPv6 for an IPv6
    `host`."""
    if _family(host) == socket.AF_INET6:
        from scapy.layers.inet6 import ICMPv6EchoRequest

        # The kernel fills in an ICMPv6 checksum on a raw socket (RFC 3542).
        request = bytes(ICMPv6EchoRequest(id=ident, seq=1, data=b"netemu trace", cksum=0))
        return _echo(netns_name, socket.AF_INET6, request, host, timeout, _icmpv6_answer(ident))
    from scapy.layers.inet import ICMP

    request = bytes(ICMP(type=8, id=ident, seq=1) / b"netemu trace")
    return _echo(netns_name, socket.AF_INET, request, host, timeout, _icmp_answer(ident))


# What a read of the raw socket says about the echo: (True: its reply, or
# False: an error about it; a description), or None for another packet.
_Answer = Callable[[bytes, str], tuple[bool, str] | None]


def _echo(
    netns_name: str, family: int, request: bytes, host: str, timeout: float, answer: _Answer
) -> ProbeResult:
    """Send `request` on a raw ICMP (ICMPv6) socket and read until `answer`
    recognises the reply or an error about it, or `timeout`."""
    started = time.monotonic()
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    try:
        sock = netns.open_socket(netns_name, family, socket.SOCK_RAW, proto)
    except OSError as exc:
        return _failure(exc, started)
    try:
        sock.sendto(request, (host, 0))
        deadline = started + timeout
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            data, sender = sock.recvfrom(_MAX_DATAGRAM)
            found = answer(data, sender[0])
            if found is None:
                continue
            replied, text = found
            elapsed = time.monotonic() - started
            if replied:
                return ProbeResult(outcome="answered", body=text, elapsed=elapsed)
            return ProbeResult(outcome="unreachable", detail=text, elapsed=elapsed)
    except OSError as exc:
        return _failure(exc, started)
    finally:
        sock.close()


def _icmp_answer(ident: int) -> _Answer:
    """An IPv4 raw socket's reads start at the IP header."""
    from scapy.layers.inet import ICMP, IP

    def answer(data: bytes, sender: str) -> tuple[bool, str] | None:
        packet = IP(data)
        icmp = packet.getlayer(ICMP)
        if icmp is None:
            return None
        if icmp.type == 0 and icmp.id == ident:
            return True, f"echo reply from {packet.src}"
        quoted = icmp.payload.getlayer(ICMP) if icmp.type in (3, 11) else None
        if quoted is not None and quoted.id == ident:
            return False, f"ICMP type {icmp.type} code {icmp.code} from {packet.src}"
        return None

    return answer


def _icmpv6_answer(ident: int) -> _Answer:
    """An IPv6 raw socket's reads start at the ICMPv6 header (no IP header)."""
    from scapy.layers.inet6 import (
        ICMPv6DestUnreach,
        ICMPv6EchoReply,
        ICMPv6EchoRequest,
        ICMPv6TimeExceeded,
        IPerror6,
    )

    def answer(data: bytes, sender: str) -> tuple[bool, str] | None:
        if data[0] == 129:
            if ICMPv6EchoReply(data).id == ident:
                return True, f"echo reply from {sender}"
            return None
        errors = {1: ICMPv6DestUnreach, 3: ICMPv6TimeExceeded}
        if data[0] not in errors:
            return None
        quoted = errors[data[0]](data).getlayer(IPerror6)
        echo = quoted.getlayer(ICMPv6EchoRequest) if quoted is not None else None
        if echo is not None and echo.id == ident:
            return False, f"ICMPv6 type {data[0]} code {data[1]} from {sender}"
        return None

    return answer


class HttpSession:
    """One keep-alive HTTP connection from inside a namespace, opened by the
    first `get` and reused by every later one (ProbeResult.local stays the
    same). It never reconnects: once the connection is gone every `get`
    reports "error", which is how a test sees an established connection
    being dropped rather than a fresh one quietly taking its place.
    """

    def __init__(
        self,
        netns_name: str,
        host: str,
        port: int,
        timeout: float = 2.0,
        source_port: int | None = None,
    ) -> None:
        self._conn = _NetnsHTTPConnection(netns_name, host, port, timeout, source_port, once=True)

    @property
    def local(self) -> tuple[str, int] | None:
        """The client's address:port once connected."""
        return self._conn.connected_from

    def get(self, path: str = "/") -> ProbeResult:
        started = time.monotonic()
        result = _get(self._conn, path, started, close=False)
        if result.outcome != "answered":
            # http.client would otherwise leave a half-used socket behind.
            self._conn.close()
        return result

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> HttpSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
