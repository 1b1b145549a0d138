"""The nftables simulator's walk: hooks and priorities across nftables and
iptables-nft tables, the kernel's NAT at a hook, families, forks, and the
errors for rules it cannot walk."""

from __future__ import annotations

from pathlib import Path

import pytest

from netemu.rules.model import parse_restore
from netemu.rules.nftmodel import parse_nft
from netemu.rules.nftsimulate import simulate_nft
from netemu.rules.simulate import Packet, SimulationError

NODE = ["192.168.0.2", "2001:db8::1"]
DATA = Path(__file__).parent / "data" / "nftables"


def table(body: str, family: str = "ip") -> str:
    return f"table {family} t {{\n{body}\n}}\n"


def test_base_chains_run_in_priority_order_and_accept_ends_only_one() -> None:
    rules = parse_nft(
        table(
            """
  chain late { type filter hook prerouting priority 10; policy accept;
    meta mark set 0x2
  }
  chain early { type filter hook prerouting priority -10; policy accept;
    meta mark set 0x1
    accept
  }
  chain check { type filter hook forward priority 0; policy accept;
    meta mark 0x2 drop
  }
"""
        )
    )
    result = simulate_nft(rules, NODE, Packet("10.0.0.5", "10.0.0.9", 80))
    # `early` (-10) accepts; `late` (10) still runs and its mark decides in forward.
    assert result.verdict == "DROP"
    assert [r.chain for r in result.rules] == ["early", "early", "late", "check"]


def test_policy_drop_of_a_base_chain_drops() -> None:
    rules = parse_nft(
        table(
            "  chain in { type filter hook input priority 0; policy drop;\n"
            "    tcp dport 22 accept\n  }"
        )
    )
    assert simulate_nft(rules, NODE, Packet("10.0.0.5", "192.168.0.2", 22)).verdict == "ACCEPT"
    assert simulate_nft(rules, NODE, Packet("10.0.0.5", "192.168.0.2", 80)).verdict == "DROP"


IPTABLES_NAT = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.7:8080
COMMIT
"""


def test_iptables_tables_take_their_place_among_the_base_chains() -> None:
    nft = parse_nft(
        table(
            """
  chain nat-pre { type nat hook prerouting priority dstnat; policy accept;
    ip daddr 10.96.0.1 dnat to 10.0.0.8:9090
  }
  chain raw-ish { type filter hook prerouting priority -400; policy accept;
    ip daddr 10.96.0.1 meta mark set 0x7
  }
"""
        )
    )
    iptables = parse_restore(IPTABLES_NAT)
    result = simulate_nft(nft, NODE, Packet("10.0.0.5", "10.96.0.1", 80), iptables)
    # Both nat chains are at -100; iptables' goes first, its DNAT sets up
    # the mapping and the kernel runs no further nat chain at that hook.
    assert result.endpoints == ["10.0.0.7:8080"]
    tables = [r.table for r in result.rules]
    assert tables == ["ip t", "nat"]
    without = simulate_nft(nft, NODE, Packet("10.0.0.5", "10.96.0.1", 80))
    assert without.endpoints == ["10.0.0.8:9090"]


def test_tables_see_only_their_family() -> None:
    rules = parse_nft(
        table(
            "  chain f { type filter hook forward priority 0; policy accept;\n    drop\n  }", "ip6"
        )
        + table("  chain f { type filter hook forward priority 0; policy accept;\n    accept\n  }")
    )
    assert simulate_nft(rules, NODE, Packet("10.0.0.5", "10.0.0.9", 80)).verdict == "ACCEPT"
    assert simulate_nft(rules, NODE, Packet("fd00::5", "fd00::9", 80)).verdict == "DROP"


def test_ipv6_dnat_and_local_origin() -> None:
    rules = parse_nft(
        table(
            """
  chain out { type nat hook output priority -100; policy accept;
    ip6 daddr fd00:96::1 tcp dport 80 dnat to [fd00:10::7]:8080
  }
  chain post { type nat hook postrouting priority srcnat; policy accept;
    ip6 saddr 2001:db8::1 masquerade
  }
""",
            "ip6",
        )
    )
    result = simulate_nft(rules, NODE, Packet("2001:db8::1", "fd00:96::1", 80))
    assert result.local_origin
    assert result.endpoints == ["[fd00:10::7]:8080"]
    assert result.masquerade


def test_numgen_forks_with_equal_probability_and_a_missing_key_falls_through() -> None:
    rules = parse_nft(
        table(
            """
  chain pre { type nat hook prerouting priority dstnat; policy accept;
    numgen random mod 3 vmap { 0 : goto a, 1 : goto b }
    dnat to 10.0.0.3
  }
  chain a {
    dnat to 10.0.0.1
  }
  chain b {
    dnat to 10.0.0.2:81
  }
"""
        )
    )
    result = simulate_nft(rules, NODE, Packet("10.9.0.5", "10.96.0.1", 80))
    assert {p.endpoint: round(p.probability, 6) for p in result.paths} == {
        "10.0.0.1:80": 0.333333,
        "10.0.0.2:81": 0.333333,
        "10.0.0.3:80": 0.333333,
    }


def test_jump_returns_and_goto_does_not() -> None:
    rules = parse_nft(
        table(
            """
  chain pre { type filter hook prerouting priority 0; policy accept;
    jump sub
    meta mark 0x1 goto again
    drop
  }
  chain sub {
    meta mark set mark or 0x1
    return
    drop
  }
  chain again {
    meta mark set mark xor 0x1
  }
  chain fwd { type filter hook forward priority 0; policy accept;
    mark and 0x1 == 0 accept
    reject
  }
"""
        )
    )
    result = simulate_nft(rules, NODE, Packet("10.9.0.5", "10.96.0.1", 80))
    # sub returns into pre; the goto to `again` ends pre at again's end
    # (its `drop` is never reached); again cleared the mark, so fwd accepts.
    assert result.verdict == "ACCEPT"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("jump nowhere", "no chain 'nowhere' in table ip t"),
        ("numgen random mod 1 vmap { 0 : goto elsewhere }", "no chain 'elsewhere'"),
        ("ip daddr @missing drop", "no set or map 'missing'"),
        ("ip daddr 10.0.0.300 drop", "'10.0.0.300' is not an address"),
        ("tcp dport 70000 drop", "'70000' is not a port range within 0-65535"),
        ("numgen random mod 2 vmap { 0 : drop, 5 : drop }", "key 5 is out of range"),
        ("dnat to 10.0.0.1:0", "the port is not in 1-65535"),
        ("osf name Linux drop", "'osf' is not simulated"),
        ("ct helper ftp drop", "only ct state and ct status are simulated"),
    ],
)
def test_rules_it_cannot_walk_are_errors_naming_the_line(rule: str, message: str) -> None:
    # `c` is a base chain the packet meets: a rule is read when the walk
    # first enters its chain (the names rules refer to are checked before).
    text = (
        "add table ip t\nadd chain ip t c { type filter hook forward priority 0 ; }\n"
        f"add rule ip t c {rule}\n"
    )
    with pytest.raises(SimulationError) as caught:
        simulate_nft(parse_nft(text), NODE, Packet("10.0.0.5", "10.0.0.9", 80))
    assert caught.value.line_no == 3
    assert message in caught.value.message


def test_a_rule_no_packet_meets_is_not_read_but_its_names_are_checked() -> None:
    unread = "add table ip t\nadd chain ip t c\nadd rule ip t c ip daddr 10.0.0.300 drop\n"
    result = simulate_nft(parse_nft(unread), NODE, Packet("10.0.0.5", "10.0.0.9", 80))
    assert result.verdict == "NONE"
    dangling = "add table ip t\nadd chain ip t c\nadd rule ip t c ip daddr @nowhere drop\n"
    with pytest.raises(SimulationError, match="no set or map 'nowhere'"):
        simulate_nft(parse_nft(dangling), NODE, Packet("10.0.0.5", "10.0.0.9", 80))


def test_a_jump_loop_is_refused() -> None:
    text = (
        "add table ip t\nadd chain ip t a { type filter hook input priority 0 ; }\n"
        "add chain ip t b\nadd rule ip t a jump b\nadd rule ip t b jump a\n"
    )
    with pytest.raises(SimulationError, match="loop: a -> b -> a"):
        simulate_nft(parse_nft(text), NODE, Packet("10.0.0.5", "192.168.0.2", 80))


def test_a_live_node_listing_walks_iptables_nft_and_kube_proxy_tables_together() -> None:
    """`nft list ruleset` of a node in nftables mode: iptables-nft's `ip nat`
    and `ip filter` (counters and all) beside `ip kube-proxy`."""
    listed = DATA / "node-nftables-mode.listed"
    rules = parse_nft(listed.read_text())
    assert list(rules.tables) == [("ip", "nat"), ("ip", "filter"), ("ip", "kube-proxy")]
    to_service = simulate_nft(rules, ["192.168.0.2"], Packet("10.0.0.2", "172.30.0.41", 80))
    assert to_service.endpoints == ["10.180.0.1:80"]
    assert not to_service.masquerade  # 10.0.0.2 is outside flannel's 10.244.0.0/16
    out = simulate_nft(rules, ["192.168.0.2"], Packet("10.244.1.5", "8.8.8.8", 53, "udp"))
    # flanneld's masquerade, after a `counter packets 0 bytes 0` statement.
    assert out.masquerade
    assert out.rules[-1].table == "ip nat"
    assert out.rules[-1].rule.endswith("counter packets 0 bytes 0 masquerade fully-random")
    # The kernel set up SNAT in iptables-nft's nat chain: kube-proxy's
    # nat-postrouting (same hook, later) is not run for this packet.
    assert not any(r.chain == "nat-postrouting" for r in out.rules)


@pytest.mark.parametrize(
    ("rule", "verdict"),
    [
        ("counter packets 12 bytes 720 reject with icmp port-unreachable", "REJECT"),
        ("reject with icmp type host-unreachable", "REJECT"),
        ("reject with tcp reset", "REJECT"),
        ('log prefix "kp: " level warn counter drop', "DROP"),
        ("meta l4proto { udp, tcp } th dport 80-90 accept", "ACCEPT"),
        ("ip daddr 10.0.0.0-10.0.0.20 ct state { new, established } accept", "ACCEPT"),
        ("meta nftrace set 1 continue", "NONE"),
    ],
)
def test_statements_carry_their_arguments(rule: str, verdict: str) -> None:
    text = (
        "add table ip t\nadd chain ip t c { type filter hook forward priority 0 ; }\n"
        f"add rule ip t c {rule}\n"
    )
    result = simulate_nft(parse_nft(text), NODE, Packet("10.0.0.5", "10.0.0.9", 80))
    assert result.verdict == verdict
    assert [r.rule for r in result.rules] == [rule]


IPTABLES_FIREWALL = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
-A INPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT \
-j DROP
COMMIT
"""  # (the backslash joins the rule's two lines)


def test_iptables_nft_tables_of_a_listing_give_way_to_the_iptables_dump() -> None:
    """nft lists kubelet's KUBE-FIREWALL rule as `... ct status dnat ... drop`
    (the negated ctstate lost); given the node's iptables-save dump, the
    simulator walks the dump's rule for that table instead."""
    rules = parse_nft((DATA / "node-nftables-mode.listed").read_text())
    assert [t.label for t in rules.tables.values() if t.iptables_nft] == ["ip nat", "ip filter"]
    assert not rules.tables[("ip", "kube-proxy")].iptables_nft
    packet = Packet("10.0.0.1", "127.0.0.1", 80)
    assert simulate_nft(rules, ["192.168.0.2"], packet).verdict == "NONE"
    with_dump = simulate_nft(rules, ["192.168.0.2"], packet, parse_restore(IPTABLES_FIREWALL))
    assert with_dump.verdict == "DROP"
    assert with_dump.rules[-1].table == "filter"
    # The listed copies of those tables are not walked as well.
    assert not any(r.table in ("ip nat", "ip filter") for r in with_dump.rules)
