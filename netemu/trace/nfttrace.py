"""Parsing the kernel's rule traces as `nft monitor trace` prints them.

With `meta nftrace set 1` on a packet, nf_tables reports every rule it
matches in every table: kube-proxy's own `ip kube-proxy` / `ip6 kube-proxy`
tables in nftables mode, and iptables-nft's tables (flanneld's masquerade,
kubelet's chains) too, since with the nft backend those are nf_tables
tables as well. nft 1.0.6 prints one line per report:

    trace id 24ece763 ip kube-proxy nat-output packet: oif "d0" ip saddr 10.0.0.1
        ip daddr 172.30.0.41 ... ip ttl 64 ip id 40612 ip length 60 tcp sport 58224
        tcp dport 80 tcp flags == syn tcp window 64240
    trace id 24ece763 ip kube-proxy nat-output rule jump services (verdict jump services)
    trace id 24ece763 ip kube-proxy services rule ip daddr . meta l4proto . th dport
        vmap @service-ips (verdict goto service-ULMVA6XW-ns1/svc1/tcp/p80)
    trace id 24ece763 ip nat POSTROUTING policy accept meta mark 0x00004000

(one line each; wrapped here). A `packet:` line comes with the first report
of every base chain evaluation, so, as in netemu.trace.nftrace, it starts a
*pass* and the rule, policy and return lines after it with the same trace id
are that pass's verdicts; a line whose id has no pass yet starts one
without headers.

The records are netemu.trace.nftrace's TracedPacket and RuleVerdict, so
the report reads both tracers alike: `table` is the table's name ("kube-proxy",
"nat", ...), `rule` the rule as nft prints it (no `-A`; RuleVerdict.target
reads its final statement; a counter's values are left out), `handle`
None (nft prints none without -a).
Unlike xtables-monitor, nft prints the protocol and the ICMP type, so PROTO
is always known when the packet had a transport header nft could decode.

Passes of tables named in `ignore_tables` are dropped: the tracer's own
table that sets nftrace is tooling, not the flow's path.

Owns: parse_nft_trace. Pure: text in, records out; running `nft monitor
trace` is netemu.kernel's job.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from netemu.trace.nftrace import RuleVerdict, TracedPacket

_LINE = re.compile(
    r"^\s*trace id (?P<id>[0-9a-fA-F]+) (?P<family>ip6?|inet|bridge|arp|netdev) "
    r"(?P<table>\S+) (?P<chain>\S+) (?P<rest>.*?)\s*$"
)
_RULE = re.compile(r"^rule (?P<rule>.*) \(verdict (?P<verdict>[^()]*)\)$")
_POLICY = re.compile(r"^policy (?P<verdict>\S+)")
# iptables-nft's rules carry counters, printed with their current values:
# left out, so that a rule reads the same in every trace.
_COUNTER = re.compile(r"counter packets \d+ bytes \d+")
_VERDICT = re.compile(r"^(?:verdict )?(?P<verdict>\S+)(?: (?P<target>\S+))?")

# Header fields nft prints for the packet, by the key TracedPacket uses.
_HEADER_FIELDS = (
    (re.compile(r'(?:^|\s)iif "([^"]*)"'), "IN"),
    (re.compile(r'(?:^|\s)oif "([^"]*)"'), "OUT"),
    (re.compile(r"(?:^|\s)ip6? saddr (\S+)"), "SRC"),
    (re.compile(r"(?:^|\s)ip6? daddr (\S+)"), "DST"),
    (re.compile(r"(?:^|\s)ip ttl (\d+)"), "TTL"),
    (re.compile(r"(?:^|\s)ip6 hoplimit (\d+)"), "TTL"),
    (re.compile(r"(?:^|\s)ip id (\d+)"), "ID"),
    # IPv6 has no id: its flow label stands in for it (netemu.trace.packets).
    (re.compile(r"(?:^|\s)ip6 flowlabel (\d+)"), "ID"),
    (re.compile(r"(?:^|\s)ip6? length (\d+)"), "LEN"),
    (re.compile(r"(?:^|\s)(?:tcp|udp|udplite|sctp|dccp) sport (\d+)"), "SPORT"),
    (re.compile(r"(?:^|\s)(?:tcp|udp|udplite|sctp|dccp) dport (\d+)"), "DPORT"),
    (re.compile(r"(?:^|\s)icmp(?:v6)? type (\S+)"), "ICMPTYPE"),
    (re.compile(r"(?:^|\s)icmp(?:v6)? id (\d+)"), "ICMPID"),
    (re.compile(r"(?:^|\s)meta mark (0x[0-9a-fA-F]+)"), "MARK"),
)
_PROTO = re.compile(r"(?:^|\s)(tcp|udp|udplite|sctp|dccp|icmpv6|icmp) (?:sport|type)\s")
_TCP_FLAGS = re.compile(r"(?:^|\s)tcp flags == (\S+(?: \| \S+)*)")
# nft's names of TCP flag bits, and the words xtables-monitor uses for them.
_FLAG_BITS = (
    (0x01, "fin", "FIN"),
    (0x02, "syn", "SYN"),
    (0x04, "rst", "RST"),
    (0x08, "psh", "PSH"),
    (0x10, "ack", "ACK"),
    (0x20, "urg", "URG"),
)


class _Pass:
    def __init__(self, trace_id: str, table: str) -> None:
        self.trace_id = trace_id
        self.table = table
        self.fields: dict[str, str] = {}
        self.flags: list[str] = []
        self.verdicts: list[RuleVerdict] = []


def parse_nft_trace(text: str, ignore_tables: Collection[str] = ()) -> list[TracedPacket]:
    """Passes in the order their `packet:` lines appear (see the module
    docstring); unrecognised lines are skipped."""
    passes: list[_Pass] = []
    latest: dict[str, _Pass] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        trace_id, table, chain, rest = (
            match["id"].lower(),
            match["table"],
            match["chain"],
            match["rest"],
        )
        if rest.startswith("packet:"):
            current = _Pass(trace_id, table)
            _read_headers(rest[len("packet:") :], current)
            passes.append(current)
            latest[trace_id] = current
            continue
        owner = latest.get(trace_id)
        if owner is None:
            owner = _Pass(trace_id, table)
            passes.append(owner)
            latest[trace_id] = owner
        owner.verdicts.append(_read_verdict(table, chain, rest))
    return [
        TracedPacket(p.trace_id, dict(p.fields), tuple(p.flags), tuple(p.verdicts))
        for p in passes
        if p.table not in ignore_tables
    ]


def _read_headers(text: str, into: _Pass) -> None:
    for pattern, key in _HEADER_FIELDS:
        found = pattern.search(text)
        if found:
            into.fields[key] = found[1]
    proto = _PROTO.search(text)
    if proto:
        into.fields["PROTO"] = proto[1]
    flags = _TCP_FLAGS.search(text)
    if flags:
        into.flags.extend(tcp_flag_words(flags[1]))


def tcp_flag_words(text: str) -> list[str]:
    """`syn`, `syn | ack` or `0x14` (as nft prints `tcp flags ==`) as
    xtables-monitor's words (SYN, ACK, ...), in its order."""
    names = {word.strip().lower() for word in text.split("|")}
    bits = 0
    for name in names:
        if name.startswith("0x"):
            try:
                bits |= int(name, 16)
            except ValueError:
                continue
        else:
            bits |= next((bit for bit, nft, _ in _FLAG_BITS if nft == name), 0)
    order = ("SYN", "ACK", "FIN", "RST", "PSH", "URG")
    words = {word for bit, _, word in _FLAG_BITS if bits & bit}
    return [word for word in order if word in words]


def _read_verdict(table: str, chain: str, rest: str) -> RuleVerdict:
    rule = _RULE.match(rest)
    if rule:
        verdict, target = _verdict(rule["verdict"])
        text = _COUNTER.sub("counter", rule["rule"]).strip()
        return RuleVerdict(table, chain, "rule", None, verdict, target, text)
    policy = _POLICY.match(rest)
    if policy:
        return RuleVerdict(table, chain, "policy", None, policy["verdict"].upper(), None, None)
    # A return report (the end of a chain reached without a verdict).
    verdict, target = _verdict(rest) if rest else ("RETURN", None)
    return RuleVerdict(table, chain, "return", None, "RETURN", target or None, None)


def _verdict(text: str) -> tuple[str, str | None]:
    """`accept`, `jump services`, `goto X` → ("ACCEPT", None), ("JUMP", "services"), ..."""
    found = _VERDICT.match(text.strip())
    if not found:
        return text.upper(), None
    name = found["verdict"].upper()
    target = found["target"] if name in ("JUMP", "GOTO") else None
    return name, target
