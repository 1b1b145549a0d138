"""decode on IPv6 frames: TCP, UDP and ICMPv6 over IPv6, flannel-v6.1's
VXLAN over the IPv6 underlay, ICMPv6 errors quoting the packet, and
IPv6's own link chatter (neighbour discovery, MLD, multicast) left out.
Frames are built with Scapy as the kernel sends them."""

from __future__ import annotations

from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    IPv6,
)
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from netemu.trace.packets import decode, identity

POD = "fd00:10:244::2"
CLUSTER_IP = "fd00:10:96::db48"
ENDPOINT = "fd00:10:244:1::2"


def _eth() -> Ether:
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def test_tcp_syn_over_ipv6() -> None:
    frame = (
        _eth()
        / IPv6(src=POD, dst=CLUSTER_IP, hlim=64, fl=963560)
        / TCP(sport=40123, dport=80, flags="S", seq=7)
    )
    decoded = decode(bytes(frame), 8472)
    assert decoded is not None
    p = decoded.packet
    assert (p.version, p.proto, p.src, p.dst, p.sport, p.dport) == (
        6,
        "tcp",
        POD,
        CLUSTER_IP,
        40123,
        80,
    )
    assert (p.ttl, p.ip_id, p.tcp_flags, p.tcp_seq, p.length) == (64, 963560, "S", 7, 20)
    assert p.summary() == f"[{POD}]:40123 → [{CLUSTER_IP}]:80 tcp [S] ttl=64"


def test_vxlan_over_the_ipv6_underlay_is_unwrapped() -> None:
    inner = _eth() / IPv6(src=POD, dst=ENDPOINT, hlim=63) / UDP(sport=5000, dport=53) / b"q"
    frame = (
        _eth()
        / IPv6(src="fd00:56::11", dst="fd00:56::12")
        / UDP(sport=37769, dport=8472)
        / VXLAN(vni=1, flags="Instance")
        / inner
    )
    decoded = decode(bytes(frame), 8472)
    assert decoded is not None and decoded.tunnel is not None
    assert (decoded.tunnel.src, decoded.tunnel.dst, decoded.tunnel.vni) == (
        "fd00:56::11",
        "fd00:56::12",
        1,
    )
    assert (decoded.packet.src, decoded.packet.dst, decoded.packet.dport) == (POD, ENDPOINT, 53)


def test_icmpv6_echo_uses_the_id_as_source_port() -> None:
    frame = _eth() / IPv6(src=POD, dst=CLUSTER_IP) / ICMPv6EchoRequest(id=28686, seq=1)
    decoded = decode(bytes(frame), None)
    assert decoded is not None
    p = decoded.packet
    assert (p.proto, p.sport, p.dport, p.icmp_type, p.icmp_name) == (
        "icmp",
        28686,
        0,
        128,
        "echo-request",
    )


def test_icmpv6_port_unreachable_quotes_the_packet() -> None:
    quoted = IPv6(src=POD, dst=CLUSTER_IP) / UDP(sport=41000, dport=53)
    frame = _eth() / IPv6(src="fd00:10:244::1", dst=POD) / ICMPv6DestUnreach(code=4) / quoted
    decoded = decode(bytes(frame), None)
    assert decoded is not None
    p = decoded.packet
    assert (p.icmp_type, p.icmp_code, p.icmp_name) == (1, 4, "port-unreachable")
    assert p.quoted is not None
    assert (p.quoted.src, p.quoted.dst, p.quoted.sport, p.quoted.dport) == (
        POD,
        CLUSTER_IP,
        41000,
        53,
    )


def test_identity_survives_dnat_and_routing() -> None:
    def syn(dst: str, dport: int, hlim: int) -> bytes:
        return bytes(
            _eth() / IPv6(src=POD, dst=dst, hlim=hlim, fl=5) / TCP(dport=dport, flags="S", seq=9)
        )

    sent, delivered = decode(syn(CLUSTER_IP, 80, 64), None), decode(syn(ENDPOINT, 8080, 63), None)
    assert sent is not None and delivered is not None
    assert identity(sent.packet) == identity(delivered.packet)


def test_neighbour_discovery_and_multicast_are_left_out() -> None:
    solicitation = _eth() / IPv6(src="fe80::1", dst=POD) / ICMPv6ND_NS(tgt=POD)
    multicast = _eth() / IPv6(src=POD, dst="ff02::1") / UDP(dport=5353)
    assert decode(bytes(solicitation), None) is None
    assert decode(bytes(multicast), None) is None
