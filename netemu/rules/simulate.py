"""The offline simulator: walk one packet through a node's netfilter tables
in the kernel's hook order, recording every rule that matched.

Order: a packet from outside the node meets PREROUTING (raw, mangle, nat),
then the routing decision sends it to INPUT (mangle, filter, nat) when its
(possibly DNATed) destination is local, else to FORWARD (mangle, filter)
and POSTROUTING (mangle, nat). A packet whose source is one of the node's
addresses or loopback is local-origin: OUTPUT (raw, mangle, nat, filter),
POSTROUTING (mangle, nat), and INPUT when it stays on the node.

The packet is the first of a NEW connection: conntrack state NEW (plus DNAT
once translated), no `recent` entries (no session affinity yet). A random
`statistic` match forks the walk, so every endpoint a packet may reach is
found, each with its probability.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import netaddr

from netemu.rules import names as n
from netemu.rules.model import RuleSet
from netemu.rules.spec import Match, RuleSpec, mark_pair, mark_target, parse_args

LOOPBACK = netaddr.IPNetwork("127.0.0.0/8")

NEW_CONNECTION = (
    "the packet opens a NEW connection: conntrack state is NEW (and DNAT once "
    "translated), never ESTABLISHED, RELATED or INVALID"
)
NO_AFFINITY = "no session-affinity entry exists yet: every `-m recent --rcheck` match fails"


@dataclass(frozen=True)
class Packet:
    src: str
    dst: str
    dport: int
    proto: str = "tcp"
    sport: int = 40000


@dataclass(frozen=True)
class MatchedRule:
    table: str
    chain: str
    rule: str  # `-A CHAIN args`

    def to_dict(self) -> dict[str, str]:
        return {"table": self.table, "chain": self.chain, "rule": self.rule}


@dataclass(frozen=True)
class _State:
    dst: str
    dport: int
    mark: int = 0
    dnat: str | None = None  # "ip:port"
    snat: bool = False
    probability: float = 1.0
    accepted: bool = False
    matched: tuple[MatchedRule, ...] = ()


@dataclass(frozen=True)
class Path:
    """One way the packet can go (one per endpoint when load-balanced)."""

    verdict: str  # DNAT | ACCEPT | REJECT | DROP | NONE
    endpoint: str | None
    probability: float
    masquerade: bool
    rules: tuple[MatchedRule, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "endpoint": self.endpoint,
            "probability": round(self.probability, 6),
            "masquerade": self.masquerade,
            "rules": [r.to_dict() for r in self.rules],
        }


@dataclass
class Simulation:
    packet: Packet
    local_origin: bool
    paths: list[Path]
    assumptions: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        verdicts = [p.verdict for p in self.paths]
        return max(set(verdicts), key=verdicts.count) if verdicts else "NONE"

    @property
    def endpoints(self) -> list[str]:
        seen: list[str] = []
        for p in self.paths:
            if p.verdict == "DNAT" and p.endpoint and p.endpoint not in seen:
                seen.append(p.endpoint)
        return seen

    @property
    def masquerade(self) -> bool:
        return any(p.masquerade for p in self.paths if p.verdict == self.verdict)

    @property
    def rules(self) -> list[MatchedRule]:
        seen: dict[MatchedRule, None] = {}
        for p in self.paths:
            for r in p.rules:
                seen.setdefault(r, None)
        return list(seen)

    def to_dict(self) -> dict[str, object]:
        return {
            "packet": {
                "src": self.packet.src,
                "dst": self.packet.dst,
                "dport": self.packet.dport,
                "proto": self.packet.proto,
            },
            "localOrigin": self.local_origin,
            "verdict": self.verdict,
            "endpoints": self.endpoints,
            "masquerade": self.masquerade,
            "rules": [r.to_dict() for r in self.rules],
            "paths": [p.to_dict() for p in self.paths],
            "assumptions": self.assumptions,
        }


# (hook, tables in priority order)
Hook = tuple[str, tuple[str, ...]]
_PREROUTING: Hook = ("PREROUTING", ("raw", "mangle", "nat"))
_INPUT: Hook = ("INPUT", ("mangle", "filter", "nat"))
_FORWARD: Hook = ("FORWARD", ("mangle", "filter"))
_OUTPUT: Hook = ("OUTPUT", ("raw", "mangle", "nat", "filter"))
_POSTROUTING: Hook = ("POSTROUTING", ("mangle", "nat"))

_Outcome = tuple[str, _State]  # (RETURN | ACCEPT | DROP | REJECT | NAT, state)


class Simulator:
    def __init__(self, ruleset: RuleSet, local_ips: list[str]) -> None:
        self.ruleset = ruleset
        self.local = [netaddr.IPAddress(ip) for ip in local_ips]
        self.assumptions: list[str] = [NEW_CONNECTION]
        self.masq_bit = _masquerade_bit(ruleset)
        self._chains: dict[tuple[str, str], list[tuple[str, RuleSpec]]] = {}
        for table_name, table in ruleset.tables.items():
            for rule in table.rules:
                self._chains.setdefault((table_name, rule.chain), []).append(
                    (rule.args, parse_args(rule.args))
                )
        self.packet = Packet("0.0.0.0", "0.0.0.0", 0)

    def is_local(self, ip: str) -> bool:
        addr = netaddr.IPAddress(ip)
        return addr in LOOPBACK or addr in self.local

    def run(self, packet: Packet) -> Simulation:
        self.packet = packet
        local_origin = self.is_local(packet.src)
        start = _State(dst=packet.dst, dport=packet.dport)
        paths = [self._finish(st, v) for v, st in self._hooks(start, local_origin)]
        return Simulation(packet, local_origin, paths, self.assumptions)

    def _finish(self, st: _State, verdict: str) -> Path:
        if verdict not in ("DROP", "REJECT"):
            verdict = "DNAT" if st.dnat else ("ACCEPT" if st.accepted else "NONE")
        return Path(verdict, st.dnat, st.probability, st.snat, st.matched)

    def _hooks(self, st: _State, local_origin: bool) -> Iterator[_Outcome]:
        first = [_OUTPUT] if local_origin else [_PREROUTING]
        yield from self._through(first, st, local_origin)

    def _through(
        self, hooks: list[tuple[str, tuple[str, ...]]], st: _State, local_origin: bool
    ) -> Iterator[_Outcome]:
        if not hooks:
            yield "PASS", st
            return
        (hook, tables), rest = hooks[0], hooks[1:]
        for verdict, out in self._hook(hook, tables, st):
            if verdict in ("DROP", "REJECT"):
                yield verdict, out
                continue
            following = rest
            if hook == "PREROUTING":
                following = [_INPUT] if self.is_local(out.dst) else [_FORWARD, _POSTROUTING]
            elif hook == "OUTPUT":
                following = [_POSTROUTING, _INPUT] if self.is_local(out.dst) else [_POSTROUTING]
            yield from self._through(following, out, local_origin)

    def _hook(self, hook: str, tables: tuple[str, ...], st: _State) -> Iterator[_Outcome]:
        if not tables:
            yield "PASS", st
            return
        table, rest = tables[0], tables[1:]
        if hook == "POSTROUTING" and table == "nat":
            # The mark KUBE-MARK-MASQ set is what kube-proxy masquerades on.
            st = replace(st, snat=st.snat or bool(st.mark & self.masq_bit))
        if (table, hook) not in self._chains:
            yield from self._hook(hook, rest, st)
            return
        for verdict, out in self._chain(table, hook, 0, st):
            if verdict in ("DROP", "REJECT"):
                yield verdict, out
            else:
                yield from self._hook(hook, rest, out)

    def _chain(self, table: str, chain: str, start: int, st: _State) -> Iterator[_Outcome]:
        rules = self._chains.get((table, chain), [])
        for index in range(start, len(rules)):
            args, spec = rules[index]
            p = self._matches(spec, st)
            if p == 0.0:
                continue
            hit = replace(
                st,
                probability=st.probability * p,
                matched=(*st.matched, MatchedRule(table, chain, f"-A {chain} {args}".rstrip())),
            )
            if p < 1.0:
                # A random statistic match: follow both the match and the miss.
                yield from self._target(table, chain, index, spec, hit)
                st = replace(st, probability=st.probability * (1.0 - p))
                continue
            yield from self._target(table, chain, index, spec, hit)
            return
        yield "RETURN", st

    def _target(
        self, table: str, chain: str, index: int, spec: RuleSpec, st: _State
    ) -> Iterator[_Outcome]:
        target = spec.target
        if target is None:
            yield from self._chain(table, chain, index + 1, st)
        elif target in ("ACCEPT",):
            yield "ACCEPT", replace(st, accepted=True)
        elif target in ("DROP", "REJECT"):
            yield target, st
        elif target == "RETURN":
            yield "RETURN", st
        elif target == "MARK":
            value, mask = mark_target(spec)
            yield from self._chain(
                table, chain, index + 1, replace(st, mark=(st.mark & ~mask & 0xFFFFFFFF) ^ value)
            )
        elif target == "DNAT":
            to = spec.target_option("to-destination")
            dest = to.values[0] if to else st.dst
            ip, _, port = dest.partition(":")
            dport = int(port.split("-")[0]) if port else st.dport
            yield "ACCEPT", replace(st, dst=ip, dport=dport, dnat=f"{ip}:{dport}")
        elif target in ("MASQUERADE", "SNAT"):
            yield "ACCEPT", replace(st, snat=True)
        elif target in ("LOG", "NFLOG", "TRACE", "CT", "CONNMARK", "NOTRACK", "CHECKSUM"):
            yield from self._chain(table, chain, index + 1, st)
        elif (table, target) in self._chains or self.ruleset.table(table).has_chain(target):
            for verdict, out in self._chain(table, target, 0, st):
                if verdict == "RETURN" and not spec.goto:
                    yield from self._chain(table, chain, index + 1, out)
                else:
                    yield verdict, out
        else:
            self._assume(f"target {target} is not simulated; the walk continues past it")
            yield from self._chain(table, chain, index + 1, st)

    # ---------------------------------------------------------------- matching

    def _matches(self, spec: RuleSpec, st: _State) -> float:
        pkt = self.packet
        for key, (value, negated) in spec.core.items():
            if key == "src":
                ok = netaddr.IPAddress(pkt.src) in netaddr.IPNetwork(value)
            elif key == "dst":
                ok = netaddr.IPAddress(st.dst) in netaddr.IPNetwork(value)
            elif key == "proto":
                ok = value.lower() in ("all", "0", pkt.proto)
            else:
                self._assume(f"interface matches (-i/-o {value}) are not simulated: no match")
                return 0.0
            if ok == negated:
                return 0.0
        probability = 1.0
        for m in spec.matches:
            p = self._module(m, st)
            if p == 0.0:
                return 0.0
            probability *= p
        return probability

    def _module(self, m: Match, st: _State) -> float:
        pkt = self.packet
        if m.module in ("comment", "nfacct"):
            return 1.0
        if m.module in ("tcp", "udp", "sctp", "multiport"):
            if m.module != "multiport" and pkt.proto != m.module:
                return 0.0
            for opt in m.options:
                port = (
                    st.dport
                    if opt.name in ("dport", "destination-port", "dports")
                    else (pkt.sport if opt.name in ("sport", "source-port", "sports") else None)
                )
                if port is None:
                    continue
                if _port_in(port, opt.values[0]) == opt.negated:
                    return 0.0
            return 1.0
        if m.module == "addrtype":
            for opt in m.options:
                if opt.name not in ("src-type", "dst-type"):
                    continue
                ip = pkt.src if opt.name == "src-type" else st.dst
                types = opt.values[0].split(",")
                ok = ("LOCAL" in types and self.is_local(ip)) or (
                    "UNICAST" in types and not self.is_local(ip)
                )
                if ok == opt.negated:
                    return 0.0
            return 1.0
        if m.module in ("conntrack", "state"):
            for opt in m.options:
                if opt.name not in ("ctstate", "state"):
                    continue
                states = {"NEW"} | ({"DNAT"} if st.dnat else set())
                ok = bool(states & set(opt.values[0].split(",")))
                if ok == opt.negated:
                    return 0.0
            return 1.0
        if m.module == "mark":
            mark = m.get("mark")
            if mark is None:
                return 1.0
            value, mask = mark_pair(mark.values[0])
            ok = (st.mark & mask) == value
            return 1.0 if ok != mark.negated else 0.0
        if m.module == "statistic":
            mode = m.get("mode")
            prob = m.get("probability")
            if mode and mode.values[0] == "random" and prob:
                return float(prob.values[0])
            self._assume("statistic --mode nth is treated as matching every packet")
            return 1.0
        if m.module == "recent":
            if m.get("rcheck") or m.get("update"):
                self._assume(NO_AFFINITY)
                return 0.0
            return 1.0
        self._assume(f"match module {m.module!r} is not simulated: rules using it never match")
        return 0.0

    def _assume(self, text: str) -> None:
        if text not in self.assumptions:
            self.assumptions.append(text)


def simulate(ruleset: RuleSet, local_ips: list[str], packet: Packet) -> Simulation:
    return Simulator(ruleset, local_ips).run(packet)


def _port_in(port: int, spec: str) -> bool:
    for part in spec.split(","):
        low, _, high = part.partition(":")
        if int(low or 0) <= port <= int(high or low or 65535):
            return True
    return False


def _masquerade_bit(ruleset: RuleSet) -> int:
    """The bit KUBE-MARK-MASQ sets (kube-proxy's masqueradeBit; 0x4000 by default)."""
    table = ruleset.tables.get("nat")
    if table is not None:
        for rule in table.chain_rules(n.KUBE_MARK_MASQ):
            spec = parse_args(rule.args)
            if spec.target == "MARK":
                return mark_target(spec)[0]
    return 1 << 14
