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

Pure: text only. netemu.kernel.iptables applies it.
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


def _l4(proto: str, flag: str, port: int | None) -> str:
    if proto == "icmp" or port is None:
        return f"-p {proto}"
    return f"-p {proto} -m {proto} --{flag} {port}"


def trace_matches(flow: Flow, sport: int, endpoints: Iterable[str]) -> list[str]:
    """The match part of each TRACE rule for `flow` sent from `sport`;
    `endpoints` ("ip:port") are where the rules may DNAT it."""
    proto, src = flow.proto, flow.source.ip
    matches = [
        f"-s {src}/32 {_l4(proto, 'sport', None if proto == 'icmp' else sport)}",
        f"-d {src}/32 {_l4(proto, 'dport', None if proto == 'icmp' else sport)}",
    ]
    if proto != "icmp":
        matches.append(f"-d {src}/32 -p icmp")
    targets = list(dict.fromkeys([*endpoints, f"{flow.dst}:{flow.dport}"]))
    for target in targets:
        ip, _, port_text = target.rpartition(":")
        port = int(port_text) if port_text.isdigit() and proto != "icmp" else None
        matches.append(f"-d {ip}/32 {_l4(proto, 'dport', port)}")
        matches.append(f"-s {ip}/32 {_l4(proto, 'sport', port)}")
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
