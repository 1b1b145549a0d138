"""Decoding captured frames: IPv4 packets, the VXLAN overlay, ICMP errors,
and the identity that follows one packet through NAT.

Frames are built with Scapy. Two real captures, under data/trace/, were
taken on both sides of the router of xtables-monitor-udp-icmp.txt
(router-client-side.pcap towards 10.99.1.1, router-server-side.pcap towards
10.99.2.2) while it DNATed and masqueraded ping, UDP and TCP.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet
from scapy.utils import rdpcap

from netemu.trace.packets import Decoded, IpPacket, Tunnel, decode, identity

DATA = Path(__file__).parent / "data" / "trace"
MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}


def _eth() -> Ether:
    return Ether(src=MACS["src"], dst=MACS["dst"])


def _decode(packet: Packet, vxlan_port: int | None = 8472) -> Decoded:
    decoded = decode(bytes(packet), vxlan_port)
    assert decoded is not None
    return decoded


def test_tcp_syn() -> None:
    frame = (
        _eth()
        / IP(src="10.244.0.2", dst="10.96.0.1", ttl=64, id=4242, flags="DF")
        / TCP(sport=41522, dport=80, flags="S", seq=1000)
    )
    decoded = _decode(frame)
    assert (decoded.eth_src, decoded.eth_dst, decoded.tunnel) == (MACS["src"], MACS["dst"], None)
    packet = decoded.packet
    assert packet == IpPacket(
        proto="tcp",
        src="10.244.0.2",
        dst="10.96.0.1",
        sport=41522,
        dport=80,
        ttl=64,
        ip_id=4242,
        length=40,
        tcp_flags="S",
        tcp_seq=1000,
        icmp_type=None,
        icmp_code=None,
        quoted=None,
        payload_digest=packet.payload_digest,
    )
    assert len(packet.payload_digest) == 12
    assert packet.summary() == "10.244.0.2:41522 → 10.96.0.1:80 tcp [S] ttl=64"


@pytest.mark.parametrize("flags", ["SA", "A", "PA", "FA", "R", "RA"])
def test_tcp_flags_are_scapys_strings(flags: str) -> None:
    frame = _eth() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(flags=flags)
    assert _decode(frame).packet.tcp_flags == flags


def test_udp() -> None:
    frame = (
        _eth()
        / IP(src="10.244.0.2", dst="10.96.0.10", ttl=64, id=7)
        / UDP(sport=41522, dport=53)
        / b"query"
    )
    packet = _decode(frame).packet
    assert (packet.proto, packet.sport, packet.dport, packet.length) == ("udp", 41522, 53, 33)
    assert (packet.tcp_flags, packet.tcp_seq, packet.icmp_type) == (None, None, None)
    assert packet.summary() == "10.244.0.2:41522 → 10.96.0.10:53 udp ttl=64"


@pytest.mark.parametrize("port", [4789, 8472])
def test_vxlan_frame_is_unwrapped(port: int) -> None:
    inner = (
        Ether(src="0a:00:00:00:00:01", dst="0a:00:00:00:00:02")
        / IP(src="10.244.0.0", dst="10.244.1.2", ttl=63, id=36662)
        / TCP(sport=5065, dport=8080, flags="S", seq=77)
    )
    frame = (
        _eth()
        / IP(src="192.168.56.11", dst="192.168.56.12", ttl=64)
        / UDP(sport=55107, dport=port)
        / VXLAN(vni=1, flags="Instance")
        / inner
    )
    decoded = _decode(frame, vxlan_port=port)
    assert decoded.tunnel == Tunnel(
        kind="vxlan",
        src="192.168.56.11",
        dst="192.168.56.12",
        sport=55107,
        dport=port,
        vni=1,
        ttl=64,
    )
    assert (decoded.eth_src, decoded.eth_dst) == (MACS["src"], MACS["dst"])
    assert decoded.packet.summary() == "10.244.0.0:5065 → 10.244.1.2:8080 tcp [S] ttl=63"
    # The same packet before encapsulation has the same identity.
    assert identity(decoded.packet) == identity(_decode(inner).packet)


@pytest.mark.parametrize("lab_port", [4789, 8472])
def test_a_services_own_datagram_to_the_labs_vxlan_port_is_plain_udp(lab_port: int) -> None:
    """A pod's server on the lab's own tunnel port: the datagram carries no
    VXLAN header, so it is read as itself, not dropped as a broken tunnel."""
    payload = b'{"probe": "netemu"}'
    frame = (
        _eth()
        / IP(src="10.244.0.2", dst="10.96.0.20", ttl=64, id=4)
        / UDP(sport=40000, dport=lab_port)
        / payload
    )
    decoded = _decode(frame, vxlan_port=lab_port)
    assert decoded.tunnel is None
    assert (decoded.packet.dst, decoded.packet.dport) == ("10.96.0.20", lab_port)
    assert decoded.packet.summary() == f"10.244.0.2:40000 → 10.96.0.20:{lab_port} udp ttl=64"


def test_vxlan_port_as_source_only_is_plain_udp() -> None:
    frame = _eth() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=4789, dport=53) / b"x"
    decoded = _decode(frame, vxlan_port=4789)
    assert decoded.tunnel is None and decoded.packet.dport == 53


@pytest.mark.parametrize(("port", "lab_port"), [(4789, 8472), (8472, 4789), (4789, None)])
def test_udp_to_a_vxlan_port_other_than_the_labs_is_plain_udp(
    port: int, lab_port: int | None
) -> None:
    """A Service's datagram to 4789 or 8472 is not a tunnel unless that is
    the lab's own VXLAN port (None: a lab without a VXLAN overlay)."""
    frame = (
        _eth()
        / IP(src="10.244.0.2", dst="10.96.0.20", ttl=64, id=3)
        / UDP(sport=40000, dport=port)
        / VXLAN(vni=1, flags="Instance")
        / Ether()
        / IP(src="10.1.1.1", dst="10.2.2.2")
    )
    decoded = _decode(frame, vxlan_port=lab_port)
    assert decoded.tunnel is None
    assert decoded.packet.endpoints() == f"10.244.0.2:40000 → 10.96.0.20:{port} udp"


def test_icmp_port_unreachable_quotes_the_udp_packet() -> None:
    original = (
        IP(src="10.244.0.2", dst="10.96.0.1", ttl=64, id=99) / UDP(sport=41522, dport=80) / b"hi"
    )
    frame = (
        _eth()
        / IP(src="10.96.0.1", dst="10.244.0.2", ttl=64, id=5)
        / ICMP(type=3, code=3)
        / bytes(original)
    )
    packet = _decode(frame).packet
    assert (packet.proto, packet.icmp_type, packet.icmp_code) == ("icmp", 3, 3)
    assert (packet.sport, packet.dport) == (None, None)
    quoted = packet.quoted
    assert quoted is not None
    assert (quoted.proto, quoted.src, quoted.sport, quoted.dst, quoted.dport) == (
        "udp",
        "10.244.0.2",
        41522,
        "10.96.0.1",
        80,
    )
    assert (quoted.ip_id, quoted.length, quoted.quoted) == (99, 30, None)
    assert packet.summary() == (
        "10.96.0.1 → 10.244.0.2 icmp port-unreachable (10.244.0.2:41522 → 10.96.0.1:80 udp) ttl=64"
    )


def test_icmp_error_quoting_eight_bytes_of_tcp() -> None:
    original = IP(src="10.244.0.2", dst="10.96.0.1", id=3) / TCP(
        sport=1, dport=80, seq=5, flags="S"
    )
    frame = (
        _eth()
        / IP(src="10.0.0.254", dst="10.244.0.2", ttl=255)
        / ICMP(type=11, code=0)
        / bytes(original)[:28]
    )
    packet = _decode(frame).packet
    quoted = packet.quoted
    assert quoted is not None
    assert (quoted.sport, quoted.dport, quoted.tcp_seq, quoted.tcp_flags) == (1, 80, 5, None)
    assert packet.summary() == (
        "10.0.0.254 → 10.244.0.2 icmp ttl-exceeded (10.244.0.2:1 → 10.96.0.1:80 tcp) ttl=255"
    )


def test_icmp_echo_uses_the_id_as_source_port() -> None:
    frame = _eth() / IP(src="10.0.0.1", dst="10.0.0.2", ttl=64) / ICMP(type=8, id=7, seq=1)
    packet = _decode(frame).packet
    assert (packet.sport, packet.dport, packet.icmp_type, packet.icmp_code) == (7, 0, 8, 0)
    assert packet.icmp_name == "echo-request"
    assert packet.summary() == "10.0.0.1 → 10.0.0.2 icmp echo-request id=7 ttl=64"


def test_other_protocols_are_named_by_number() -> None:
    frame = _eth() / IP(src="10.0.0.1", dst="10.0.0.2", proto=47, ttl=9) / (b"\x00" * 8)
    packet = _decode(frame).packet
    assert (packet.proto, packet.sport, packet.icmp_name) == ("47", None, None)
    assert packet.summary() == "10.0.0.1 → 10.0.0.2 47 ttl=9"


def test_later_fragment_has_no_ports() -> None:
    frame = _eth() / IP(src="10.0.0.1", dst="10.0.0.2", proto=17, frag=185) / (b"\x01" * 16)
    packet = _decode(frame).packet
    assert (packet.proto, packet.sport, packet.dport) == ("udp", None, None)


def test_vlan_tag_is_skipped() -> None:
    frame = _eth() / Dot1Q(vlan=10) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(dport=9)
    assert _decode(frame).packet.dport == 9


@pytest.mark.parametrize(
    "frame",
    [
        _eth() / ARP(psrc="10.0.0.1", pdst="10.0.0.2"),
        _eth() / IPv6(src="fe80::1", dst="ff02::1") / UDP(),
        Ether(dst="01:80:c2:00:00:0e", src=MACS["src"], type=0x88CC) / (b"\x02\x07" + b"\x00" * 40),
        _eth()
        / IP(src="192.168.56.11", dst="192.168.56.12")
        / UDP(sport=1, dport=8472)
        / VXLAN(vni=1, flags="Instance")
        / _eth()
        / ARP(),
    ],
    ids=["arp", "ipv6-multicast", "lldp", "arp-in-vxlan"],
)
def test_anything_but_unicast_ip_is_none(frame: Packet) -> None:
    assert decode(bytes(frame), 8472) is None


@pytest.mark.parametrize("frame", [b"", b"\x00" * 13, b"\xff" * 40, bytes(_eth() / IP())[:30]])
def test_garbage_is_none(frame: bytes) -> None:
    assert decode(frame, 4789) is None


def test_ethernet_padding_is_not_payload() -> None:
    frame = bytes(_eth() / IP(src="10.0.0.1", dst="10.0.0.2", id=1) / UDP(dport=53) / b"q")
    padded = frame + b"\x00" * (60 - len(frame))
    assert identity(_decode(Ether(frame)).packet) == identity(_decode(Ether(padded)).packet)


def _nat(packet: Packet, **changes: object) -> Packet:
    """A copy of an IP packet as a NAT hop would forward it (checksums recomputed)."""
    copy = packet.copy()
    for name, value in changes.items():
        layer, field = name.split("_", 1)
        setattr(copy[{"ip": IP, "udp": UDP, "tcp": TCP, "icmp": ICMP}[layer]], field, value)
    copy[IP].chksum = None
    for l4 in (UDP, TCP, ICMP):
        if l4 in copy:
            copy[l4].chksum = None
    return IP(bytes(copy))


def test_identity_survives_dnat_snat_and_routing() -> None:
    sent = IP(src="192.168.56.20", dst="192.168.56.11", id=36662, ttl=64) / TCP(
        sport=41522, dport=30080, flags="S", seq=123456
    )
    forwarded = _nat(
        sent, ip_src="10.244.0.0", ip_dst="10.244.1.2", ip_ttl=63, tcp_sport=5065, tcp_dport=8080
    )
    before, after = (_decode(_eth() / p).packet for p in (sent, forwarded))
    assert (after.dst, after.dport, after.ttl) == ("10.244.1.2", 8080, 63)
    assert identity(before) == identity(after)
    assert identity(before) == (36662, "tcp", 123456, "S", None, before.payload_digest, 40)


def test_identity_tells_packets_apart() -> None:
    base = IP(src="10.0.0.1", dst="10.0.0.2", id=1) / UDP(sport=1, dport=2) / b"one"
    other_payload = IP(src="10.0.0.1", dst="10.0.0.2", id=1) / UDP(sport=1, dport=2) / b"two"
    other_id = IP(src="10.0.0.1", dst="10.0.0.2", id=2) / UDP(sport=1, dport=2) / b"one"
    ids = {identity(_decode(_eth() / p).packet) for p in (base, other_payload, other_id)}
    assert len(ids) == 3


def test_identity_of_icmp_echo_ignores_a_rewritten_id() -> None:
    sent = IP(src="10.0.0.1", dst="10.96.0.1", id=5) / ICMP(type=8, id=6171, seq=1) / b"ping-data"
    forwarded = _nat(sent, ip_src="10.99.2.1", ip_dst="10.99.2.2", icmp_id=1338)
    before, after = (_decode(_eth() / p).packet for p in (sent, forwarded))
    assert (before.sport, after.sport) == (6171, 1338)
    assert identity(before) == identity(after)


def test_identity_of_an_icmp_error_survives_un_nat() -> None:
    # The server's error quotes the translated packet; conntrack restores the
    # quote (addresses, ports, checksum) on the way back to the client.
    quoted_at_server = (
        IP(src="10.99.2.1", dst="10.99.2.2", id=1206) / UDP(sport=49823, dport=5300) / b"hello"
    )
    quoted_at_client = (
        IP(src="10.99.1.1", dst="10.99.1.2", id=1206) / UDP(sport=41478, dport=5302) / b"hello"
    )
    at_server = (
        IP(src="10.99.2.2", dst="10.99.2.1", id=65131, ttl=64)
        / ICMP(type=3, code=3)
        / bytes(quoted_at_server)
    )
    at_client = (
        IP(src="10.99.1.2", dst="10.99.1.1", id=65131, ttl=63)
        / ICMP(type=3, code=3)
        / bytes(quoted_at_client)
    )
    server, client = (_decode(_eth() / p).packet for p in (at_server, at_client))
    assert identity(server) == identity(client)
    other = IP(src="10.99.2.1", dst="10.99.2.2", id=1207) / UDP(sport=49823, dport=5300) / b"hello"
    at_server_other = (
        IP(src="10.99.2.2", dst="10.99.2.1", id=65131) / ICMP(type=3, code=3) / bytes(other)
    )
    assert identity(_decode(_eth() / at_server_other).packet) != identity(server)


# --- real captures on both sides of a NAT router ---------------------------------


@pytest.fixture(scope="module")
def client_side() -> list[Decoded | None]:
    return [decode(bytes(frame), None) for frame in rdpcap(str(DATA / "router-client-side.pcap"))]


@pytest.fixture(scope="module")
def server_side() -> list[Decoded | None]:
    return [decode(bytes(frame), None) for frame in rdpcap(str(DATA / "router-server-side.pcap"))]


def test_capture_skips_arp_and_ipv6_link_chatter(client_side: list[Decoded | None]) -> None:
    # 35 frames: 2 ARP and 7 IPv6 (neighbour discovery, MLD) among them.
    assert len(client_side) == 35
    assert sum(d is None for d in client_side) == 9


def test_every_forwarded_packet_is_recognised_on_the_other_side(
    client_side: list[Decoded | None], server_side: list[Decoded | None]
) -> None:
    client = {identity(d.packet): d.packet for d in client_side if d is not None}
    server = [d.packet for d in server_side if d is not None]
    assert len(server) == 17
    for packet in server:
        twin = client[identity(packet)]
        assert abs(twin.ttl - packet.ttl) == 1  # one routing hop, in either direction


def test_masqueraded_ping_changes_addresses_and_echo_id(
    client_side: list[Decoded | None], server_side: list[Decoded | None]
) -> None:
    [client] = [
        d.packet for d in client_side if d and d.packet.icmp_type == 8 and d.packet.ip_id == 7492
    ]
    [server] = [d.packet for d in server_side if d and d.packet.icmp_type == 8]
    assert client.summary() == "10.99.1.1 → 10.99.1.2 icmp echo-request id=6171 ttl=64"
    assert server.summary() == "10.99.2.1 → 10.99.2.2 icmp echo-request id=1338 ttl=63"
    assert identity(client) == identity(server)


def test_port_unreachable_through_the_nat(
    client_side: list[Decoded | None], server_side: list[Decoded | None]
) -> None:
    [server] = [d.packet for d in server_side if d and d.packet.icmp_type == 3]
    [client] = [d.packet for d in client_side if d and d.packet.ip_id == server.ip_id]
    assert server.summary() == (
        "10.99.2.2 → 10.99.2.1 icmp port-unreachable (10.99.2.1:49823 → 10.99.2.2:5300 udp) ttl=64"
    )
    assert client.summary() == (
        "10.99.1.2 → 10.99.1.1 icmp port-unreachable (10.99.1.1:41478 → 10.99.1.2:5302 udp) ttl=63"
    )
    assert identity(client) == identity(server)


def test_reject_answers_are_new_packets(client_side: list[Decoded | None]) -> None:
    packets = [d.packet for d in client_side if d is not None]
    [unreachable] = [p for p in packets if p.quoted is not None and p.quoted.dport == 9999]
    assert unreachable.src == "10.99.1.2"  # the router, not the server
    [reset] = [p for p in packets if p.tcp_flags == "RA"]
    assert (reset.src, reset.sport, reset.ip_id, reset.length) == ("10.99.2.2", 9997, 0, 40)
