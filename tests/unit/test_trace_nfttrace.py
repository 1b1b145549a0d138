"""parse_nft_trace on `nft monitor trace` output captured from nft 1.0.6
(tests/unit/data/trace/nft-monitor-*.txt: a ClusterIP TCP connect through a
kube-proxy-shaped table, an ICMP echo and a UDP datagram sent to a reject
chain, an IPv6 DNAT), each traced by a `netemu-trace-*` table."""

from __future__ import annotations

from pathlib import Path

import pytest

from netemu.trace.nftrace import rule_target
from netemu.trace.nfttrace import parse_nft_trace, tcp_flag_words

DATA = Path(__file__).parent / "data" / "trace"


def _read(name: str) -> str:
    return (DATA / name).read_text()


def test_a_clusterip_connect_through_kube_proxys_table() -> None:
    passes = parse_nft_trace(_read("nft-monitor-clusterip-tcp.txt"))
    first = passes[0]
    assert (first.src, first.dst, first.proto, first.sport, first.dport) == (
        "10.0.0.1",
        "172.30.0.41",
        "tcp",
        58224,
        80,
    )
    assert first.tcp_flags == ("SYN",)
    assert first.ip_id == 40612 and first.ttl == 64 and first.length == 60
    assert first.out_iface == "d0"
    nat_output = passes[1]
    assert nat_output.table == "kube-proxy"
    rules = [(v.chain, v.verdict, v.target_chain) for v in nat_output.verdicts]
    assert rules == [
        ("nat-output", "JUMP", "services"),
        ("services", "GOTO", "service-ULMVA6XW-ns1/svc1/tcp/p80"),
        (
            "service-ULMVA6XW-ns1/svc1/tcp/p80",
            "GOTO",
            "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.0.0.1/80",
        ),
        ("endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.0.0.1/80", "JUMP", "mark-for-masquerade"),
        ("mark-for-masquerade", "CONTINUE", None),
        ("endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.0.0.1/80", "ACCEPT", None),
    ]
    dnat = nat_output.verdicts[-1]
    assert dnat.rule == "meta l4proto tcp dnat to 10.0.0.1:80"
    assert dnat.target == "DNAT"
    # iptables-nft's nat table is traced too, its rule in nft's syntax.
    postrouting = passes[2]
    assert postrouting.table == "nat" and postrouting.dst == "10.0.0.1"
    assert postrouting.verdicts[-1].kind == "policy"
    assert postrouting.mark is not None
    masquerading = passes[3]
    assert masquerading.verdicts[-1].rule == "masquerade fully-random"
    assert masquerading.verdicts[-1].target == "MASQUERADE"
    # The reply (RST|ACK, printed as 0x14) is a pass of its own.
    reply = [p for p in passes if p.src == "10.0.0.1" and p.sport == 80]
    assert reply[0].tcp_flags == ("ACK", "RST")


def test_the_tracers_own_table_is_left_out() -> None:
    text = _read("nft-monitor-clusterip-tcp.txt")
    everything = parse_nft_trace(text)
    passes = parse_nft_trace(text, ignore_tables={"netemu-trace"})
    assert len(passes) < len(everything)
    assert all(v.table != "netemu-trace" for p in passes for v in p.verdicts)
    assert {p.table for p in passes} == {"kube-proxy", "nat"}


def test_icmp_and_a_reject_chain() -> None:
    passes = parse_nft_trace(_read("nft-monitor-icmp-reject.txt"), {"netemu-trace-abc"})
    echo = passes[0]
    assert echo.proto == "icmp" and echo.fields["ICMPTYPE"] == "echo-request"
    assert echo.fields["ICMPID"] == "14122"
    masquerade = [v for p in passes for v in p.verdicts if v.target == "MASQUERADE"]
    assert masquerade and masquerade[0].table == "nat" and masquerade[0].chain == "POSTROUTING"
    # iptables-nft's counter values are left out of the rule text.
    assert masquerade[0].rule == "ip saddr 10.0.0.0/24 ip daddr 10.0.0.0/24  counter masquerade"
    udp = [p for p in passes if p.proto == "udp"]
    assert [(p.dport, p.sport) for p in udp] == [(53, 50409)]
    verdicts = udp[0].verdicts
    assert [(v.chain, v.verdict) for v in verdicts] == [
        ("filter-output", "GOTO"),
        ("reject-chain", "DROP"),
    ]
    # The kernel reports the reject as a drop; the rule names the REJECT.
    assert verdicts[-1].target == "REJECT"


def test_ipv6() -> None:
    passes = parse_nft_trace(_read("nft-monitor-ipv6-dnat.txt"), {"netemu-trace-abc"})
    assert len(passes) == 1
    (v6,) = passes
    assert (v6.src, v6.dst, v6.proto, v6.dport, v6.ttl) == (
        "fd00::1",
        "fd00:30::41",
        "tcp",
        80,
        64,
    )
    # IPv6 has no IP id: the flow label stands in for it, as in netemu.trace.packets.
    assert v6.ip_id == 263618
    assert v6.verdicts[0].target == "DNAT"
    assert v6.verdicts[0].rule is not None and "[fd00::1]:8080" in v6.verdicts[0].rule


def test_lines_of_an_unseen_trace_id_start_a_pass_without_headers() -> None:
    passes = parse_nft_trace(
        "trace id 0a ip kube-proxy services rule jump x (verdict jump x)\n"
        "garbage line\n"
        "trace id 0a ip kube-proxy x return\n"
    )
    assert len(passes) == 1 and passes[0].fields == {}
    assert [v.kind for v in passes[0].verdicts] == ["rule", "return"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("syn", ["SYN"]),
        ("syn | ack", ["SYN", "ACK"]),
        ("0x14", ["ACK", "RST"]),
        ("0x11", ["ACK", "FIN"]),
    ],
)
def test_tcp_flags(text: str, words: list[str]) -> None:
    assert tcp_flag_words(text) == words


@pytest.mark.parametrize(
    ("rule", "target"),
    [
        ("meta l4proto tcp dnat to 10.0.0.1:80", "DNAT"),
        ("masquerade fully-random", "MASQUERADE"),
        ("reject", "REJECT"),
        ("ip saddr != { 1.2.3.0/24 } drop", "DROP"),
        ("ip daddr 1.2.3.4 udp dport 53 goto reject-chain", "reject-chain"),
        ("meta mark set meta mark | 0x00004000", "MARK"),
        ("numgen random mod 2 vmap { 0 : goto a, 1 : goto b }", None),
        ("-A KUBE-SEP-X -p tcp -j DNAT --to-destination 10.0.0.1:80", "DNAT"),
    ],
)
def test_rule_targets_of_both_syntaxes(rule: str, target: str | None) -> None:
    found = rule_target(rule)
    assert (found[1] if found else None) == target


def test_an_ipv6_clusterip_connect_through_kube_proxys_ip6_table() -> None:
    # Real output (nft 1.0.6): node-1 of a dual-stack lab in nftables mode, a
    # pod's connect to an IPv6-only Service, traced by a table `nt-x`;
    # DNATed to the endpoint on node-2, forwarded over flannel-v6.1.
    passes = parse_nft_trace(_read("nft-monitor-ipv6-clusterip-node-1.txt"), ignore_tables={"nt-x"})
    syn = [p for p in passes if p.tcp_flags == ("SYN",)]
    nat = next(p for p in syn if p.hook == "nat-prerouting")
    assert (nat.src, nat.dst, nat.proto, nat.sport, nat.dport, nat.ttl) == (
        "fd00:10:244::2",
        "fd00:10:96::db48",
        "tcp",
        40123,
        80,
        64,
    )
    assert nat.ip_id == 963560  # the flow label
    dnat = [v for v in nat.verdicts if v.target == "DNAT"]
    assert len(dnat) == 1 and dnat[0].rule is not None
    assert "dnat to [fd00:10:244:1::2]:8080" in dnat[0].rule
    # The forwarded SYN, after DNAT: the endpoint's address, one hop less.
    forwarded = next(p for p in syn if p.out_iface == "flannel-v6.1")
    assert (forwarded.dst, forwarded.dport, forwarded.ttl) == ("fd00:10:244:1::2", 8080, 63)
    assert forwarded.ip_id == 963560
    assert all(p.table != "nt-x" for p in passes)
