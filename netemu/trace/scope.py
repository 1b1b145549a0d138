"""TRACE rules scoped to one flow, as iptables-restore text for a node's raw
table (which kube-proxy leaves alone): a chain of its own, jumped to first
from PREROUTING and OUTPUT, with one `-j TRACE` rule per form the flow's
packets can take on that node.

The raw table sees packets before conntrack translates them, so the forms
are: the packet as sent (source address and port), replies to the source,
ICMP errors sent to the source, and, for every endpoint the packet may be
DNATed to, packets to and from that endpoint's address and port (the
DNATed and SNATed request on the endpoint's node, the reply everywhere).
Packets of other connections to the same endpoint may be traced too; the
report keeps only those conntrack ties to this flow.

In nftables mode (see below) the same forms are `meta nftrace set 1`
rules in a table of the tracer's own.

Pure: text only. netemu.kernel.iptables / netemu.kernel.nftables apply it.
"""

from __future__ import annotations

from collections.abc import Iterable

from netemu.trace.flow import Flow

CHAIN_PREFIX = "NETEMU-TRACE-"
# Every chain whose rules may trace a flow's packets: raw's two entry hooks.
HOOKS = ("PREROUTING", "OUTPUT")


def chain_name(trace_id: str) -> str:
    # iptables chain names are at most 28 characters.
    return (CHAIN_PREFIX + trace_id.rsplit("-", 1)[-1])[:28]


def _l4(proto: str, flag: str, port: int | None, ipv6: bool = False) -> str:
    if proto == "icmp":
        # ip6tables names ICMPv6 `icmpv6` (`-p icmp` there is IPv4's protocol 1).
        return "-p icmpv6" if ipv6 else "-p icmp"
    if port is None:
        return f"-p {proto}"
    return f"-p {proto} -m {proto} --{flag} {port}"


def is_ipv6(flow: Flow) -> bool:
    """Whether the flow is IPv6: its TRACE rules go to ip6tables."""
    return ":" in flow.dst


def _scope_points(
    flow: Flow, sport: int, endpoints: Iterable[str]
) -> list[tuple[str, str, str, str, int | None]]:
    """What the trace rules of `flow` sent from `sport` match, whatever their
    syntax: (side "s"/"d", address, protocol, port side, port) for the flow's
    own packets both ways, the ICMP errors sent back to its source, and each
    place the rules may DNAT it (`endpoints`: "ip:port", "[ip6]:port") both
    ways."""
    proto, src = flow.proto, flow.source.ip
    own_port = None if proto == "icmp" else sport
    points = [("s", src, proto, "sport", own_port), ("d", src, proto, "dport", own_port)]
    if proto != "icmp":  # ICMP errors about the flow, sent back to its source
        points.append(("d", src, "icmp", "", None))
    targets = list(dict.fromkeys([*endpoints, f"{flow.dst}:{flow.dport}"]))
    for target in targets:
        address, _, port_text = target.rpartition(":")
        address = address.strip("[]")
        port = int(port_text) if port_text.isdigit() and proto != "icmp" else None
        points.append(("d", address, proto, "dport", port))
        points.append(("s", address, proto, "sport", port))
    return points


def trace_matches(flow: Flow, sport: int, endpoints: Iterable[str]) -> list[str]:
    """The match part of each TRACE rule for `flow` sent from `sport`;
    `endpoints` ("ip:port", "[ip6]:port") are where the rules may DNAT it.
    For an IPv6 flow, ip6tables' rules (/128 hosts, ICMPv6)."""
    v6 = is_ipv6(flow)
    host = "/128" if v6 else "/32"
    matches = [
        f"-{side} {address}{host} {_l4(proto, kind, port, v6)}"
        for side, address, proto, kind, port in _scope_points(flow, sport, endpoints)
    ]
    return list(dict.fromkeys(matches))


def install_text(chain: str, matches: Iterable[str]) -> str:
    lines = ["*raw", f":{chain} - [0:0]"]
    lines += [f"-A {chain} {match} -j TRACE" for match in matches]
    lines += [f"-I {hook} 1 -j {chain}" for hook in HOOKS]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def remove_text(chain: str) -> str:
    lines = ["*raw"]
    lines += [f"-D {hook} -j {chain}" for hook in HOOKS]
    lines += [f"-F {chain}", f"-X {chain}", "COMMIT"]
    return "\n".join(lines) + "\n"


# -- nftables mode ----------------------------------------------------------
#
# With kube-proxy in nftables mode the flow is traced with `meta nftrace set
# 1` from a table of the tracer's own, whose chains hook prerouting and
# output one priority before raw (so before conntrack and every NAT chain,
# as the raw table's TRACE rules are), with one rule per form the flow's
# packets can take (the same forms as trace_matches'). The kernel then
# reports every rule the packet meets in every table (`nft monitor trace`):
# kube-proxy's `ip kube-proxy` and iptables-nft's tables alike.

NFT_TABLE_PREFIX = "netemu-trace-"
NFT_PRIORITY = -301  # raw (-300) - 1


def nft_table_name(trace_id: str) -> str:
    return NFT_TABLE_PREFIX + trace_id.rsplit("-", 1)[-1]


def nft_family(flow: Flow) -> str:
    """The nftables family of the flow's packets (ip or ip6)."""
    return "ip6" if ":" in flow.dst else "ip"


def _nft_l4(family: str, proto: str, flag: str, port: int | None) -> str:
    if proto == "icmp":
        return "meta l4proto ipv6-icmp" if family == "ip6" else "meta l4proto icmp"
    if port is None:
        return f"meta l4proto {proto}"
    return f"meta l4proto {proto} th {flag} {port}"


def nft_trace_matches(flow: Flow, sport: int, endpoints: Iterable[str]) -> list[str]:
    """The match part of each nftrace rule for `flow` sent from `sport`
    (nft syntax); `endpoints` ("ip:port", "[ip6]:port") are where the rules
    may DNAT it."""
    family = nft_family(flow)  # also the expression prefix: `ip saddr` / `ip6 saddr`
    matches = [
        f"{family} {side}addr {address} {_nft_l4(family, proto, kind, port)}"
        for side, address, proto, kind, port in _scope_points(flow, sport, endpoints)
    ]
    return list(dict.fromkeys(matches))


def nft_install_text(table: str, family: str, matches: Iterable[str]) -> str:
    """The trace table, one `nft -f` transaction in knftables' line form."""
    lines = [f"add table {family} {table}"]
    for hook in ("prerouting", "output"):
        lines.append(
            f"add chain {family} {table} {hook} "
            f"{{ type filter hook {hook} priority {NFT_PRIORITY} ; }}"
        )
        lines += [
            f"add rule {family} {table} {hook} {match} meta nftrace set 1" for match in matches
        ]
    return "\n".join(lines) + "\n"
