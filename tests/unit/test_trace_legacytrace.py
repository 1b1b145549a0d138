"""Legacy iptables rule traces: the TRACE target's NFLOG messages as tshark
decodes them (netemu.kernel.nflog), numbered against iptables-legacy-save.

Samples under data/trace/, all real (iptables 1.8.9 legacy, kernel 6.18):

- legacy-nflog-node-{1,2}.txt with legacy-save-node-{1,2}.txt: `netemu
  trace client node-1:30080` in a legacy copy of controlplane/default (the
  same flow as xtables-monitor-node-{1,2}.txt on nft): 192.168.56.20 →
  192.168.56.11:30080, DNATed to 10.244.1.2:8080 on node-2, masqueraded;
  the saves hold the trace's NETEMU-TRACE chain.
- legacy-nflog-router.txt with legacy-save-router.txt: a router namespace
  (rc 10.99.1.2 towards a client 10.99.1.1, rs 10.99.2.1 towards a server
  10.99.2.2) with `*raw -A T -j TRACE` on PREROUTING/OUTPUT and, in order:
  ping to 10.99.1.2 (nat `-g SEP`, `-p icmp` DNAT to the server,
  masqueraded), UDP to 10.99.1.2:5301 (DNAT to 10.99.2.2:9000, answered),
  :5300 (nat SKIP's bare `-j RETURN`, filter INPUT's bare `-j ACCEPT`,
  port unreachable from the router), UDP to 10.99.2.2:9999 (filter FORWARD
  REJECT) and 10.99.2.7:9998 (FW's bare `-j DROP`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netemu.trace.legacytrace import Chain, parse_legacy_trace, parse_save
from netemu.trace.nftrace import RuleVerdict, TracedPacket, parse_trace

DATA = Path(__file__).parent / "data" / "trace"
NODE1_INTERFACES = {1: "lo", 2: "eth0", 3: "cni0", 4: "flannel.1", 5: "veth60ced682"}
ROUTER_INTERFACES = {1: "lo", 2: "rc", 3: "rs"}


def _load(name: str, interfaces: dict[int, str] | None = None) -> list[TracedPacket]:
    text = (DATA / f"legacy-nflog-{name}.txt").read_text()
    return parse_legacy_trace(text, (DATA / f"legacy-save-{name}.txt").read_text(), interfaces)


@pytest.fixture(scope="module")
def node1() -> list[TracedPacket]:
    return _load("node-1", NODE1_INTERFACES)


@pytest.fixture(scope="module")
def node2() -> list[TracedPacket]:
    return _load("node-2")


@pytest.fixture(scope="module")
def router() -> list[TracedPacket]:
    return _load("router", ROUTER_INTERFACES)


def _syn(packets: list[TracedPacket], dport: int) -> list[TracedPacket]:
    """The passes of the first SYN to `dport`."""
    first = next(p for p in packets if p.tcp_flags == ("SYN",) and p.dport == dport)
    return [p for p in packets if p.ip_id == first.ip_id]


def _to(packets: list[TracedPacket], dst: str, dport: int | None = None) -> list[TracedPacket]:
    """The passes of the first packet sent to dst(:dport) (as it arrived)."""
    first = next(p for p in packets if p.dst == dst and (dport is None or p.dport == dport))
    return [p for p in packets if p.ip_id == first.ip_id and p.src == first.src]


def _rules(passes: list[TracedPacket]) -> list[RuleVerdict]:
    return [v for p in passes for v in p.verdicts if v.kind == "rule" and v.table != "raw"]


# -- iptables-legacy-save --------------------------------------------------------------


def test_save_numbers_each_chains_rules_in_order() -> None:
    chains = parse_save((DATA / "legacy-save-router.txt").read_text())
    assert chains[("filter", "FW")] == Chain(
        None,
        ["-A FW -d 10.99.2.2/32 -j ACCEPT", "-A FW -s 10.99.2.2/32 -j ACCEPT", "-A FW -j DROP"],
    )
    assert chains[("filter", "INPUT")] == Chain("ACCEPT", ["-A INPUT -j ACCEPT"])
    assert chains[("nat", "OUTPUT")] == Chain("ACCEPT", [])
    assert chains[("raw", "T")].rules == ["-A T -j TRACE"]


def test_save_with_counters() -> None:
    text = "*filter\n:INPUT DROP [3:120]\n:X - [0:0]\n[5:300] -A INPUT -j X\nCOMMIT\n"
    assert parse_save(text) == {
        ("filter", "INPUT"): Chain("DROP", ["-A INPUT -j X"]),
        ("filter", "X"): Chain(None, []),
    }


# -- a NodePort flow: node-1 DNATs and masquerades --------------------------------------


def test_syn_passes_follow_the_hooks_table_by_table(node1: list[TracedPacket]) -> None:
    syn = _syn(node1, 30080)
    assert [(p.table, p.hook) for p in syn] == [
        ("raw", "PREROUTING"),
        ("mangle", "PREROUTING"),
        ("nat", "PREROUTING"),
        ("mangle", "FORWARD"),
        ("filter", "FORWARD"),
        ("mangle", "POSTROUTING"),
        ("nat", "POSTROUTING"),
    ]
    # No kernel trace id on legacy: the IP id stands in, shared by the passes.
    assert {p.trace_id for p in syn} == {f"{syn[0].ip_id:04x}"} == {"e07f"}
    before, after = syn[2], syn[4]
    assert (before.dst, before.dport, before.out_iface) == ("192.168.56.11", 30080, None)
    assert (after.dst, after.dport, after.out_iface) == ("10.244.1.2", 8080, "flannel.1")


def test_packet_fields_and_flags(node1: list[TracedPacket]) -> None:
    syn = _syn(node1, 30080)[0]
    assert syn.fields == {
        "IN": "eth0",
        "SRC": "192.168.56.20",
        "DST": "192.168.56.11",
        "LEN": "60",
        "TTL": "64",
        "ID": "57471",
        "PROTO": "TCP",
        "SPORT": "60957",
        "DPORT": "30080",
    }
    assert syn.flags == ("DF", "SYN")
    assert (syn.src, syn.sport, syn.proto, syn.ip_id, syn.ttl, syn.length) == (
        "192.168.56.20",
        60957,
        "tcp",
        57471,
        64,
        60,
    )
    assert (syn.in_iface, syn.mark) == ("eth0", 0)


def test_nat_pass_jumps_to_the_endpoint_dnat(node1: list[TracedPacket]) -> None:
    nat = _syn(node1, 30080)[2]
    assert [(v.kind, v.chain, v.verdict, v.target_chain) for v in nat.verdicts] == [
        ("rule", "PREROUTING", "JUMP", "KUBE-SERVICES"),
        ("rule", "KUBE-SERVICES", "JUMP", "KUBE-NODEPORTS"),
        ("rule", "KUBE-NODEPORTS", "JUMP", "KUBE-EXT-IWCJJAMV7TQADP7P"),
        ("rule", "KUBE-EXT-IWCJJAMV7TQADP7P", "JUMP", "KUBE-MARK-MASQ"),
        ("rule", "KUBE-MARK-MASQ", "MARK", None),
        ("return", "KUBE-MARK-MASQ", "RETURN", None),
        ("rule", "KUBE-EXT-IWCJJAMV7TQADP7P", "JUMP", "KUBE-SVC-IWCJJAMV7TQADP7P"),
        ("rule", "KUBE-SVC-IWCJJAMV7TQADP7P", "JUMP", "KUBE-SEP-BEHOY62UEVSN5IZ5"),
        ("rule", "KUBE-SEP-BEHOY62UEVSN5IZ5", "DNAT", None),
    ]
    assert nat.final == RuleVerdict(
        table="nat",
        chain="KUBE-SEP-BEHOY62UEVSN5IZ5",
        kind="rule",
        handle=None,
        verdict="DNAT",
        target_chain=None,
        rule='-A KUBE-SEP-BEHOY62UEVSN5IZ5 -p tcp -m comment --comment "default/web-nodeport:http"'
        " -m tcp -j DNAT --to-destination 10.244.1.2:8080",
    )
    assert nat.final.target == "DNAT"
    # The NodePort rule is the 4th of KUBE-NODEPORTS, not the 127.0.0.0/8 one before it.
    assert "-d 127.0.0.0/8" not in (nat.verdicts[2].rule or "")


def test_returns_and_policies_have_no_rule(node1: list[TracedPacket]) -> None:
    syn = _syn(node1, 30080)
    ends = [v for p in syn for v in p.verdicts if v.kind != "rule"]
    assert ends and all(v.rule is None and v.handle is None for v in ends)
    assert {(v.kind, v.verdict) for v in ends} == {("return", "RETURN"), ("policy", "ACCEPT")}
    assert syn[0].verdicts[-1] == RuleVerdict(
        "raw", "PREROUTING", "policy", None, "ACCEPT", None, None
    )


def test_the_trace_rule_itself_is_not_reported(node1: list[TracedPacket]) -> None:
    # The SYN matches two TRACE rules of the chain: the first switches
    # tracing on, unreported; the second is the first message.
    raw = _syn(node1, 30080)[0]
    assert [(v.kind, v.rule) for v in raw.verdicts[:2]] == [
        ("rule", "-A NETEMU-TRACE-9b7f61 -d 192.168.56.11/32 -p tcp -m tcp --dport 30080 -j TRACE"),
        ("return", None),
    ]


def test_masquerade_in_postrouting(node1: list[TracedPacket]) -> None:
    post = _syn(node1, 30080)[-1]
    assert post.final is not None
    assert (post.final.chain, post.final.target, post.final.verdict) == (
        "KUBE-POSTROUTING",
        "MASQUERADE",
        "MASQUERADE",
    )


def test_rules_agree_with_the_nft_trace_of_the_same_flow(node1: list[TracedPacket]) -> None:
    """The same NodePort flow to the same endpoint traced on the nft backend
    (xtables-monitor) names the same rules, in the same order, with the same
    text: both backends print rules as iptables-save does."""
    nft = parse_trace((DATA / "xtables-monitor-node-1.txt").read_text())
    legacy = [(v.table, v.chain, v.rule) for v in _rules(_syn(node1, 30080))]
    assert legacy == [(v.table, v.chain, v.rule) for v in _rules(_syn(nft, 30080))]
    assert len(legacy) == 14


def test_node2_sees_the_decapsulated_packet_without_nat(node2: list[TracedPacket]) -> None:
    syn = _syn(node2, 8080)
    assert (syn[0].src, syn[0].dst) == ("10.244.0.0", "10.244.1.2")
    assert syn[0].in_iface is None  # no interface names given
    assert not any(v.target == "DNAT" for v in _rules(syn))
    nat = next(p for p in syn if p.table == "nat" and p.hook == "PREROUTING")
    assert [(v.kind, v.chain) for v in nat.verdicts] == [
        ("rule", "PREROUTING"),
        ("return", "KUBE-SERVICES"),
        ("policy", "PREROUTING"),
    ]
    # The answer: IP id 0 (a SYN-ACK), a pass of its own per table.
    synack = [p for p in node2 if p.tcp_flags == ("SYN", "ACK")]
    assert synack and {p.ip_id for p in synack} == {0}
    assert len(synack) == len({(p.table, p.hook) for p in synack})


# -- a router: UDP, ICMP, REJECT, bare ACCEPT/DROP/RETURN rules, goto --------------------


def test_icmp_is_dnated_through_a_goto(router: list[TracedPacket]) -> None:
    ping = _to(router, "10.99.1.2")
    assert {p.proto for p in ping} == {"icmp"}
    assert all(p.sport is None and p.dport is None for p in ping)
    nat = next(p for p in ping if p.table == "nat" and p.hook == "PREROUTING")
    assert [(v.chain, v.verdict, v.target_chain) for v in nat.verdicts] == [
        ("PREROUTING", "JUMP", "SVC"),
        ("SVC", "GOTO", "SEP"),
        ("SEP", "DNAT", None),
    ]
    assert nat.verdicts[1].rule == "-A SVC -g SEP"
    forward = next(p for p in ping if p.hook == "FORWARD")
    assert (forward.dst, forward.in_iface, forward.out_iface) == ("10.99.2.2", "rc", "rs")


def test_udp_ports_and_dnat(router: list[TracedPacket]) -> None:
    udp = _to(router, "10.99.1.2", 5301)
    assert {p.proto for p in udp} == {"udp"}
    assert [(p.table, p.hook, p.dst, p.dport) for p in udp] == [
        ("raw", "PREROUTING", "10.99.1.2", 5301),
        ("nat", "PREROUTING", "10.99.1.2", 5301),
        ("filter", "FORWARD", "10.99.2.2", 9000),
        ("nat", "POSTROUTING", "10.99.2.2", 9000),
    ]
    assert udp[1].final is not None
    assert udp[1].final.rule == "-A SEP -p udp -j DNAT --to-destination 10.99.2.2:9000"


def test_unconditional_standard_rules_are_rules(router: list[TracedPacket]) -> None:
    """The kernel calls a bare -j RETURN/ACCEPT/DROP a "return" (user chain)
    or "policy" (base chain); its number shows it is a rule."""
    local = _to(router, "10.99.1.2", 5300)
    nat = next(p for p in local if p.table == "nat" and p.hook == "PREROUTING")
    assert [(v.kind, v.chain, v.verdict, v.rule) for v in nat.verdicts] == [
        (
            "rule",
            "PREROUTING",
            "JUMP",
            "-A PREROUTING -d 10.99.1.2/32 -p udp -m udp --dport 5300 -j SKIP",
        ),
        ("rule", "SKIP", "RETURN", "-A SKIP -j RETURN"),
        ("policy", "PREROUTING", "ACCEPT", None),
    ]
    filter_input = next(p for p in local if p.table == "filter" and p.hook == "INPUT")
    assert filter_input.verdicts == (
        RuleVerdict("filter", "INPUT", "rule", None, "ACCEPT", None, "-A INPUT -j ACCEPT"),
    )
    nat_input = next(p for p in local if p.table == "nat" and p.hook == "INPUT")
    assert nat_input.verdicts == (
        RuleVerdict("nat", "INPUT", "policy", None, "ACCEPT", None, None),
    )

    dropped = _to(router, "10.99.2.7", 9998)
    assert dropped[-1].final == RuleVerdict(
        "filter", "FW", "rule", None, "DROP", None, "-A FW -j DROP"
    )


def test_reject_and_its_icmp_error(router: list[TracedPacket]) -> None:
    rejected = _to(router, "10.99.2.2", 9999)
    assert rejected[-1].final is not None
    assert rejected[-1].final.target == "REJECT"
    assert rejected[-1].final.verdict == "REJECT"
    # The port unreachable the router sends back: ICMP, leaving by OUTPUT;
    # the quoted UDP header's ports are not the packet's own.
    index = router.index(rejected[-1])
    error = router[index + 1]
    assert (error.proto, error.src, error.dst, error.hook) == (
        "icmp",
        "10.99.1.2",
        "10.99.1.1",
        "OUTPUT",
    )
    assert (error.sport, error.dport) == (None, None)


# -- robustness ------------------------------------------------------------------------

HEADER = "nflog.prefix\tnflog.hook\tip.src\tip.dst\tip.proto\tip.id\tudp.srcport\tudp.dstport\n"
SAVE = "*raw\n:PREROUTING ACCEPT [0:0]\n:T - [0:0]\n-A PREROUTING -j T\n-A T -j TRACE\nCOMMIT\n"


def _row(prefix: str, ip_id: str = "0x0001") -> str:
    return f"{prefix}\t0\t10.0.0.1\t10.0.0.2\t17\t{ip_id}\t1000\t53\n"


def test_empty_and_header_only_text() -> None:
    assert parse_legacy_trace("", SAVE) == []
    assert parse_legacy_trace(HEADER, SAVE) == []


def test_rows_that_are_not_trace_messages_are_skipped() -> None:
    text = HEADER + _row("my own NFLOG rule ") + _row("TRACE: raw:T:return:2 ")
    (only,) = parse_legacy_trace(text, SAVE)
    assert only.verdicts == (RuleVerdict("raw", "T", "return", None, "RETURN", None, None),)
    assert (only.proto, only.sport, only.dport) == ("udp", 1000, 53)


def test_a_rule_number_the_save_lacks_has_no_rule() -> None:
    (only,) = parse_legacy_trace(HEADER + _row("TRACE: raw:T:rule:7 "), SAVE)
    assert only.verdicts == (RuleVerdict("raw", "T", "rule", None, "", None, None),)


def test_a_policy_ends_the_pass() -> None:
    one = _row("TRACE: raw:T:return:2 ") + _row("TRACE: raw:PREROUTING:policy:2 ")
    passes = parse_legacy_trace(HEADER + one + one, SAVE)
    assert len(passes) == 2
    assert passes[0].verdicts == passes[1].verdicts


def test_interleaved_packets_keep_their_passes() -> None:
    text = HEADER + "".join(
        [
            _row("TRACE: raw:T:return:2 ", "0x0001"),
            _row("TRACE: raw:T:return:2 ", "0x0002"),
            _row("TRACE: raw:PREROUTING:policy:2 ", "0x0001"),
            _row("TRACE: raw:PREROUTING:policy:2 ", "0x0002"),
        ]
    )
    passes = parse_legacy_trace(text, SAVE)
    assert [(p.trace_id, len(p.verdicts)) for p in passes] == [("0001", 2), ("0002", 2)]
