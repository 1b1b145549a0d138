"""The nftables-mode trace table (netemu.trace.scope): one transaction the
fake nft accepts, chains before raw on prerouting and output, and one
nftrace rule per form of the flow's packets, for IPv4 and IPv6."""

from __future__ import annotations

from netemu.kernel.nftables import FakeNftables
from netemu.trace import scope
from netemu.trace.flow import Flow, Source


def _flow(src: str, dst: str, dport: int, proto: str = "tcp") -> Flow:
    source = Source("pod", "default/a", "netemu_x_pod", src, "node-1")
    return Flow(source, dst, dport, proto, "test", None, "node-1", False)


def test_the_table_applies_and_scopes_every_form_of_the_flow() -> None:
    flow = _flow("10.244.0.2", "10.96.0.10", 80)
    matches = scope.nft_trace_matches(flow, 40000, ["10.244.1.3:8080"])
    assert matches == [
        "ip saddr 10.244.0.2 meta l4proto tcp th sport 40000",
        "ip daddr 10.244.0.2 meta l4proto tcp th dport 40000",
        "ip daddr 10.244.0.2 meta l4proto icmp",
        "ip daddr 10.244.1.3 meta l4proto tcp th dport 8080",
        "ip saddr 10.244.1.3 meta l4proto tcp th sport 8080",
        "ip daddr 10.96.0.10 meta l4proto tcp th dport 80",
        "ip saddr 10.96.0.10 meta l4proto tcp th sport 80",
    ]
    table = scope.nft_table_name("20260101-000000-a-tcp-abc123")
    assert table == "netemu-trace-abc123"
    text = scope.nft_install_text(table, scope.nft_family(flow), matches)
    nft = FakeNftables()
    nft.apply(text)
    listed = nft.list_table("ip", table)
    for hook in ("prerouting", "output"):
        assert f"add chain ip {table} {hook} {{ type filter hook {hook} priority -301 ; }}" in (
            listed
        )
    rules = [line for line in listed.splitlines() if line.startswith("add rule")]
    assert len(rules) == 2 * len(matches)
    assert all(rule.endswith(" meta nftrace set 1") for rule in rules)


def test_ipv6_and_icmp() -> None:
    flow = _flow("fd00:10:244::2", "fd00:10:96::a", 0, "icmp")
    assert scope.nft_family(flow) == "ip6"
    matches = scope.nft_trace_matches(flow, 7, ["[fd00:10:244:1::3]:0"])
    assert matches == [
        "ip6 saddr fd00:10:244::2 meta l4proto ipv6-icmp",
        "ip6 daddr fd00:10:244::2 meta l4proto ipv6-icmp",
        "ip6 daddr fd00:10:244:1::3 meta l4proto ipv6-icmp",
        "ip6 saddr fd00:10:244:1::3 meta l4proto ipv6-icmp",
        "ip6 daddr fd00:10:96::a meta l4proto ipv6-icmp",
        "ip6 saddr fd00:10:96::a meta l4proto ipv6-icmp",
    ]
