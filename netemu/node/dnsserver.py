"""The built-in cluster DNS server: what a lab container without a `command`
runs, on every declared containerPort, UDP and TCP, in a pod annotated
`netemu/builtin-server: dns` (the `kube-system/coredns` addon Deployment
behind the `kube-dns` Service, netemu.controlplane.addons), answering from
the control plane's state as CoreDNS's kubernetes plugin does
(netemu.node.dnsrecords).

The wire format is dnspython's (parsing, name compression, EDNS(0), TC
truncation); the framing is RFC 1035 4.2 (UDP: one message per datagram;
TCP: each message prefixed by its two-byte length, several per connection,
RFC 7766). Like the test servers it runs on the TestServers event loop, on
sockets the kubelet made in the pod's namespace.

The data: a `DnsFeed` holds the current `ClusterDns`; the supervisor builds
a new one from a snapshot after every reconcile, in its own thread, and
swaps it in with one reference assignment. The loop only reads that
reference and does dictionary look-ups: answering never blocks it.

A datagram that is no DNS query still gets what CoreDNS (miekg/dns) answers
(its DefaultMsgAcceptFunc): a header-only reply with the same ID, NOTIMP
for an opcode other than QUERY, FORMERR for a message that does not parse;
too short for a header, or a response (QR set), it is dropped. So `netemu
trace <pod> kube-system/kube-dns --proto udp`, whose datagram is text, is
answered and shows as delivered.

Metrics: a TCP socket on port 9153 (kubeadm's `metrics` port of CoreDNS)
serves HTTP `GET /metrics` in the Prometheus text format instead of DNS,
with the counters of this server as CoreDNS's `prometheus` plugin names
them: `coredns_dns_requests_total` (server, zone, view, proto, family,
type) and `coredns_dns_responses_total` (server, zone, view, rcode,
plugin), counted from the queries this server answered since it started.
kubeadm's Corefile has one server block, `.:53`, hence server="dns://:53"
and zone="."; `plugin` is "kubernetes" for answers from the cluster's
records and empty for replies made before any plugin (FORMERR, NOTIMP,
BADVERS). Histograms, cache and forward metrics are not modelled.

Owns: the transports and connections it opens on the sockets handed to
`serve_dns` until `DnsServing.aclose`. Must not touch: namespaces, links,
rules, or the control plane (it reads the feed only).
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import traceback
from dataclasses import dataclass, field
from typing import Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from netemu.node.dnsrecords import Answer, ClusterDns, Record

# RFC 1035 4.2.1: a UDP answer without EDNS(0) fits in 512 bytes.
UDP_PAYLOAD = 512
# What the server itself offers in its OPT record (the DNS Flag Day 2020 size).
OUR_PAYLOAD = 1232
TCP_MAX = 65535
SHUFFLED = ("A", "AAAA")
# An idle TCP connection is closed after this long (RFC 7766 6.2.3 asks
# servers to; miekg/dns, CoreDNS's server, waits 8 s).
TCP_IDLE_TIMEOUT = 8.0
# kubeadm's CoreDNS metrics port (the `prometheus :9153` line of its Corefile).
METRICS_PORT = 9153
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SERVER = "dns://:53"
_ZONE = "."
# The query types CoreDNS's metrics name; any other counts as "other".
_METRIC_TYPES = frozenset(
    {"A", "AAAA", "ANY", "CNAME", "DNSKEY", "DS", "HINFO", "MX", "NAPTR", "NS", "NSEC"}
    | {"NSEC3", "OPT", "PTR", "RRSIG", "SOA", "SRV", "TXT", "IXFR", "AXFR"}
)
_HEADER = struct.Struct("!HHHHHH")
_QR = 0x8000
_RD = 0x0100


class DnsFeed:
    """The records the DNS servers answer from; `update` swaps them whole."""

    def __init__(self) -> None:
        self.zone: ClusterDns | None = None  # nothing to answer from yet

    def update(self, zone: ClusterDns) -> None:
        # One reference assignment: the loop sees the old records or the new.
        self.zone = zone


class DnsMetrics(Collector):
    """The counters of one DNS server, exposed as CoreDNS exposes them."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}  # (proto, family, type)
        self.responses: dict[tuple[str, str], int] = {}  # (rcode, plugin)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def request(self, tcp: bool, family: int, qtype: str) -> None:
        shown = qtype if qtype in _METRIC_TYPES else "other"
        key = ("tcp" if tcp else "udp", str(family), shown)
        self.requests[key] = self.requests.get(key, 0) + 1

    def response(self, rcode: str, plugin: str) -> None:
        self.responses[(rcode, plugin)] = self.responses.get((rcode, plugin), 0) + 1

    def collect(self) -> Any:
        requests = CounterMetricFamily(
            "coredns_dns_requests",
            "Counter of DNS requests made per zone, protocol and family.",
            labels=["server", "zone", "view", "proto", "family", "type"],
        )
        for (proto, family, qtype), count in sorted(self.requests.items()):
            requests.add_metric([_SERVER, _ZONE, "", proto, family, qtype], count)
        yield requests
        responses = CounterMetricFamily(
            "coredns_dns_responses",
            "Counter of response status codes.",
            labels=["server", "zone", "view", "rcode", "plugin"],
        )
        for (rcode, plugin), count in sorted(self.responses.items()):
            responses.add_metric([_SERVER, _ZONE, "", rcode, plugin], count)
        yield responses

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _count_reply(metrics: DnsMetrics | None, reply: bytes, plugin: str) -> bytes:
    if metrics is not None:
        (flags,) = struct.unpack_from("!H", reply, 2)
        metrics.response(dns.rcode.to_text(dns.rcode.Rcode(flags & 0xF)), plugin)
    return reply


def _header_only(wire: bytes, rcode: int) -> bytes:
    """A reply that echoes the query's ID, opcode and RD and carries only
    `rcode`: for a query that cannot be answered better."""
    ident, flags = struct.unpack_from("!HH", wire)
    flags = _QR | (flags & (0x7800 | _RD)) | (rcode & 0xF)
    return _HEADER.pack(ident, flags, 0, 0, 0, 0)


def _rrsets(records: tuple[Record, ...]) -> list[dns.rrset.RRset]:
    """Records grouped into RRsets (same name and type), in first-seen order.
    Address records in random order, as kubeadm's Corefile has CoreDNS's
    `loadbalance` plugin shuffle A and AAAA answers; the rest as given (so a
    PTR look-up's first name is stable)."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        groups.setdefault((record.name.lower(), record.rtype), []).append(record)
    rrsets = []
    for group in groups.values():
        first = group[0]
        texts = [r.data for r in group]
        if first.rtype in SHUFFLED:
            random.shuffle(texts)
        ttl = min(r.ttl for r in group)
        rrsets.append(dns.rrset.from_text_list(first.name, ttl, "IN", first.rtype, texts))
    return rrsets


def respond(
    wire: bytes,
    zone: ClusterDns | None,
    *,
    tcp: bool = False,
    metrics: DnsMetrics | None = None,
    family: int = 1,
) -> bytes | None:
    """The reply to one DNS message in wire format, or None to stay silent.
    `metrics` counts the request and the reply (`family`: 1 for a client on
    IPv4, 2 on IPv6, as CoreDNS labels them)."""
    if len(wire) < _HEADER.size:
        return None  # not even an ID to answer
    _, flags = struct.unpack_from("!HH", wire)
    if flags & _QR:
        return None  # a response: answering it could start a loop
    if (flags >> 11) & 0xF != dns.opcode.QUERY:
        return _count_reply(metrics, _header_only(wire, dns.rcode.NOTIMP), "")
    try:
        query = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError, UnicodeError):
        return _count_reply(metrics, _header_only(wire, dns.rcode.FORMERR), "")
    if metrics is not None and len(query.question) == 1:
        metrics.request(tcp, family, dns.rdatatype.to_text(query.question[0].rdtype))
    plugin = ""
    response = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
    if query.edns > 0:
        # RFC 6891 6.1.3: only EDNS version 0 is known.
        response.set_rcode(dns.rcode.BADVERS)
    elif len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
    elif query.question[0].rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
        response.set_rcode(dns.rcode.REFUSED)
    elif zone is None:
        response.set_rcode(dns.rcode.SERVFAIL)  # no data yet
    else:
        question = query.question[0]
        qtype = dns.rdatatype.to_text(question.rdtype)
        try:
            answer = zone.answer(question.name.to_text(), qtype)
        except Exception:  # a bug must not make the server go silent
            traceback.print_exc()
            response.set_rcode(dns.rcode.SERVFAIL)
        else:
            _fill(response, answer)
            plugin = "kubernetes"
    if tcp:
        max_size = TCP_MAX
    elif query.edns >= 0:
        max_size = max(UDP_PAYLOAD, min(query.payload, OUR_PAYLOAD))
    else:
        max_size = UDP_PAYLOAD
    # Too big for UDP: whole RRsets are left out, and TC is set when the
    # answer or authority section lost any, so the client asks over TCP.
    # dnspython would shuffle every RRset; _rrsets has ordered them.
    reply = response.to_wire(max_size=max_size, prefer_truncation=True, want_shuffle=False)
    return _count_reply(metrics, reply, plugin)


def _fill(response: dns.message.Message, answer: Answer) -> None:
    response.set_rcode(dns.rcode.from_text(answer.rcode))
    if answer.authoritative:
        response.flags |= dns.flags.AA
    response.answer.extend(_rrsets(answer.answer))
    response.authority.extend(_rrsets(answer.authority))
    response.additional.extend(_rrsets(answer.additional))


def _family(address: Any) -> int:
    return 2 if isinstance(address, tuple) and ":" in str(address[0]) else 1


class _DnsDatagrams(asyncio.DatagramProtocol):
    def __init__(self, feed: DnsFeed, metrics: DnsMetrics) -> None:
        self.feed = feed
        self.metrics = metrics
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector datagram transport does not subclass
        # asyncio.DatagramTransport, though it implements it.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.transport is None:
            return
        reply = respond(data, self.feed.zone, metrics=self.metrics, family=_family(addr))
        if reply is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier answer: the client went away.
        pass


class _DnsStream(asyncio.Protocol):
    """One TCP connection: length-prefixed messages, answered in order."""

    def __init__(
        self, feed: DnsFeed, connections: set[asyncio.Transport], metrics: DnsMetrics
    ) -> None:
        self.feed = feed
        self.connections = connections
        self.metrics = metrics
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.idle: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        transport = self.transport
        if transport is not None:
            self.idle = asyncio.get_running_loop().call_later(TCP_IDLE_TIMEOUT, transport.close)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.connections.add(self.transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        self.buffer += data
        while len(self.buffer) >= 2:
            (length,) = struct.unpack_from("!H", self.buffer)
            if len(self.buffer) < 2 + length:
                break
            message, self.buffer = self.buffer[2 : 2 + length], self.buffer[2 + length :]
            peer = transport.get_extra_info("peername")
            reply = respond(
                message, self.feed.zone, tcp=True, metrics=self.metrics, family=_family(peer)
            )
            if reply is not None:
                transport.write(struct.pack("!H", len(reply)) + reply)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()
        if self.transport is not None:
            self.connections.discard(self.transport)
        self.transport = None


@dataclass
class DnsServing:
    """The DNS server on one container's sockets."""

    udp: list[asyncio.DatagramTransport] = field(default_factory=list)
    servers: list[asyncio.Server] = field(default_factory=list)
    connections: set[asyncio.Transport] = field(default_factory=set)
    metrics: DnsMetrics = field(default_factory=DnsMetrics)
    metrics_runner: web.AppRunner | None = None

    async def aclose(self) -> None:
        """Stop listening and drop every open connection."""
        if self.metrics_runner is not None:
            await self.metrics_runner.cleanup()
        for transport in self.udp:
            transport.close()
        for server in self.servers:
            server.close()
        for connection in list(self.connections):
            connection.close()
        for server in self.servers:
            await server.wait_closed()
        # A closed transport releases its socket on the next loop turn.
        await asyncio.sleep(0)


async def serve_dns(
    feed: DnsFeed,
    tcp: list[socket.socket],
    udp: list[socket.socket],
    metrics_port: int = METRICS_PORT,
) -> DnsServing:
    """Serve DNS from `feed` on bound sockets (TCP ones listening), and the
    metrics on a TCP socket bound to `metrics_port`; runs on the loop. On
    error what was started is closed before raising."""
    loop = asyncio.get_running_loop()
    serving = DnsServing()
    metrics = serving.metrics
    try:
        for sock in tcp:
            if sock.getsockname()[1] == metrics_port:
                await _serve_metrics(serving, sock)
                continue
            server = await loop.create_server(
                lambda: _DnsStream(feed, serving.connections, metrics), sock=sock
            )
            serving.servers.append(server)
        for sock in udp:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _DnsDatagrams(feed, metrics), sock=sock
            )
            serving.udp.append(transport)
    except BaseException:
        await serving.aclose()
        raise
    return serving


async def _serve_metrics(serving: DnsServing, sock: socket.socket) -> None:
    """HTTP GET /metrics on `sock`, as CoreDNS's prometheus plugin serves it."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=serving.metrics.exposition(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )

    if serving.metrics_runner is None:
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        serving.metrics_runner = web.AppRunner(app, access_log=None)
        await serving.metrics_runner.setup()
    await web.SockSite(serving.metrics_runner, sock).start()
