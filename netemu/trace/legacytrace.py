"""Rule traces of the legacy iptables backend: NFLOG messages of the TRACE
target, as tshark decodes them (netemu.kernel.nflog), joined with the
node's `iptables-legacy-save` text (`ip6tables-legacy-save` for an IPv6
flow, whose TRACE rules are ip6tables') into the same `TracedPacket`
passes that netemu.trace.nftrace reads from `xtables-monitor --trace`.

x_tables logs every rule entry a traced packet matches, with the packet and
the prefix `TRACE: <table>:<chain>:<kind>:<number> `:

    TRACE: nat:KUBE-SERVICES:rule:4         the 4th rule of the chain matched
    TRACE: nat:KUBE-MARK-MASQ:return:2      the end of a user chain (after 1 rule)
    TRACE: filter:FORWARD:policy:3          a base chain's policy (after 2 rules)

`number` is the entry's 1-based position in its chain, as
`iptables-legacy-save` lists the chain's rules; the end of a chain counts
as one more. The kernel calls any unconditional rule with a standard
verdict (a bare `-j ACCEPT`, `-j DROP` or `-j RETURN`) "return" (user
chain) or "policy" (base chain) too, so a return or policy numbered within
the chain's rules is that rule, and is reported as one. The TRACE rule
itself is not reported (the packet is traced only once its target ran).

Unlike nf_tables traces, the messages carry no verdict and no trace id.
RuleVerdict.verdict is therefore the rule's target as the rule text
names it: "JUMP"/"GOTO" with target_chain for a jump to a user chain (as
nftrace reports them), else the target ("ACCEPT", "DNAT", "MARK",
"MASQUERADE", "REJECT", ...; "" for a rule without one); "RETURN" for a
return, the chain's policy for a policy; handle is None.

An IPv6 packet's fields are named as for IPv4, as netemu.trace.nfttrace
and netemu.trace.packets name them: LEN is its payload length, TTL its hop
limit, PROTO its (first) next header (ICMPv6 is "ICMP", as the flow names
it), and ID its flow label, which stands in for the IP id IPv6 has not.

TracedPacket's trace_id is shared by all passes of a packet. IPv4: the
packet's IP id (hex), which the sender sets per packet. IPv6: the flow
label (5 hex digits), which the sender's kernel sets per socket, so per
connection and direction (include/net/ipv6.h ip6_make_flowlabel: the
packet's flow hash, for TCP the socket's random txhash), and which NAT
leaves alone; for a TCP segment followed by its absolute sequence and
acknowledgement numbers (`<label>-<seq>-<ack>`, also unchanged by NAT
without a helper), which tell a connection's segments apart but for a
pure ACK and the data or FIN segment after it, whose length or flags
differ.

A pass is one table's evaluation of one packet in one hook, as in
nftrace: consecutive messages of the same packet (same IP id or flow
label, addresses, protocol, ports, length, TCP sequence and
acknowledgement numbers and flags) in the same hook and table. Messages of
another packet may come between; a message of the packet in another hook
or table, or its base chain's policy, closes its pass.

Owns: parse_legacy_trace and the parsing of `iptables-legacy-save` text
into numbered chains. Pure: text in, data out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from netemu.trace.nftrace import RuleVerdict, TracedPacket, rule_target

_PREFIX = re.compile(
    r"^TRACE: (?P<table>[^:]+):(?P<chain>.+):(?P<kind>rule|return|policy):(?P<number>\d+)\s*$"
)
_PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 33: "DCCP", 58: "ICMP", 132: "SCTP"}
# TCP flag bits, in the order xtables-monitor prints their words.
_TCP_FLAGS: tuple[tuple[str, int], ...] = (
    ("SYN", 0x02),
    ("ACK", 0x10),
    ("FIN", 0x01),
    ("RST", 0x04),
    ("PSH", 0x08),
    ("URG", 0x20),
)


# (tshark column, TracedPacket field) of each family's header numbers.
_IPV4_FIELDS = (("ip.len", "LEN"), ("ip.ttl", "TTL"), ("ip.id", "ID"))
_IPV6_FIELDS = (("ipv6.plen", "LEN"), ("ipv6.hlim", "TTL"), ("ipv6.flow", "ID"))


@dataclass
class Chain:
    """A chain as `iptables-legacy-save` lists it: its policy (None for a
    user chain) and its rules, each `-A CHAIN args`, in kernel order."""

    policy: str | None
    rules: list[str] = field(default_factory=list)


def parse_save(text: str) -> dict[tuple[str, str], Chain]:
    """(table, chain) → Chain, from `iptables-save` text (with or without
    `-c` counters)."""
    chains: dict[tuple[str, str], Chain] = {}
    table = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and "] " in line:  # `iptables-save -c` counters
            line = line.split("] ", 1)[1]
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            name, policy, *_ = [*line[1:].split(), "-"]
            chains[(table, name)] = Chain(None if policy == "-" else policy)
        elif line.startswith("-A "):
            name = line.split()[1]
            chains.setdefault((table, name), Chain(None)).rules.append(line)
    return chains


def parse_legacy_trace(
    text: str, save: str, interfaces: Mapping[int, str] | None = None
) -> list[TracedPacket]:
    """Passes in the order of their first message. `text`: tshark's
    tab-separated columns under a header line (nflog.TSHARK_FIELDS, in any
    order); `save`: the namespace's `iptables-legacy-save` output while
    the packets were traced (it numbers the rules; `ip6tables-legacy-save`
    for IPv6 packets); `interfaces`: interface index → name, for IN/OUT.
    Rows that are not TRACE messages are skipped."""
    chains = parse_save(save)
    names = dict(interfaces or {})
    lines = text.splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    passes: list[_Pass] = []
    current: dict[tuple[object, ...], _Pass] = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t"), strict=False))
        match = _PREFIX.match(row.get("nflog.prefix", ""))
        if match is None or not (row.get("ip.src") or row.get("ipv6.src")):
            continue
        fields, flags = _packet(row, names)
        trace_id = _trace_id(row, fields)
        identity = (
            trace_id,
            flags,
            *(fields.get(k) for k in ("SRC", "DST", "PROTO", "SPORT", "DPORT", "LEN")),
        )
        where = (row.get("nflog.hook", ""), match["table"])
        owner = current.get(identity)
        if owner is None or owner.where != where or owner.ended:
            owner = _Pass(where, trace_id, fields, flags)
            passes.append(owner)
            current[identity] = owner
        verdict = _verdict(match, chains)
        owner.verdicts.append(verdict)
        # A base chain's policy ends the table's evaluation: the same
        # packet (or one with the same identity) in this hook and table
        # again is another pass.
        owner.ended = verdict.kind == "policy"
    return [TracedPacket(p.trace_id, dict(p.fields), p.flags, tuple(p.verdicts)) for p in passes]


@dataclass
class _Pass:
    where: tuple[str, str]  # (hook number, table)
    trace_id: str
    fields: dict[str, str]
    flags: tuple[str, ...]
    verdicts: list[RuleVerdict] = field(default_factory=list)
    ended: bool = False


def _packet(
    row: Mapping[str, str], interfaces: Mapping[int, str]
) -> tuple[dict[str, str], tuple[str, ...]]:
    """TracedPacket fields and flag words, named as xtables-monitor names
    them (an IPv6 packet's as the module docstring says)."""
    fields: dict[str, str] = {}
    for name, key in (("nflog.ifindex_indev", "IN"), ("nflog.ifindex_outdev", "OUT")):
        index = _int(row.get(name))
        if index is not None and index in interfaces:
            fields[key] = interfaces[index]
    ipv6 = not row.get("ip.src")
    prefix, numbers = ("ipv6", _IPV6_FIELDS) if ipv6 else ("ip", _IPV4_FIELDS)
    fields["SRC"], fields["DST"] = row[f"{prefix}.src"], row.get(f"{prefix}.dst", "")
    for name, key in numbers:
        value = _int(row.get(name))
        if value is not None:
            fields[key] = str(value)
    proto = _int(row.get("ipv6.nxt" if ipv6 else "ip.proto"))
    if proto is not None:
        fields["PROTO"] = _PROTOCOLS.get(proto, str(proto))
    # Ports of the packet's own transport header only: an ICMP error's
    # quoted header shows up in the tcp/udp columns too.
    l4 = {6: "tcp", 17: "udp"}.get(proto or 0)
    if l4 is not None:
        for end, key in (("srcport", "SPORT"), ("dstport", "DPORT")):
            value = _int(row.get(f"{l4}.{end}"))
            if value is not None:
                fields[key] = str(value)
    flags = [
        word
        for word, column in (("DF", "ip.flags.df"), ("MF", "ip.flags.mf"))
        if _set(row.get(column))
    ]
    tcp_flags = _int(row.get("tcp.flags")) if proto == 6 else None
    if tcp_flags is not None:
        flags += [word for word, bit in _TCP_FLAGS if tcp_flags & bit]
    return fields, tuple(flags)


def _verdict(match: re.Match[str], chains: Mapping[tuple[str, str], Chain]) -> RuleVerdict:
    table, chain, kind, number = match["table"], match["chain"], match["kind"], int(match["number"])
    known = chains.get((table, chain))
    rules = known.rules if known is not None else []
    if 1 <= number <= len(rules):
        # A rule: kind "rule", or an unconditional ACCEPT/DROP/RETURN rule
        # the kernel calls a return or policy.
        rule = rules[number - 1]
        verdict, target_chain = _target(rule, table, chains)
        return RuleVerdict(table, chain, "rule", None, verdict, target_chain, rule)
    if kind == "policy":
        policy = known.policy if known is not None and known.policy else ""
        return RuleVerdict(table, chain, kind, None, policy, None, None)
    if kind == "return":
        return RuleVerdict(table, chain, kind, None, "RETURN", None, None)
    # A rule number the save text does not have: the rules changed since.
    return RuleVerdict(table, chain, kind, None, "", None, None)


def _target(
    rule: str, table: str, chains: Mapping[tuple[str, str], Chain]
) -> tuple[str, str | None]:
    found = rule_target(rule)
    if found is None:
        return "", None
    flag, target = found
    user_chain = (table, target) in chains and chains[(table, target)].policy is None
    if user_chain:
        return ("GOTO" if flag == "g" else "JUMP"), target
    return target, None


def _trace_id(row: Mapping[str, str], fields: Mapping[str, str]) -> str:
    """The IPv4 packet's IP id, or the IPv6 packet's flow label with a TCP
    segment's sequence and acknowledgement numbers (module docstring)."""
    value = _int(fields.get("ID"))
    if value is None:
        return ""
    if row.get("ip.src"):
        return f"{value:04x}"
    seq, ack = _int(row.get("tcp.seq_raw")), _int(row.get("tcp.ack_raw"))
    if fields.get("PROTO") == "TCP" and seq is not None and ack is not None:
        return f"{value:05x}-{seq:08x}-{ack:08x}"
    return f"{value:05x}"


def _set(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "set")


def _int(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        return None
