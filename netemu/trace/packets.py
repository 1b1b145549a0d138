"""Decoding captured frames into the packets a trace reports.

A capture point hands over raw Ethernet frames; this module turns one frame
into its IPv4 or IPv6 packet (through a VXLAN overlay when the frame is
encapsulated), says it in one line, and computes the packet's identity:
what stays the same for one packet from hop to hop while NAT rewrites
addresses and ports, routers decrement the TTL and the overlay wraps and
unwraps it.

Owns: decode, identity and the IpPacket / Tunnel / Decoded records. Pure:
bytes in, data out (with Scapy); capturing is netemu.kernel's job.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Container
from dataclasses import dataclass

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

_ETH_P_IP = 0x0800
_ETH_P_IPV6 = 0x86DD
_IPV6_HEADER = 40
_VLAN_TAGS = (0x8100, 0x88A8)
_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}
# ICMPv6 is "icmp" too: the flow's protocol word is the same for both
# families (as `ping` is); `version` tells the type numbers apart.
_PROTO_NAMES_V6 = {58: "icmp", 6: "tcp", 17: "udp"}
_ICMPV6_ECHO = (128, 129)
_IPV6_HOP_BY_HOP = 0
_IPPROTO_ICMPV6 = 58
# MLD (130-132, 143) and neighbour discovery (133-137) and what lies between.
_ICMPV6_LINK_TYPES = (130, 143)
# ICMPv6 errors (RFC 4443): unreachable, packet too big, time exceeded,
# parameter problem, each quoting as much of the packet as fits.
_ICMPV6_ERRORS = (1, 2, 3, 4)
_ICMPV6_NAMES: dict[tuple[int, int | None], str] = {
    (128, None): "echo-request",
    (129, None): "echo-reply",
    (1, 0): "no-route",
    (1, 1): "admin-prohibited",
    (1, 3): "addr-unreachable",
    (1, 4): "port-unreachable",
    (1, 5): "policy-fail",
    (1, 6): "reject-route",
    (2, None): "packet-too-big",
    (3, 0): "hop-limit-exceeded",
    (3, 1): "reassembly-time-exceeded",
    (4, None): "parameter-problem",
}
_ICMP_ECHO = (0, 8)
# ICMP errors quote the offending packet's IP header and first bytes.
_ICMP_ERRORS = (3, 4, 5, 11, 12)
_ICMP_NAMES: dict[tuple[int, int | None], str] = {
    (0, None): "echo-reply",
    (8, None): "echo-request",
    (3, 0): "net-unreachable",
    (3, 1): "host-unreachable",
    (3, 2): "protocol-unreachable",
    (3, 3): "port-unreachable",
    (3, 4): "fragmentation-needed",
    (3, 9): "net-prohibited",
    (3, 10): "host-prohibited",
    (3, 13): "admin-prohibited",
    (4, None): "source-quench",
    (5, None): "redirect",
    (11, 0): "ttl-exceeded",
    (11, 1): "reassembly-time-exceeded",
    (12, None): "parameter-problem",
}


@dataclass(frozen=True)
class IpPacket:
    proto: str  # "tcp" | "udp" | "icmp" | str(number)
    src: str
    dst: str
    sport: int | None  # ICMP echo: the echo id (same convention as FlowTuple)
    dport: int | None  # ICMP echo: 0
    ttl: int  # the hop limit for IPv6
    # IPv4: the IP id. IPv6 has none: its flow label, which routers and NAT
    # leave alone as they do the id (nft monitor trace prints it too).
    ip_id: int
    length: int  # the IP total length from the header (IPv6: the payload length)
    tcp_flags: str | None  # Scapy's flags string: "S", "SA", "A", "PA", "FA", "R", "RA"
    tcp_seq: int | None
    icmp_type: int | None
    icmp_code: int | None
    quoted: IpPacket | None  # ICMP errors: the packet the error is about (possibly truncated)
    payload_digest: str  # short hash of the L4 payload (see identity)
    version: int = 4

    @property
    def icmp_name(self) -> str | None:
        """ "echo-request", "port-unreachable", "ttl-exceeded", ... or
        "type=T code=C" for the rest; None for non-ICMP packets."""
        if self.icmp_type is None:
            return None
        names = _ICMPV6_NAMES if self.version == 6 else _ICMP_NAMES
        return names.get(
            (self.icmp_type, self.icmp_code),
            names.get((self.icmp_type, None), f"type={self.icmp_type} code={self.icmp_code}"),
        )

    def endpoints(self) -> str:
        """ "src:sport → dst:dport proto" ("src → dst proto" without ports)."""
        if self.proto == "icmp" or self.sport is None or self.dport is None:
            return f"{self.src} → {self.dst} {self.proto}"
        return f"{_at(self.src, self.sport)} → {_at(self.dst, self.dport)} {self.proto}"

    def summary(self) -> str:
        """One line, e.g. "10.244.0.2:41522 → 10.96.0.10:53 udp ttl=64",
        "... tcp [S] ttl=64", "10.0.0.1 → 10.0.0.2 icmp echo-request id=7 ttl=64",
        "... icmp port-unreachable (10.244.0.2:41522 → 10.96.0.1:80 tcp) ttl=64"."""
        text = self.endpoints()
        if self.tcp_flags is not None:
            text += f" [{self.tcp_flags}]"
        if self.icmp_type is not None:
            text += f" {self.icmp_name}"
            echo = _ICMPV6_ECHO if self.version == 6 else _ICMP_ECHO
            if self.icmp_type in echo and self.sport is not None:
                text += f" id={self.sport}"
            if self.quoted is not None:
                text += f" ({self.quoted.endpoints()})"
        return f"{text} ttl={self.ttl}"


@dataclass(frozen=True)
class Tunnel:
    kind: str  # "vxlan"
    src: str
    dst: str
    sport: int
    dport: int
    vni: int
    ttl: int


@dataclass(frozen=True)
class Decoded:
    eth_src: str  # the captured frame's own (outer) Ethernet addresses
    eth_dst: str
    tunnel: Tunnel | None  # outer headers when the frame is VXLAN-encapsulated
    packet: IpPacket  # the innermost IPv4 packet


def decode(frame: bytes, vxlan_port: int | None) -> Decoded | None:
    """The frame's IPv4 packet (through one VXLAN layer and 802.1Q tags), or
    None for anything else: ARP, IPv6, LLDP, truncated or garbled frames,
    and VXLAN frames that carry something other than IPv4.

    `vxlan_port` is the lab's own tunnel port (None without a VXLAN
    overlay): only UDP to it is unwrapped, and only when it starts with a
    VXLAN header (RFC 7348: flags exactly I, reserved bits zero). Any other
    UDP, 4789 and 8472 included, and a Service's own datagram to the lab's
    port (a pod's server may listen there too) is a datagram of its own."""
    located = _ip_of(frame)
    if located is None:
        return None
    eth, data = located
    outer = _ip_packet(data)
    if outer is None:
        return None
    tunnel = None
    if (
        vxlan_port is not None
        and outer.proto == "udp"
        and outer.dport == vxlan_port
        and _has_vxlan_header(data)
    ):
        inner = _vxlan(outer, data)
        if inner is None:
            return None
        tunnel, inner_frame = inner
        located_inner = _ip_of(inner_frame)
        if located_inner is None:
            return None
        packet = _ip_packet(located_inner[1])
        if packet is None:
            return None
        outer = packet
    return Decoded(eth_src=str(eth.src), eth_dst=str(eth.dst), tunnel=tunnel, packet=outer)


def identity(packet: IpPacket) -> tuple[object, ...]:
    """What stays the same for one packet across hops despite NAT, routing
    and encapsulation: (ip_id, proto, tcp_seq, tcp_flags, icmp_type,
    payload_digest, length). Addresses and ports are left out (NAT rewrites
    them, and the ICMP echo id too under --random-fully masquerade)."""
    return (
        packet.ip_id,
        packet.proto,
        packet.tcp_seq,
        packet.tcp_flags,
        packet.icmp_type,
        packet.payload_digest,
        packet.length,
    )


def _at(ip: str, port: int) -> str:
    """`ip:port`; `[ip]:port` for IPv6."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _ip_of(frame: bytes) -> tuple[Ether, bytes] | None:
    """The Ethernet header and the bytes of its IPv4 or IPv6 packet. Only the
    headers are dissected: a tracer decodes every frame it captured, and a
    whole-frame dissection (VXLAN and its inner frame included) cost several
    times more than the fields it reads."""
    if len(frame) < 14 + 20:
        return None
    offset, ethertype = 14, int.from_bytes(frame[12:14], "big")
    # 802.1Q and 802.1ad tags (the ethertypes Scapy dissects as Dot1Q).
    while ethertype in _VLAN_TAGS and len(frame) >= offset + 4:
        ethertype = int.from_bytes(frame[offset + 2 : offset + 4], "big")
        offset += 4
    if ethertype not in (_ETH_P_IP, _ETH_P_IPV6):
        return None
    return Ether(frame[:14]), frame[offset:]


def _header_length(data: bytes) -> int:
    """The IP header's length: IPv4's IHL, IPv6's fixed header (flannel and
    kube-proxy's packets carry no extension headers)."""
    return _IPV6_HEADER if data[0] >> 4 == 6 else (data[0] & 0x0F) * 4


def _has_vxlan_header(data: bytes) -> bool:
    """The UDP payload of IP packet `data` opens with a VXLAN header as
    Linux sends it: the flags byte 0x08 (a valid VNI), the 24 bits after it
    and the last byte (reserved) zero."""
    ihl = _header_length(data)
    header = data[ihl + 8 : ihl + 16]
    return len(header) == 8 and header[0] == 0x08 and header[1:4] == b"\0\0\0" and header[7] == 0


def _vxlan(outer: IpPacket, data: bytes) -> tuple[Tunnel, bytes] | None:
    ihl = _header_length(data)
    udp_payload = data[ihl + 8 : _end(data)]
    if len(udp_payload) < 8:
        return None
    if outer.sport is None or outer.dport is None:
        return None
    header = VXLAN(udp_payload[:8])
    tunnel = Tunnel(
        kind="vxlan",
        src=outer.src,
        dst=outer.dst,
        sport=outer.sport,
        dport=outer.dport,
        vni=int(header.vni),
        ttl=outer.ttl,
    )
    return tunnel, udp_payload[8:]


def _end(data: bytes) -> int:
    """Where the IP packet ends: its total length, so Ethernet padding is
    not mistaken for payload (capped by what was captured)."""
    if data[0] >> 4 == 6:
        return min(_IPV6_HEADER + int.from_bytes(data[4:6], "big"), len(data))
    total = int.from_bytes(data[2:4], "big")
    ihl = (data[0] & 0x0F) * 4
    return min(total, len(data)) if total >= ihl else len(data)


def _ip_packet(data: bytes, quoted: bool = False) -> IpPacket | None:
    """One IPv4 or IPv6 packet from its bytes. Quoted packets (inside ICMP
    errors) may be cut short: fields that did not fit are None."""
    if len(data) >= _IPV6_HEADER and data[0] >> 4 == 6:
        return _ipv6_packet(data, quoted)
    if len(data) < 20 or data[0] >> 4 != 4 or (data[0] & 0x0F) < 5:
        return None
    ihl = (data[0] & 0x0F) * 4
    ip = IP(data[:ihl])  # the header only; the rest is read from `data`
    l4 = data[ihl : _end(data)]
    number = int(ip.proto)
    return _packet(
        _PROTO_NAMES.get(number, str(number)),
        l4,
        # A later fragment has no L4 header.
        has_l4=int(ip.frag) == 0,
        quoted=quoted,
        src=str(ip.src),
        dst=str(ip.dst),
        ttl=int(ip.ttl),
        ip_id=int(ip.id),
        length=int(ip.len),
    )


def _ipv6_packet(data: bytes, quoted: bool) -> IpPacket | None:
    """The IPv6 counterpart of _ip_packet: the same fields, from the fixed
    header (no extension headers are followed) and the L4 header after it.
    None for IPv6's own link chatter, which no traced flow is made of:
    multicast, neighbour discovery and MLD (ICMPv6 types 130-143, MLD
    behind a hop-by-hop header)."""
    ip = IPv6(data[:_IPV6_HEADER])
    l4 = data[_IPV6_HEADER : _end(data)]
    number = int(ip.nh)
    if not quoted and (
        data[24] == 0xFF
        or number == _IPV6_HOP_BY_HOP
        or (
            number == _IPPROTO_ICMPV6
            and l4[:1]
            and _ICMPV6_LINK_TYPES[0] <= l4[0] <= _ICMPV6_LINK_TYPES[1]
        )
    ):
        return None
    return _packet(
        _PROTO_NAMES_V6.get(number, str(number)),
        l4,
        has_l4=True,
        quoted=quoted,
        src=str(ip.src),
        dst=str(ip.dst),
        ttl=int(ip.hlim),
        ip_id=int(ip.fl),
        length=int(ip.plen),
        version=6,
    )


def _packet(
    proto: str,
    l4: bytes,
    *,
    has_l4: bool,
    quoted: bool,
    src: str,
    dst: str,
    ttl: int,
    ip_id: int,
    length: int,
    version: int = 4,
) -> IpPacket:
    """An IPv4 or IPv6 packet from its header's fields and the bytes after
    the header: its TCP/UDP ports or ICMP (ICMPv6) type, code and quoted
    packet, and its payload's digest."""
    sport = dport = seq = icmp_type = icmp_code = None
    flags: str | None = None
    inner: IpPacket | None = None
    payload = l4
    echo, errors = (_ICMPV6_ECHO, _ICMPV6_ERRORS) if version == 6 else (_ICMP_ECHO, _ICMP_ERRORS)
    if not has_l4:
        pass
    elif proto in ("tcp", "udp"):
        sport, dport, seq, flags, payload = _transport(proto, l4)
    elif proto == "icmp" and len(l4) >= 4:
        sport, dport, icmp_type, icmp_code, payload, inner = _icmp(l4, echo, errors, quoted)
    digest = _digest(payload) if inner is None else _quoted_digest(inner, l4[8:])
    return IpPacket(
        proto=proto,
        src=src,
        dst=dst,
        sport=sport,
        dport=dport,
        ttl=ttl,
        ip_id=ip_id,
        length=length,
        tcp_flags=flags,
        tcp_seq=seq,
        icmp_type=icmp_type,
        icmp_code=icmp_code,
        quoted=inner,
        payload_digest=digest,
        version=version,
    )


def _transport(
    proto: str, l4: bytes
) -> tuple[int | None, int | None, int | None, str | None, bytes]:
    """(sport, dport, TCP sequence, TCP flags, payload) of a TCP or UDP header."""
    if proto == "tcp" and len(l4) >= 8:
        sport, dport, seq = struct.unpack("!HHI", l4[:8])
        if len(l4) >= 20:
            tcp = TCP(l4)
            return sport, dport, seq, str(tcp.flags), l4[int(tcp.dataofs) * 4 :]
        return sport, dport, seq, None, b""
    if proto == "udp" and len(l4) >= 8:
        sport, dport = struct.unpack("!HH", l4[:4])
        return sport, dport, None, None, l4[8:]
    return None, None, None, None, l4


def _icmp(
    l4: bytes, echo: Container[int], errors: Container[int], quoted: bool
) -> tuple[int | None, int | None, int, int, bytes, IpPacket | None]:
    """(sport, dport, type, code, payload, quoted packet) of an ICMP or
    ICMPv6 header (at least 4 bytes): an echo's id stands for the source
    port; an error's quote (not inside another quote) is parsed."""
    icmp_type, icmp_code = l4[0], l4[1]
    sport = dport = None
    inner: IpPacket | None = None
    if icmp_type in echo and len(l4) >= 8:
        sport, dport = struct.unpack("!H", l4[4:6])[0], 0
    elif icmp_type in errors and not quoted:
        inner = _ip_packet(l4[8:], quoted=True)
    return sport, dport, icmp_type, icmp_code, l4[8:], inner


def _digest(data: bytes) -> str:
    return hashlib.blake2s(data, digest_size=6).hexdigest()


def _quoted_digest(inner: IpPacket, quoted: bytes) -> str:
    """An ICMP error's quote is rewritten when conntrack undoes NAT on the
    way back (addresses, ports, checksums), so hash what NAT leaves alone:
    the quoted packet's IP id, protocol, TCP sequence and L4 payload."""
    return _digest(
        f"{inner.ip_id}/{inner.proto}/{inner.tcp_seq}/{inner.payload_digest}/{len(quoted)}".encode()
    )
