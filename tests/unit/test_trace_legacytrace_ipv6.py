"""Legacy iptables rule traces of IPv6 packets: ip6tables' TRACE messages
(through the AF_INET6 logger) as tshark decodes them, numbered against
ip6tables-legacy-save.

Samples under data/trace/, all real (iptables 1.8.9 legacy, kernel 6.18),
from a legacy copy of controlplane/dualstack:

- legacy-nflog-ipv6-node-{1,2}.txt with legacy-save-ipv6-node-{1,2}.txt:
  `netemu trace client [fd00:56::11]:30080`: fd00:56::20 →
  fd00:56::11:30080, DNATed on node-1 to [fd00:10:244:1::2]:8080 on
  node-2, masqueraded to fd00:10:244:: (an HTTP GET and the close).
- legacy-nflog-ipv6-reject.txt with legacy-save-ipv6-reject.txt: node-2
  of the web pod there → the IPv6 clusterIP of `empty` (no endpoints):
  filter KUBE-SERVICES' REJECT, and the ICMPv6 error node-2 sends back.
- legacy-nflog-ipv6-icmp.txt with legacy-save-ipv6-icmp.txt: node-1 of an
  ICMPv6 echo from the web pod on node-2 to the one on node-1 and its reply.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netemu.trace.legacytrace import parse_legacy_trace
from netemu.trace.nftrace import RuleVerdict, TracedPacket

DATA = Path(__file__).parent / "data" / "trace"
NODE1_INTERFACES = {
    1: "lo",
    2: "eth0",
    3: "cni0",
    4: "flannel.1",
    5: "flannel-v6.1",
    6: "veth60ced682",
    7: "veth895b7da4",
}
NODE2_INTERFACES = {
    1: "lo",
    2: "eth0",
    3: "cni0",
    4: "flannel.1",
    5: "flannel-v6.1",
    6: "vethcbee1861",
}
CLIENT, NODE1 = "fd00:56::20", "fd00:56::11"
ENDPOINT, MASQUERADED = "fd00:10:244:1::2", "fd00:10:244::"
SYN_FLOW_LABEL = 0x231B0  # the client's connection, as sent


def _load(name: str, interfaces: dict[int, str] | None = None) -> list[TracedPacket]:
    text = (DATA / f"legacy-nflog-ipv6-{name}.txt").read_text()
    save = (DATA / f"legacy-save-ipv6-{name}.txt").read_text()
    return parse_legacy_trace(text, save, interfaces)


@pytest.fixture(scope="module")
def node1() -> list[TracedPacket]:
    return _load("node-1", NODE1_INTERFACES)


@pytest.fixture(scope="module")
def node2() -> list[TracedPacket]:
    return _load("node-2", NODE2_INTERFACES)


def _syn(packets: list[TracedPacket]) -> list[TracedPacket]:
    return [p for p in packets if p.tcp_flags == ("SYN",)]


def _rules(passes: list[TracedPacket]) -> list[RuleVerdict]:
    return [v for p in passes for v in p.verdicts if v.kind == "rule" and v.table != "raw"]


# -- the NodePort flow on node-1: DNAT and masquerade -----------------------------------


def test_syn_passes_follow_the_hooks_table_by_table(node1: list[TracedPacket]) -> None:
    syn = _syn(node1)
    assert [(p.table, p.hook) for p in syn] == [
        ("raw", "PREROUTING"),
        ("mangle", "PREROUTING"),
        ("nat", "PREROUTING"),
        ("mangle", "FORWARD"),
        ("filter", "FORWARD"),
        ("mangle", "POSTROUTING"),
        ("nat", "POSTROUTING"),
    ]
    before, after = syn[2], syn[4]
    assert (before.dst, before.dport, before.out_iface) == (NODE1, 30080, None)
    assert (after.dst, after.dport, after.out_iface) == (ENDPOINT, 8080, "flannel-v6.1")


def test_ipv6_header_fields_are_named_as_for_ipv4(node1: list[TracedPacket]) -> None:
    syn = _syn(node1)[0]
    # LEN: the payload length, TTL: the hop limit, ID: the flow label (as
    # netemu.trace.packets and nft's `ip6 length` / `ip6 flowlabel` give them).
    assert syn.fields == {
        "IN": "eth0",
        "SRC": CLIENT,
        "DST": NODE1,
        "LEN": "40",
        "TTL": "64",
        "ID": str(SYN_FLOW_LABEL),
        "PROTO": "TCP",
        "SPORT": "53133",
        "DPORT": "30080",
    }
    assert syn.flags == ("SYN",)  # no DF/MF words: IPv6 has no such header flags
    assert (syn.proto, syn.ip_id, syn.length, syn.ttl) == ("tcp", SYN_FLOW_LABEL, 40, 64)
    # Forwarded: the hop limit one lower in FORWARD.
    assert _syn(node1)[3].ttl == 63


def test_trace_id_is_the_flow_label_with_sequence_and_acknowledgement(
    node1: list[TracedPacket], node2: list[TracedPacket]
) -> None:
    syn = _syn(node1)
    assert {p.trace_id for p in syn} == {"231b0-daf30e96-00000000"}
    # NAT changes neither: the masqueraded SYN on node-2 has the same id.
    (masqueraded,) = {p.trace_id for p in _syn(node2)}
    assert masqueraded == syn[0].trace_id
    assert _syn(node2)[0].src == MASQUERADED
    # The reply has the endpoint's own flow label.
    (syn_ack,) = {p.trace_id for p in node1 if p.tcp_flags == ("SYN", "ACK")}
    assert syn_ack == "50846-565602e7-daf30e97"


def test_rules_are_numbered_against_ip6tables_save(node1: list[TracedPacket]) -> None:
    rules = _rules(_syn(node1))
    assert [(v.table, v.chain, v.verdict, v.target_chain) for v in rules] == [
        ("nat", "PREROUTING", "JUMP", "KUBE-SERVICES"),
        ("nat", "KUBE-SERVICES", "JUMP", "KUBE-NODEPORTS"),
        ("nat", "KUBE-NODEPORTS", "JUMP", "KUBE-EXT-IWCJJAMV7TQADP7P"),
        ("nat", "KUBE-EXT-IWCJJAMV7TQADP7P", "JUMP", "KUBE-MARK-MASQ"),
        ("nat", "KUBE-MARK-MASQ", "MARK", None),
        ("nat", "KUBE-EXT-IWCJJAMV7TQADP7P", "JUMP", "KUBE-SVC-IWCJJAMV7TQADP7P"),
        ("nat", "KUBE-SVC-IWCJJAMV7TQADP7P", "JUMP", "KUBE-SEP-TXTDQLZPRSISE7RL"),
        ("nat", "KUBE-SEP-TXTDQLZPRSISE7RL", "DNAT", None),
        ("filter", "FORWARD", "JUMP", "KUBE-PROXY-FIREWALL"),
        ("filter", "FORWARD", "JUMP", "KUBE-FORWARD"),
        ("filter", "KUBE-FORWARD", "ACCEPT", None),
        ("nat", "POSTROUTING", "JUMP", "KUBE-POSTROUTING"),
        ("nat", "KUBE-POSTROUTING", "MARK", None),
        ("nat", "KUBE-POSTROUTING", "MASQUERADE", None),
    ]
    dnat = rules[7].rule
    assert dnat is not None and dnat.endswith(f"-j DNAT --to-destination [{ENDPOINT}]:8080")
    # ip6tables' own rule text: the IPv6 loopback, not 127.0.0.0/8.
    assert rules[1].rule is not None and "! -d ::1/128" in rules[1].rule


def test_each_packet_of_the_connection_is_a_pass_of_its_own(node1: list[TracedPacket]) -> None:
    """The flow label is shared by a connection's packets one way, and the
    handshake's ACK and the GET after it share their sequence and
    acknowledgement numbers too: length and flags tell them apart, so no
    pass holds two packets' verdicts."""
    forward = [p for p in node1 if p.table == "filter" and p.src == CLIENT]
    assert [(p.tcp_flags, p.length) for p in forward] == [
        (("SYN",), 40),
        (("ACK",), 32),
        (("ACK", "PSH"), 123),
        (("ACK",), 32),
        (("ACK", "FIN"), 32),
        (("ACK",), 32),
    ]
    assert len({p.ip_id for p in forward}) == 1
    ack, get = forward[1], forward[2]
    assert ack.trace_id == get.trace_id
    # An established packet: FORWARD's jump, then KUBE-FORWARD's ESTABLISHED accept.
    for established in forward[1:]:
        assert [(v.chain, v.verdict) for v in established.verdicts] == [
            ("FORWARD", "JUMP"),
            ("KUBE-FORWARD", "ACCEPT"),
        ], established
        assert "RELATED,ESTABLISHED" in (established.verdicts[1].rule or "")


def test_node2_delivers_without_nat(node2: list[TracedPacket]) -> None:
    syn = _syn(node2)
    assert (syn[0].in_iface, syn[0].src, syn[0].sport, syn[0].dst) == (
        "flannel-v6.1",
        MASQUERADED,
        55826,
        ENDPOINT,
    )
    assert [(v.chain, v.verdict) for v in _rules(syn)] == [
        ("PREROUTING", "JUMP"),  # nat: KUBE-SERVICES, no match
        ("FORWARD", "JUMP"),
        ("FORWARD", "JUMP"),
        ("FORWARD", "JUMP"),
        ("FORWARD", "JUMP"),
        ("FORWARD", "JUMP"),
        ("FLANNEL-FWD", "ACCEPT"),
        ("POSTROUTING", "JUMP"),
        ("KUBE-POSTROUTING", "RETURN"),
        ("POSTROUTING", "JUMP"),
        ("FLANNEL-POSTRTG", "RETURN"),
    ]


# -- REJECT and the ICMPv6 error it sends -------------------------------------------------


def test_reject_and_its_icmpv6_error() -> None:
    passes = _load("reject", NODE2_INTERFACES)
    syn = _syn(passes)
    final = syn[-1].final
    assert final is not None and (final.table, final.chain, final.verdict) == (
        "filter",
        "KUBE-SERVICES",
        "REJECT",
    )
    assert "--reject-with icmp6-port-unreachable" in (final.rule or "")
    errors = [p for p in passes if p.proto == "icmp"]
    assert errors and {p.hook for p in errors} == {"OUTPUT", "POSTROUTING"}
    error = errors[0]
    assert (error.src, error.dst, error.out_iface) == ("fd00:10:244:1::1", ENDPOINT, "cni0")
    # The quoted TCP header's ports are the error's payload, not its own.
    assert error.sport is None and error.dport is None
    assert error.trace_id == f"{error.ip_id:05x}" == "de3fb"


# -- an ICMPv6 echo --------------------------------------------------------------------


def test_icmpv6_echo_and_reply() -> None:
    passes = _load("icmp", NODE1_INTERFACES)
    request = [p for p in passes if p.dst == "fd00:10:244::2"]
    reply = [p for p in passes if p.src == "fd00:10:244::2"]
    assert request and reply and len(request) + len(reply) == len(passes)
    assert {(p.proto, p.trace_id, p.length) for p in request} == {("icmp", "d4cff", 20)}
    assert {(p.proto, p.trace_id) for p in reply} == {("icmp", "e3c74")}
    assert all(p.sport is None and p.dport is None for p in passes)
    forward = next(p for p in request if p.table == "filter")
    assert forward.in_iface == "flannel-v6.1" and forward.out_iface == "cni0"
    assert forward.final is not None and forward.final.chain == "FLANNEL-FWD"
    assert forward.final.verdict == "ACCEPT"


def _filter_rows(text: str, seq: int, flags: str) -> list[str]:
    """node-1's filter table rows of the client's packet with TCP sequence
    number `seq` and TCP flags `flags` (hex, as tshark prints them)."""
    header = text.splitlines()[0].split("\t")
    rows = []
    for line in text.splitlines()[1:]:
        row = dict(zip(header, line.split("\t"), strict=False))
        if (
            row["nflog.prefix"].startswith("TRACE: filter:")
            and row["ipv6.src"] == CLIENT
            and row["tcp.seq_raw"] == str(seq)
            and row["tcp.flags"] == flags
        ):
            rows.append(line)
    return rows


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # Same flow label, length and flags: the sequence numbers differ.
        ((0xDAF30E97, "0x0010"), (0xDAF30EF2, "0x0010")),
        # Same flow label, length, sequence and acknowledgement: the flags differ.
        ((0xDAF30EF2, "0x0010"), (0xDAF30EF2, "0x0011")),
    ],
)
def test_interleaved_packets_with_one_flow_label_are_told_apart(
    first: tuple[int, str], second: tuple[int, str]
) -> None:
    """Two of the client's packets' filter messages, interleaved (as packets
    handled at once on two CPUs are): each keeps its own pass."""
    text = (DATA / "legacy-nflog-ipv6-node-1.txt").read_text()
    one, two = _filter_rows(text, *first), _filter_rows(text, *second)
    assert len(one) == len(two) == 2
    mixed = [one[0], two[0], one[1], two[1]]
    save = (DATA / "legacy-save-ipv6-node-1.txt").read_text()
    passes = parse_legacy_trace("\n".join([text.splitlines()[0], *mixed]), save)
    assert len(passes) == 2
    assert {p.ip_id for p in passes} == {SYN_FLOW_LABEL}
    for traced in passes:
        assert [v.chain for v in traced.verdicts] == ["FORWARD", "KUBE-FORWARD"]
