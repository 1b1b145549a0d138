"""Parsing the kernel's rule traces as `xtables-monitor --trace` prints them.

With the nft backend, a `-j TRACE` rule in the raw table makes the kernel
report every rule a packet matches, table by table and hook by hook, and
`xtables-monitor --trace` (iptables 1.8.9) prints those reports as text:

    PACKET: 2 750ec18a IN=eth0 MACSRC=.. SRC=192.168.56.20 DST=192.168.56.11 LEN=60 TOS=0x0
        TTL=64 ID=36662 DF SPORT=41522 DPORT=30080 SYN
     TRACE: 2 750ec18a nat:PREROUTING:rule:0x19:JUMP:KUBE-SERVICES  -4 -t nat -A PREROUTING
        -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
     TRACE: 2 750ec18a nat:PREROUTING:policy:ACCEPT

(one line each; wrapped here).

The kernel sends the packet headers with the first report of every base
chain evaluation (one hook of one table), so a PACKET line starts one
*pass* and the TRACE lines after it are that pass's verdicts. Trace ids are
not unique: the kernel derives them from a hash and reuses them for later
packets, and reports of two passes can interleave (a REJECT emits its ICMP
error, whose own passes are printed before the REJECT rule's verdict).
A TRACE line therefore belongs to the latest pass with the same trace id.

What the text does not say, and this module does not guess beyond the
evidence: xtables-monitor prints no protocol, only SPORT/DPORT for
UDP/TCP/SCTP/DCCP and flag words for TCP, and nothing at all past the IP
header for ICMP (no type, code or echo id), so ICMP is recognised only by a
matched `-p icmp` rule in one of the packet's passes. A REJECT rule shows
the verdict DROP (the kernel's own verdict after the target sent its ICMP
error or RST); RuleVerdict.target names the REJECT.

Owns: parse_trace and the RuleVerdict / TracedPacket records. Pure: takes
text and returns data; running xtables-monitor is netemu.kernel's job.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# Verdicts the kernel reports as raw numbers (xtables-monitor prints only the
# ones it knows by name). NF_* are netfilter's, NFT_* are nf_tables' internal
# verdicts (negative, printed as 32-bit two's complement).
_NUMERIC_VERDICTS: dict[int, str] = {
    0: "DROP",  # NF_DROP
    1: "ACCEPT",  # NF_ACCEPT
    2: "STOLEN",  # NF_STOLEN
    3: "QUEUE",  # NF_QUEUE (queue number in the upper 16 bits)
    4: "REPEAT",  # NF_REPEAT
    5: "STOP",  # NF_STOP
    -1: "CONTINUE",  # NFT_CONTINUE
    -2: "BREAK",  # NFT_BREAK
    -3: "JUMP",  # NFT_JUMP
    -4: "GOTO",  # NFT_GOTO
    -5: "RETURN",  # NFT_RETURN
}

# TCP flag words in the order xtables-monitor prints them.
TCP_FLAG_WORDS = ("SYN", "ACK", "FIN", "RST", "PSH", "URG")
# iptables-nft names its base chains after their hooks.
HOOKS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")

_PACKET = re.compile(r"^\s*PACKET:\s+(?P<family>\d+)\s+(?P<id>[0-9a-fA-F]+)(?:\s+(?P<rest>.*))?$")
_TRACE = re.compile(
    r"^\s*TRACE:\s+(?P<family>\d+)\s+(?P<id>[0-9a-fA-F]+)\s+(?P<where>\S+)(?:\s+(?P<rule>.*))?$"
)
_WHERE = re.compile(
    r"^(?P<table>[^:]+):(?P<chain>.+?):(?P<kind>rule|return|policy)(?::(?P<rest>.*))?$"
)
# "-4 -t nat " before the rule; newer versions may print counters first.
_RULE_PREFIX = re.compile(r"^(?:\[\d+:\d+\]\s+)?-[46]\s+-t\s+\S+\s+")
_GLUED_ID = re.compile(r"^(?P<id>\d+)(?P<rest>\D.*)$")
_TARGET = re.compile(r"(?:^|\s)-([jg])\s+(\S+)")


def rule_target(rule: str) -> tuple[str, str] | None:
    """("j" or "g", target) of an iptables rule text's `-j`/`-g`, or None.

    A rule in nft's own syntax (as `nft monitor trace` prints kube-proxy's
    nftables rules, and iptables-nft's rules too) has no `-j`: its final
    statement stands for the target, named as iptables would name it
    ("DNAT", "MASQUERADE", "REJECT", ...; a `jump`/`goto` gives the chain)."""
    found = _TARGET.findall(rule)
    if found:
        return (found[-1][0], found[-1][1])
    if rule.startswith("-"):
        return None
    return nft_statement_target(rule)


# nft statements that decide a packet, by the iptables target they stand for.
_NFT_STATEMENTS = (
    (re.compile(r"(?:^|\s)dnat\s+(?:ip6?\s+)?to\s"), "DNAT"),
    (re.compile(r"(?:^|\s)snat\s+(?:ip6?\s+)?to\s"), "SNAT"),
    (re.compile(r"(?:^|\s)masquerade(?:\s|$)"), "MASQUERADE"),
    (re.compile(r"(?:^|\s)redirect(?:\s|$)"), "REDIRECT"),
    (re.compile(r"(?:^|\s)reject(?:\s|$)"), "REJECT"),
    (re.compile(r"(?:^|\s)drop\s*$"), "DROP"),
    (re.compile(r"(?:^|\s)accept\s*$"), "ACCEPT"),
    (re.compile(r"(?:^|\s)return\s*$"), "RETURN"),
    (re.compile(r"(?:^|\s)(?:meta\s+)?mark\s+set\s"), "MARK"),
)
_NFT_JUMP = re.compile(r"(?:^|\s)(jump|goto)\s+(\S+)\s*$")


def nft_statement_target(rule: str) -> tuple[str, str] | None:
    """("j" or "g", target) of an nft rule text: the chain of a final
    `jump`/`goto`, else the iptables name of its deciding statement. A
    verdict map (`vmap`) has no single target: None."""
    text = re.sub(r'"[^"]*"', '""', rule).strip()
    if "vmap" in text.split():
        return None
    jump = _NFT_JUMP.search(text)
    if jump:
        return ("g" if jump[1] == "goto" else "j", jump[2])
    for pattern, target in _NFT_STATEMENTS:
        if pattern.search(text):
            return ("j", target)
    return None


_PROTO_MATCH = re.compile(r"(?:^|\s)(!\s+)?-p\s+(\S+)")
_PROTO_NUMBERS = {"1": "icmp", "6": "tcp", "17": "udp", "132": "sctp", "33": "dccp"}


@dataclass(frozen=True)
class RuleVerdict:
    """One TRACE line: a rule that matched, a chain's policy, or a return."""

    table: str
    chain: str
    kind: str  # "rule" | "return" | "policy"
    handle: int | None
    # ACCEPT, DROP, CONTINUE, RETURN, JUMP, GOTO, BREAK, QUEUE, STOLEN, ...:
    # the kernel's verdict with JUMP/GOTO split from their target and
    # numeric nf_tables verdicts named. A REJECT rule reports DROP (see
    # `target` for the iptables target that decided it).
    verdict: str
    target_chain: str | None  # for JUMP/GOTO (and a return, when the kernel names it)
    rule: str | None  # "-A <chain> <args>" as printed after "-4 -t <table> "

    @property
    def target(self) -> str | None:
        """The rule's iptables target (`-j` or `-g`): "DNAT", "MASQUERADE",
        "REJECT", "MARK", "KUBE-SVC-...", ... None without rule text."""
        if self.rule is None:
            return None
        found = rule_target(self.rule)
        return found[1] if found else None

    @property
    def is_terminal(self) -> bool:
        """Whether this verdict ends the pass (ACCEPT/DROP/... rather than
        CONTINUE, JUMP, GOTO, RETURN or BREAK)."""
        return self.verdict not in ("CONTINUE", "JUMP", "GOTO", "RETURN", "BREAK")


@dataclass(frozen=True)
class TracedPacket:
    """One pass: a PACKET line (the headers when a base chain was entered)
    and the verdicts of that table's evaluation of the packet."""

    trace_id: str
    # As printed: IN, OUT, MACSRC, MACDST, MACPROTO, SRC, DST, LEN, TOS, TTL,
    # ID, SPORT, DPORT, MARK, FRAG, OPT, NFPROTO; plus PROTO when another pass
    # of the same packet shows the protocol (xtables-monitor prints none).
    fields: dict[str, str]
    flags: tuple[str, ...]  # bare words: TCP flags (SYN, ACK, ...) and IP flags (DF, MF, CE)
    verdicts: tuple[RuleVerdict, ...]

    @property
    def src(self) -> str:
        """The source address ("" for a pass whose PACKET line was not seen)."""
        return self.fields.get("SRC", "")

    @property
    def dst(self) -> str:
        return self.fields.get("DST", "")

    @property
    def proto(self) -> str:
        """ "tcp", "udp", "icmp", ... as far as the trace shows it, else "".

        xtables-monitor never prints the protocol. Evidence, strongest
        first: a PROTO field (set by parse_trace from the packet's other
        passes, see there), TCP flag words, a matched rule's `-p <proto>` (a
        traced rule is one whose matches all passed), ports without TCP
        flags (UDP; SCTP/DCCP/UDP-Lite look the same). ICMP with no
        protocol-specific rule on its path is indistinguishable from any
        other portless protocol, so it is "".
        """
        if "PROTO" in self.fields:
            return self.fields["PROTO"].lower()
        return _strong_proto(self.flags, self.verdicts) or ("udp" if "SPORT" in self.fields else "")

    @property
    def sport(self) -> int | None:
        return _int(self.fields.get("SPORT"))

    @property
    def dport(self) -> int | None:
        return _int(self.fields.get("DPORT"))

    @property
    def ttl(self) -> int | None:
        """The TTL; an IPv6 packet's hop limit (HOPLIMIT=)."""
        return _int(self.fields.get("TTL", self.fields.get("HOPLIMIT")))

    @property
    def ip_id(self) -> int | None:
        """The IP id; for IPv6, which has none, its flow label (FLOWLBL=),
        as netemu.trace.packets identifies IPv6 packets."""
        return _int(self.fields.get("ID", self.fields.get("FLOWLBL")))

    @property
    def length(self) -> int | None:
        return _int(self.fields.get("LEN"))

    @property
    def mark(self) -> int | None:
        """The packet mark (0 when the line has no MARK=, as the kernel omits a zero mark)."""
        value = self.fields.get("MARK")
        return int(value, 16) if value is not None else (0 if self.fields else None)

    @property
    def in_iface(self) -> str | None:
        return self.fields.get("IN")

    @property
    def out_iface(self) -> str | None:
        return self.fields.get("OUT")

    @property
    def tcp_flags(self) -> tuple[str, ...]:
        return tuple(flag for flag in self.flags if flag in TCP_FLAG_WORDS)

    @property
    def table(self) -> str | None:
        """The table this pass evaluated (raw, mangle, nat, filter, ...)."""
        return self.verdicts[0].table if self.verdicts else None

    @property
    def hook(self) -> str | None:
        """The base chain this pass entered (PREROUTING, INPUT, FORWARD,
        OUTPUT, POSTROUTING): the chain of a policy verdict (only base chains
        have one) or the first verdict in a chain named after a hook. Not
        simply the first verdict: in the pass where `-j TRACE` switches
        tracing on, the jump into the TRACE rule's chain is not reported."""
        for verdict in self.verdicts:
            if verdict.kind == "policy" or verdict.chain in HOOKS:
                return verdict.chain
        return self.verdicts[0].chain if self.verdicts else None

    @property
    def final(self) -> RuleVerdict | None:
        """The verdict that ended the pass (the last one printed)."""
        return self.verdicts[-1] if self.verdicts else None


def parse_verdict(text: str) -> tuple[str, str | None]:
    """Verdict text as printed ("ACCEPT", "JUMP:KUBE-SERVICES", "0xfffffffb")
    to (verdict, target_chain)."""
    name, _, target = text.partition(":")
    if name in ("JUMP", "GOTO"):
        return name, target or None
    if name.lower().startswith("0x"):
        try:
            number = int(name, 16)
        except ValueError:
            return text, None
        if number >= 1 << 31:
            number -= 1 << 32
        if number >= 0:
            number &= 0xFF  # NF_QUEUE carries the queue number in the upper bits
        return _NUMERIC_VERDICTS.get(number, name), None
    return text, None


def parse_trace(text: str) -> list[TracedPacket]:
    """Passes in the order their PACKET lines appear. TRACE lines join the
    latest pass with their trace id; a TRACE line with no such pass starts
    one with no headers. Blank and unrecognised lines are skipped."""
    passes: list[_Pass] = []
    latest: dict[str, _Pass] = {}
    for line in text.splitlines():
        packet = _PACKET.match(line)
        if packet:
            current = _Pass(packet["id"].lower())
            _read_headers(packet["rest"] or "", current)
            passes.append(current)
            latest[current.trace_id] = current
            continue
        trace = _TRACE.match(line)
        if not trace:
            continue
        verdict = _read_verdict(trace["where"], trace["rule"])
        if verdict is None:
            continue
        trace_id = trace["id"].lower()
        owner = latest.get(trace_id)
        if owner is None:
            owner = _Pass(trace_id)
            passes.append(owner)
            latest[trace_id] = owner
        owner.verdicts.append(verdict)
    _share_protocol(passes)
    return [
        TracedPacket(p.trace_id, dict(p.fields), tuple(p.flags), tuple(p.verdicts)) for p in passes
    ]


def _strong_proto(flags: Sequence[str], verdicts: Sequence[RuleVerdict]) -> str | None:
    """The protocol shown by TCP flags or by a matched rule's `-p`."""
    if any(flag in TCP_FLAG_WORDS for flag in flags):
        return "tcp"
    for verdict in verdicts:
        if verdict.rule is None:
            continue
        for match in _PROTO_MATCH.finditer(verdict.rule):
            name = match[2].lower()
            if not match[1] and name not in ("all", "0"):
                return _PROTO_NUMBERS.get(name, name)
    return None


def _share_protocol(passes: list[_Pass]) -> None:
    """Give every pass of a packet the protocol one of its passes shows.

    The `-p icmp -j TRACE` rule that switched tracing on is reported in the
    raw pass only; the packet's nat and filter passes have no evidence of
    their own. A packet's passes share the trace id, IP id and length (NAT
    changes neither), which is what ties them here; PROTO is set only where
    the pass itself shows nothing stronger than ports.
    """
    shown: dict[tuple[str, str, str], str] = {}
    for p in passes:
        proto = _strong_proto(p.flags, p.verdicts)
        if proto and "ID" in p.fields:
            shown.setdefault((p.trace_id, p.fields["ID"], p.fields.get("LEN", "")), proto)
    for p in passes:
        key = (p.trace_id, p.fields.get("ID", ""), p.fields.get("LEN", ""))
        if key in shown and "PROTO" not in p.fields and _strong_proto(p.flags, p.verdicts) is None:
            p.fields["PROTO"] = shown[key]


class _Pass:
    def __init__(self, trace_id: str) -> None:
        self.trace_id = trace_id
        self.fields: dict[str, str] = {}
        self.flags: list[str] = []
        self.verdicts: list[RuleVerdict] = []


def _read_headers(text: str, into: _Pass) -> None:
    words = text.split()
    words.reverse()
    while words:
        word = words.pop()
        key, sep, value = word.partition("=")
        if sep:
            glued = _GLUED_ID.match(value) if key == "ID" else None
            if glued:
                # Older releases print no space after the IP id: "ID=5DF",
                # "ID=5SPORT=80". Put the rest back as a word of its own.
                value = glued["id"]
                words.append(glued["rest"])
            into.fields[key] = value
        elif word == "OPT" and words and words[-1].startswith("("):
            options, _, rest = words.pop()[1:].partition(")")
            into.fields["OPT"] = options
            if rest:
                words.append(rest)
        elif word.startswith("FRAG:"):
            into.fields["FRAG"] = word[len("FRAG:") :]
        elif word.isalpha() and word.isupper():
            into.flags.append(word)
        # Anything else (a link-layer dump after LL=) is not needed.


def _read_verdict(where: str, rule_text: str | None) -> RuleVerdict | None:
    match = _WHERE.match(where)
    if not match:
        return None
    kind, rest = match["kind"], match["rest"] or ""
    handle: int | None = None
    if kind == "rule":
        handle_text, _, rest = rest.partition(":")
        try:
            handle = int(handle_text, 16)
        except ValueError:
            return None
        verdict, target_chain = parse_verdict(rest)
    elif kind == "policy":
        verdict, target_chain = parse_verdict(rest)
    else:  # return: the kernel may name the chain it returns to
        verdict, target_chain = "RETURN", rest or None
    rule = None
    if kind == "rule" and rule_text and rule_text.strip():
        rule = _RULE_PREFIX.sub("", rule_text.strip(), count=1)
    return RuleVerdict(
        table=match["table"],
        chain=match["chain"],
        kind=kind,
        handle=handle,
        verdict=verdict,
        target_chain=target_chain,
        rule=rule,
    )


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value, 0) if value.lower().startswith("0x") else int(value)
    except ValueError:
        return None
