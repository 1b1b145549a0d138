"""Listening sockets for a pod's declared containerPorts, created inside the
pod's network namespace so a server in the supervisor's own thread and
namespace can serve them (a socket keeps the namespace it was made in).

Owns: the sockets it returns, until the caller takes them. Must not touch:
the namespace's links, addresses or routes; it only opens sockets there.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from netemu.kernel import netns

LISTEN_BACKLOG = 128


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _bound(netns_name: str, ip: str, port: int, kind: int) -> socket.socket:
    sock = netns.open_socket(netns_name, _family(ip), kind)
    try:
        # A pod restarted on the same IP must rebind at once, not wait out
        # TIME_WAIT of the previous incarnation's connections.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sock.family == socket.AF_INET6:
            # IPv6 only: a pod's IPv4 port has its own socket, and IPv4
            # clients must not show up as ::ffff:a.b.c.d mapped addresses.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((ip, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_pod_sockets(
    netns_name: str, ip: str, ports: Sequence[tuple[int, str]]
) -> tuple[list[socket.socket], list[socket.socket]]:
    """(tcp, udp) sockets bound to `ip` in namespace `netns_name`, one per
    (port, protocol); TCP ones are already listening, all are non-blocking.

    "SCTP" ports get no socket (and no error): an SCTP socket needs the
    kernel's sctp module, which lab kernels may lack, and a pod declaring
    an SCTP port must still start there.

    On any error every socket opened so far is closed before raising.
    """
    tcp: list[socket.socket] = []
    udp: list[socket.socket] = []
    try:
        for port, protocol in ports:
            proto = protocol.upper()
            if proto == "TCP":
                tcp.append(_bound(netns_name, ip, port, socket.SOCK_STREAM))
            elif proto == "UDP":
                udp.append(_bound(netns_name, ip, port, socket.SOCK_DGRAM))
            elif proto == "SCTP":
                continue
            else:
                raise ValueError(f"unknown protocol {protocol!r} for port {port}")
    except BaseException:
        for sock in (*tcp, *udp):
            sock.close()
        raise
    return tcp, udp


def bind_tcp_listener(netns_name: str, ip: str, port: int) -> socket.socket:
    """A non-blocking TCP socket listening on ip:port in namespace
    `netns_name` (for kube-proxy's health and metrics servers)."""
    return _bound(netns_name, ip, port, socket.SOCK_STREAM)
