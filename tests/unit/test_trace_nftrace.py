"""Parsing `xtables-monitor --trace` output (iptables 1.8.9, nft backend).

Samples under data/trace/, all real output:

- xtables-monitor-node-{1,2}.txt: a NodePort TCP flow from 192.168.56.20 to
  node-1:30080, DNATed to 10.244.1.2:8080 on node-2 and masqueraded.
- xtables-monitor-udp-icmp.txt: a router namespace (10.99.1.2 towards a
  client 10.99.1.1, 10.99.2.1 towards a server 10.99.2.2) with
  `*raw -A T -j TRACE` on PREROUTING/OUTPUT and, in order: ping to
  10.99.1.2 (nat `-p icmp` DNAT to the server, masqueraded), ping with
  TTL 1 (time exceeded), UDP to 10.99.1.2:5301 (DNAT to 10.99.2.2:9000,
  answered), :5302 (DNAT to a closed port: port unreachable from the
  server), :5300 (nat RETURN, closed locally), UDP to 10.99.2.2:9999
  (filter FORWARD `-j REJECT`) and :9998 (`-j DROP`), TCP to
  10.99.1.2:30080 (DNAT to :8080, full connection) and 10.99.2.2:9997
  (`-j REJECT --reject-with tcp-reset`).
- xtables-monitor-udp-icmp-local.txt: the same kinds of packets delivered
  locally (filter INPUT REJECT/DROP) in a server namespace 10.99.0.2.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netemu.trace.nftrace import RuleVerdict, TracedPacket, parse_trace, parse_verdict

DATA = Path(__file__).parent / "data" / "trace"


def _load(name: str) -> list[TracedPacket]:
    return parse_trace((DATA / f"xtables-monitor-{name}.txt").read_text())


@pytest.fixture(scope="module")
def node1() -> list[TracedPacket]:
    return _load("node-1")


@pytest.fixture(scope="module")
def node2() -> list[TracedPacket]:
    return _load("node-2")


@pytest.fixture(scope="module")
def router() -> list[TracedPacket]:
    return _load("udp-icmp")


@pytest.fixture(scope="module")
def local() -> list[TracedPacket]:
    return _load("udp-icmp-local")


def _passes(packets: list[TracedPacket], ip_id: int) -> list[TracedPacket]:
    return [p for p in packets if p.ip_id == ip_id]


# --- node-1: the NodePort SYN -------------------------------------------------


def test_every_packet_line_starts_a_pass(node1: list[TracedPacket]) -> None:
    text = (DATA / "xtables-monitor-node-1.txt").read_text()
    assert len(node1) == text.count("PACKET:") == 22
    traces = [line for line in text.splitlines() if line.startswith(" TRACE:")]
    assert sum(len(p.verdicts) for p in node1) == len(traces) == 52


def test_syn_passes_follow_the_hooks_and_show_the_dnat(node1: list[TracedPacket]) -> None:
    syn = _passes(node1, 36662)
    assert [(p.table, p.hook) for p in syn] == [
        ("raw", "PREROUTING"),
        ("nat", "PREROUTING"),
        ("filter", "FORWARD"),
        ("nat", "POSTROUTING"),
    ]
    assert {p.trace_id for p in syn} == {"750ec18a"}
    before, after = syn[1], syn[2]
    assert (before.dst, before.dport, before.out_iface) == ("192.168.56.11", 30080, None)
    assert (after.dst, after.dport, after.out_iface) == ("10.244.1.2", 8080, "flannel.1")
    assert (before.ttl, after.ttl) == (64, 63)
    assert (before.mark, after.mark) == (0, 0x4000)
    assert after.fields["MARK"] == "0x4000"


def test_syn_nat_pass_ends_in_the_endpoint_dnat(node1: list[TracedPacket]) -> None:
    nat = _passes(node1, 36662)[1]
    assert [(v.chain, v.verdict, v.target_chain) for v in nat.verdicts] == [
        ("PREROUTING", "JUMP", "KUBE-SERVICES"),
        ("KUBE-SERVICES", "JUMP", "KUBE-NODEPORTS"),
        ("KUBE-NODEPORTS", "JUMP", "KUBE-EXT-IWCJJAMV7TQADP7P"),
        ("KUBE-EXT-IWCJJAMV7TQADP7P", "JUMP", "KUBE-MARK-MASQ"),
        ("KUBE-MARK-MASQ", "CONTINUE", None),
        ("KUBE-EXT-IWCJJAMV7TQADP7P", "JUMP", "KUBE-SVC-IWCJJAMV7TQADP7P"),
        ("KUBE-SVC-IWCJJAMV7TQADP7P", "JUMP", "KUBE-SEP-BEHOY62UEVSN5IZ5"),
        ("KUBE-SEP-BEHOY62UEVSN5IZ5", "ACCEPT", None),
    ]
    assert nat.final == RuleVerdict(
        table="nat",
        chain="KUBE-SEP-BEHOY62UEVSN5IZ5",
        kind="rule",
        handle=0x41,
        verdict="ACCEPT",
        target_chain=None,
        rule='-A KUBE-SEP-BEHOY62UEVSN5IZ5 -p tcp -m comment --comment "default/web-nodeport:http"'
        " -m tcp -j DNAT --to-destination 10.244.1.2:8080",
    )
    assert nat.final.target == "DNAT"
    assert nat.final.is_terminal
    assert nat.verdicts[4].target == "MARK"
    assert not nat.verdicts[4].is_terminal


def test_syn_is_masqueraded_in_postrouting(node1: list[TracedPacket]) -> None:
    post = _passes(node1, 36662)[3]
    final = post.final
    assert final is not None
    assert (final.chain, final.verdict, final.target) == (
        "KUBE-POSTROUTING",
        "ACCEPT",
        "MASQUERADE",
    )
    assert final.rule is not None and final.rule.endswith("-j MASQUERADE --random-fully")


def test_packet_fields_and_flags(node1: list[TracedPacket]) -> None:
    syn = node1[0]
    assert syn.trace_id == "750ec18a"
    assert syn.fields == {
        "IN": "eth0",
        "MACSRC": "b2:8c:92:8d:5c:95",
        "MACDST": "4e:a7:5d:cd:d0:54",
        "MACPROTO": "0800",
        "SRC": "192.168.56.20",
        "DST": "192.168.56.11",
        "LEN": "60",
        "TOS": "0x0",
        "TTL": "64",
        "ID": "36662",
        "SPORT": "41522",
        "DPORT": "30080",
    }
    assert syn.flags == ("DF", "SYN")
    assert syn.tcp_flags == ("SYN",)
    assert (syn.src, syn.sport, syn.dst, syn.dport) == (
        "192.168.56.20",
        41522,
        "192.168.56.11",
        30080,
    )
    assert (syn.proto, syn.ttl, syn.ip_id, syn.length) == ("tcp", 64, 36662, 60)
    assert (syn.in_iface, syn.out_iface) == ("eth0", None)
    assert _passes(node1, 36664)[0].tcp_flags == ("ACK", "PSH")
    assert _passes(node1, 36666)[0].tcp_flags == ("ACK", "FIN")


def test_policy_verdicts_have_no_rule(node1: list[TracedPacket]) -> None:
    policy = node1[0].verdicts[-1]
    assert policy == RuleVerdict("raw", "PREROUTING", "policy", None, "ACCEPT", None, None)
    assert policy.target is None


def test_trace_ids_are_reused_by_later_packets(node1: list[TracedPacket]) -> None:
    # 750ec18a traces the SYN (ID 36662) and later the request (ID 36664):
    # separate passes, kept apart by their PACKET lines.
    reused = [p for p in node1 if p.trace_id == "750ec18a"]
    assert [p.ip_id for p in reused] == [36662] * 4 + [36664] * 2


def test_the_tracing_pass_reports_its_hook_not_the_trace_chain(node1: list[TracedPacket]) -> None:
    # The jump into NETEMU-TRACE happens before tracing is on, so the first
    # verdict is in NETEMU-TRACE; the policy names the base chain.
    raw = node1[0]
    assert raw.verdicts[0].chain == "NETEMU-TRACE"
    assert raw.hook == "PREROUTING"
    assert raw.verdicts[0].rule == "-A NETEMU-TRACE -s 192.168.56.20/32 -p tcp -j TRACE"


# --- node-2: numeric verdicts -----------------------------------------------------


def test_numeric_return_verdict_is_named(node2: list[TracedPacket]) -> None:
    post = next(p for p in node2 if p.table == "nat" and p.hook == "POSTROUTING")
    assert [(v.chain, v.kind, v.verdict) for v in post.verdicts] == [
        ("POSTROUTING", "rule", "JUMP"),
        ("KUBE-POSTROUTING", "rule", "RETURN"),
        ("POSTROUTING", "policy", "ACCEPT"),
    ]
    ret = post.verdicts[1]
    assert ret.handle == 0x1C
    assert ret.target_chain is None
    assert ret.rule == "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN"
    assert ret.target == "RETURN"


def test_node2_syn_reaches_the_pod_unchanged_by_nat(node2: list[TracedPacket]) -> None:
    syn = _passes(node2, 36662)
    assert [(p.table, p.hook) for p in syn] == [
        ("raw", "PREROUTING"),
        ("nat", "PREROUTING"),
        ("filter", "FORWARD"),
        ("nat", "POSTROUTING"),
    ]
    assert all(
        (p.src, p.sport, p.dst, p.dport) == ("10.244.0.0", 5065, "10.244.1.2", 8080) for p in syn
    )
    assert syn[-1].out_iface == "cni0"
    # ether_ntoa drops leading zeros: the MAC is printed as is.
    from_pod = next(p for p in node2 if p.in_iface == "cni0")
    assert from_pod.fields["MACDST"] == "a:1d:24:b6:f4:a8"


# --- router: UDP, ICMP, REJECT and DROP -------------------------------------------


def test_icmp_echo_has_no_l4_fields(router: list[TracedPacket]) -> None:
    echo = router[0]
    assert (echo.src, echo.dst, echo.length, echo.ip_id) == ("10.99.1.1", "10.99.1.2", 84, 7492)
    assert echo.flags == ("DF",)
    assert (echo.sport, echo.dport) == (None, None)
    assert not {"SPORT", "DPORT", "TYPE", "CODE"} & set(echo.fields)
    nat = router[1]
    assert nat.final is not None
    assert nat.final.rule == "-A SEP -p icmp -j DNAT --to-destination 10.99.2.2"
    assert router[2].dst == "10.99.2.2"


def test_icmp_is_known_from_a_matched_rule_in_any_pass_of_the_packet(
    router: list[TracedPacket], local: list[TracedPacket]
) -> None:
    # xtables-monitor never prints the protocol. The nat pass matched
    # "-p icmp"; the packet's raw, filter and nat POSTROUTING passes (same
    # trace id, IP id and length) learn it from there.
    echo = _passes(router, 7492)
    assert [p.hook for p in echo] == ["PREROUTING", "PREROUTING", "FORWARD", "POSTROUTING"]
    assert [p.proto for p in echo] == ["icmp"] * 4
    assert [p.fields.get("PROTO") for p in echo] == ["icmp", None, "icmp", "icmp"]
    # Without such a rule anywhere, ICMP is not told apart from other protocols.
    assert {p.proto for p in _passes(local, 6576)} == {""}
    # The echo reply matched no -p rule at all.
    reply = next(p for p in router if p.src == "10.99.2.2" and p.sport is None)
    assert reply.proto == ""


def test_udp_has_ports_and_no_flags(router: list[TracedPacket]) -> None:
    udp = _passes(router, 15864)
    assert [(p.table, p.hook) for p in udp] == [
        ("raw", "PREROUTING"),
        ("nat", "PREROUTING"),
        ("filter", "FORWARD"),
        ("nat", "POSTROUTING"),
    ]
    assert all(p.proto == "udp" and p.tcp_flags == () for p in udp)
    assert (udp[0].dst, udp[0].dport) == ("10.99.1.2", 5301)
    assert (udp[2].dst, udp[2].dport, udp[2].mark) == ("10.99.2.2", 9000, 0x4000)
    assert udp[1].final is not None and udp[1].final.target == "DNAT"
    assert udp[3].final is not None and udp[3].final.target == "MASQUERADE"


def test_reject_is_reported_as_drop(router: list[TracedPacket]) -> None:
    forward = next(p for p in router if p.dport == 9999 and p.hook == "FORWARD")
    assert forward.final == RuleVerdict(
        "filter",
        "SVCFW",
        "rule",
        5,
        "DROP",
        None,
        "-A SVCFW -p udp -m udp --dport 9999 -j REJECT --reject-with icmp-port-unreachable",
    )
    assert forward.final.target == "REJECT"


def test_reject_verdict_joins_its_pass_across_the_icmp_error(router: list[TracedPacket]) -> None:
    # The REJECT target sends its ICMP error (traced in raw OUTPUT) before
    # the kernel reports the REJECT rule's verdict; that TRACE line follows
    # the error's PACKET line and belongs to the rejected packet's pass.
    forward = next(p for p in router if p.dport == 9999 and p.hook == "FORWARD")
    error = router[router.index(forward) + 1]
    assert (error.table, error.hook, error.src, error.dst) == (
        "raw",
        "OUTPUT",
        "10.99.1.2",
        "10.99.1.1",
    )
    assert (error.length, error.fields["TOS"], error.in_iface) == (66, "0xc0", None)
    assert [v.verdict for v in error.verdicts] == ["CONTINUE", "ACCEPT"]
    assert [v.verdict for v in forward.verdicts] == ["JUMP", "DROP"]


def test_drop(router: list[TracedPacket]) -> None:
    forward = next(p for p in router if p.dport == 9998 and p.hook == "FORWARD")
    assert forward.final is not None
    assert (forward.final.verdict, forward.final.target) == ("DROP", "DROP")
    # Nothing after the drop: no POSTROUTING pass for this packet.
    assert [p.hook for p in _passes(router, forward.ip_id or 0)] == ["PREROUTING"] * 2 + ["FORWARD"]


def test_tcp_reset_from_reject(router: list[TracedPacket]) -> None:
    syn = next(p for p in router if p.dport == 9997 and p.hook == "FORWARD")
    assert syn.final is not None
    assert syn.final.verdict == "DROP"
    assert syn.final.rule is not None and syn.final.rule.endswith("--reject-with tcp-reset")
    # The RST leaves through OUTPUT with the server's address as its source.
    rst = [p for p in router if p.tcp_flags == ("ACK", "RST")]
    assert [(p.table, p.hook) for p in rst] == [("raw", "OUTPUT"), ("nat", "POSTROUTING")]
    assert (rst[0].src, rst[0].sport, rst[0].dst, rst[0].dport) == (
        "10.99.2.2",
        9997,
        "10.99.1.1",
        syn.sport,
    )
    assert rst[1].verdicts[0].verdict == "RETURN"


def test_nat_return_keeps_the_destination(router: list[TracedPacket]) -> None:
    nat = next(p for p in router if p.dport == 5300 and p.hook == "PREROUTING" and p.table == "nat")
    assert nat.dst == "10.99.1.2"
    assert [(v.chain, v.verdict) for v in nat.verdicts] == [
        ("PREROUTING", "JUMP"),
        ("SVC", "RETURN"),
        ("PREROUTING", "ACCEPT"),
    ]


def test_ttl_exceeded_is_generated_locally(router: list[TracedPacket]) -> None:
    expiring = _passes(router, 6200)
    assert [p.ttl for p in expiring] == [1, 1]
    error = router[router.index(expiring[-1]) + 1]
    assert (error.hook, error.src, error.dst, error.length) == (
        "OUTPUT",
        "10.99.1.2",
        "10.99.1.1",
        112,
    )


# --- local delivery -------------------------------------------------------------


def test_local_reject_in_input(local: list[TracedPacket]) -> None:
    rejected = _passes(local, 48358)
    assert [(p.table, p.hook) for p in rejected] == [
        ("raw", "PREROUTING"),
        ("nat", "PREROUTING"),
        ("filter", "INPUT"),
    ]
    final = rejected[-1].final
    assert final is not None
    assert (final.verdict, final.target, final.handle) == ("DROP", "REJECT", 3)
    dropped = _passes(local, 10752)[-1].final
    assert dropped is not None
    assert (dropped.chain, dropped.verdict, dropped.target) == ("INPUT", "DROP", "DROP")


def test_locally_generated_packets_have_no_input_interface(local: list[TracedPacket]) -> None:
    reply = next(p for p in local if p.hook == "OUTPUT" and p.sport == 9000)
    assert (reply.in_iface, reply.out_iface is not None, "MACSRC" in reply.fields) == (
        None,
        True,
        False,
    )


# --- robustness -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("printed", "expected"),
    [
        ("ACCEPT", ("ACCEPT", None)),
        ("DROP", ("DROP", None)),
        ("CONTINUE", ("CONTINUE", None)),
        ("JUMP:KUBE-SERVICES", ("JUMP", "KUBE-SERVICES")),
        ("GOTO:KUBE-SEP-X", ("GOTO", "KUBE-SEP-X")),
        ("0xfffffffb", ("RETURN", None)),
        ("0xfffffffc", ("GOTO", None)),
        ("0xfffffffd", ("JUMP", None)),
        ("0xfffffffe", ("BREAK", None)),
        ("0xffffffff", ("CONTINUE", None)),
        ("0x0", ("DROP", None)),
        ("0x1", ("ACCEPT", None)),
        ("0x20003", ("QUEUE", None)),
        ("0xfffffff0", ("0xfffffff0", None)),
        ("0xzz", ("0xzz", None)),
    ],
)
def test_parse_verdict(printed: str, expected: tuple[str, str | None]) -> None:
    assert parse_verdict(printed) == expected


def test_blank_and_unknown_lines_are_skipped() -> None:
    text = (
        "\n"
        "garbage\n"
        "NEWGEN: GENID=12 PID=3 NAME=iptables-nft-restore\n"
        "PACKET: 2 00000001 IN=eth0 SRC=10.0.0.1 DST=10.0.0.2 LEN=28 TOS=0x0 TTL=64 ID=7 \n"
        "   \n"
        " TRACE: 2 00000001 nat:PREROUTING:policy:ACCEPT \n"
        " TRACE: 2 00000001 not-a-trace\n"
        " TRACE: 2 00000001 nat:PREROUTING:rule:zz:ACCEPT \n"
        "PACKET: truncated\n"
    )
    [packet] = parse_trace(text)
    assert packet.fields["SRC"] == "10.0.0.1"
    assert packet.verdicts == (
        RuleVerdict("nat", "PREROUTING", "policy", None, "ACCEPT", None, None),
    )
    assert parse_trace("") == []


def test_trace_without_packet_line_starts_a_headerless_pass() -> None:
    text = (
        "PACKET: 2 00000001 SRC=10.0.0.1 DST=10.0.0.2 LEN=28 TOS=0x0 TTL=64 ID=7 \n"
        " TRACE: 2 00000002 filter:KUBE-X:rule:0x9:GOTO:KUBE-Y  -4 -t filter -A KUBE-X -g KUBE-Y\n"
        " TRACE: 2 00000001 filter:INPUT:policy:DROP \n"
        " TRACE: 2 00000002 filter:KUBE-Y:return: \n"
    )
    first, orphan = parse_trace(text)
    assert [v.verdict for v in first.verdicts] == ["DROP"]
    assert orphan.fields == {} and orphan.src == "" and orphan.mark is None
    assert [(v.kind, v.verdict, v.target_chain) for v in orphan.verdicts] == [
        ("rule", "GOTO", "KUBE-Y"),
        ("return", "RETURN", None),
    ]
    assert orphan.verdicts[0].target == "KUBE-Y"
    assert orphan.verdicts[0].rule == "-A KUBE-X -g KUBE-Y"


def test_older_formats_and_extra_header_words() -> None:
    # Releases before 1.8.9 printed no space after the IP id ("ID=5DF",
    # "ID=6SPORT=.."); FRAG:, MF, "OPT (hex)" and NFPROTO= can appear.
    text = (
        "PACKET: 1 0000abcd NFPROTO=2 SRC=10.0.0.1 DST=10.0.0.2 LEN=1500 TOS=0x0 TTL=9 ID=5DF "
        "MF FRAG:185 OPT (01010101)MARK=0x1 \n"
        " TRACE: 1 0000abcd filter:FORWARD:rule:0x3:ACCEPT"
        "  -4 -t filter -A FORWARD -p 17 -j ACCEPT\n"
        "PACKET: 2 0000abce SRC=10.0.0.1 DST=10.0.0.2 LEN=40 TOS=0x0 TTL=9"
        " ID=6SPORT=1 DPORT=2 RST \n"
    )
    fragment, reset = parse_trace(text)
    assert fragment.ip_id == 5
    assert fragment.flags == ("DF", "MF")
    assert (fragment.fields["FRAG"], fragment.fields["OPT"], fragment.mark) == (
        "185",
        "01010101",
        1,
    )
    assert fragment.fields["NFPROTO"] == "2"
    assert fragment.proto == "udp"  # from the matched "-p 17"
    assert fragment.verdicts[0].rule == "-A FORWARD -p 17 -j ACCEPT"
    assert (reset.ip_id, reset.sport, reset.dport, reset.proto) == (6, 1, 2, "tcp")


def test_negated_protocol_match_is_not_evidence() -> None:
    text = (
        "PACKET: 2 00000001 SRC=10.0.0.1 DST=10.0.0.2 LEN=28 TOS=0x0 TTL=64 ID=7 \n"
        " TRACE: 2 00000001 filter:INPUT:rule:0x2:ACCEPT"
        "  -4 -t filter -A INPUT ! -p tcp -j ACCEPT\n"
    )
    assert parse_trace(text)[0].proto == ""


def test_protocol_is_not_shared_between_packets_reusing_a_trace_id() -> None:
    text = (
        "PACKET: 2 00000001 SRC=10.0.0.1 DST=10.0.0.2 LEN=84 TOS=0x0 TTL=64 ID=7 \n"
        " TRACE: 2 00000001 raw:T:rule:0x2:CONTINUE  -4 -t raw -A T -p icmp -j TRACE\n"
        "PACKET: 2 00000001 SRC=10.0.0.1 DST=10.0.0.2 LEN=84 TOS=0x0 TTL=64 ID=7 \n"
        " TRACE: 2 00000001 filter:INPUT:policy:ACCEPT \n"
        "PACKET: 2 00000001 SRC=10.0.0.1 DST=10.0.0.2 LEN=84 TOS=0x0 TTL=64 ID=8 \n"
        " TRACE: 2 00000001 filter:INPUT:policy:ACCEPT \n"
    )
    assert [p.proto for p in parse_trace(text)] == ["icmp", "icmp", ""]


def test_ipv6_packet_lines_and_the_rules_xtables_monitor_cannot_print() -> None:
    # xtables-monitor-ipv6.txt: real output of xtables-monitor 1.8.9 --trace -6
    # on a dual-stack node (iptables mode), a pod's SYN to an IPv6 ClusterIP
    # traced by `ip6tables -t raw -A PREROUTING -s ... -j TRACE`. Its IPv6
    # PACKET lines carry HOPLIMIT and FLOWLBL; at kube-proxy's first rule with
    # a protocol match it prints "unsupported layer 4 protocol value", a
    # truncated rule, and exits: why IPv6 flows are traced with `nft monitor
    # trace` (netemu.trace.live).
    passes = _load("ipv6")
    assert len(passes) == 2
    syn = passes[0]
    assert (syn.src, syn.dst, syn.sport, syn.dport, syn.tcp_flags) == (
        "fd00:10:244::3",
        "fd00:10:96::db48",
        40125,
        80,
        ("SYN",),
    )
    assert (syn.ttl, syn.ip_id) == (64, 713300)  # hop limit, flow label
    nat = passes[1]
    assert [v.chain for v in nat.verdicts] == ["PREROUTING", "KUBE-SERVICES"]
    assert nat.verdicts[-1].rule == "-6 -t nat"  # all xtables-monitor printed of it
