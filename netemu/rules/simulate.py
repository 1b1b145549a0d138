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

The rules may come from a file (`netemu trace --offline --rules`), so they
are checked first as iptables-restore checks them (every rule's chain
declared, every jump to a chain or target that exists, addresses, ports,
probabilities, marks and DNAT destinations in range), and the walk is
bounded as the kernel bounds it: jumps that loop back to a chain they came
from are refused before the walk (the kernel refuses such a table with
ELOOP: "iptables-restore: line N failed"), as are chains nested more than
MAX_DEPTH jumps deep and walks of more than MAX_STEPS rule checks (random
matches fork the walk, and forks can multiply). Each is a SimulationError
naming the rule's line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import NamedTuple

import netaddr

from netemu.rules import names as n
from netemu.rules.model import BUILTIN_CHAINS, ParseError, Rule, RuleSet
from netemu.rules.spec import Match, RuleSpec, mark_pair, mark_target, parse_args

LOOPBACK = netaddr.IPNetwork("127.0.0.0/8")

# iptables' verdicts and the target extensions of iptables 1.8
# (iptables-extensions(8)). Any other -j name must be a chain of the table:
# iptables-restore refuses it ("Couldn't load target").
KNOWN_TARGETS = frozenset(
    {
        "ACCEPT",
        "DROP",
        "RETURN",
        "QUEUE",
        "AUDIT",
        "CHECKSUM",
        "CLASSIFY",
        "CLUSTERIP",
        "CONNMARK",
        "CONNSECMARK",
        "CT",
        "DNAT",
        "DNPT",
        "DSCP",
        "ECN",
        "HL",
        "HMARK",
        "IDLETIMER",
        "LED",
        "LOG",
        "MARK",
        "MASQUERADE",
        "MIRROR",
        "NETMAP",
        "NFLOG",
        "NFQUEUE",
        "NOTRACK",
        "RATEEST",
        "REDIRECT",
        "REJECT",
        "SECMARK",
        "SET",
        "SNAT",
        "SNPT",
        "SYNPROXY",
        "TCPMSS",
        "TCPOPTSTRIP",
        "TEE",
        "TOS",
        "TPROXY",
        "TRACE",
        "TTL",
        "ULOG",
    }
)
_PORT_OPTIONS = frozenset(
    ("dport", "destination-port", "dports", "sport", "source-port", "sports", "ports")
)

# kube-proxy nests chains 3 deep (KUBE-SERVICES → KUBE-SVC → KUBE-SEP);
# iptables-nft refused a 30th nested jump here (EMLINK), and the legacy
# kernel has no small limit, so 64 refuses only what no node needs.
MAX_DEPTH = 64
# A packet to one of 10,000 Services × 5 endpoints takes about 10,000 rule
# checks (one per KUBE-SERVICES rule), so a dump at read_rules' size limit
# (about 35,000 such Services) about 35,000; rules that fork at every level
# would otherwise walk for hours (100,000 checks of such rules take ~1 s).
MAX_STEPS = 100_000

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


@dataclass(frozen=True, slots=True)
class _Trail:
    """The rules matched so far, newest first: adding one costs the same
    however many came before (a walk may match thousands), and forked
    walks share what they matched before the fork."""

    rule: MatchedRule
    before: _Trail | None

    def rules(self) -> tuple[MatchedRule, ...]:
        found: list[MatchedRule] = []
        trail: _Trail | None = self
        while trail is not None:
            found.append(trail.rule)
            trail = trail.before
        return tuple(reversed(found))


@dataclass(frozen=True)
class _State:
    dst: str
    dport: int
    mark: int = 0
    dnat: str | None = None  # "ip:port"
    snat: bool = False
    probability: float = 1.0
    accepted: bool = False
    matched: _Trail | None = None


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

# (verdict, state): RETURN | ACCEPT | DROP | REJECT | PASS, or NEXT (from a
# target: go on with the chain's next rule).
_Outcome = tuple[str, _State]


class SimulationError(ParseError):
    """Rules the simulator cannot walk (see the module docstring); the
    message names the rule's line, as ParseError does."""


class _Entry(NamedTuple):
    args: str
    spec: RuleSpec
    line_no: int


@dataclass(frozen=True)
class _Pending:
    """Work left in one chain: walk on from rule `index` with `state`, or
    (index None) hand on `verdict` as the chain's outcome."""

    index: int | None
    verdict: str
    state: _State


class Simulator:
    def __init__(self, ruleset: RuleSet, local_ips: list[str]) -> None:
        self.ruleset = ruleset
        self.local = [netaddr.IPAddress(ip) for ip in local_ips]
        self.assumptions: list[str] = [NEW_CONNECTION]
        self._chains: dict[tuple[str, str], list[_Entry]] = {}
        # A set: Table.chains is a list, and a dump declares thousands.
        self._declared = {
            (name, chain)
            for name, table in ruleset.tables.items()
            for chain in (*table.chains, *table.policies)
        }
        for table_name, table in ruleset.tables.items():
            for rule in table.rules:
                self._chains.setdefault((table_name, rule.chain), []).append(_entry(rule))
        self._check_rules()
        self.masq_bit = _masquerade_bit(self._chains)
        self._check_jumps()
        self._steps = 0
        self.packet = Packet("0.0.0.0", "0.0.0.0", 0)

    def _is_chain(self, table: str, name: str) -> bool:
        return (table, name) in self._chains or (table, name) in self._declared

    def _check_rules(self) -> None:
        """Refuse what iptables-restore refuses, in every rule (not only
        those a packet meets): a rule in a chain never declared, a jump to a chain or target that
        does not exist, a value the simulator would read that is out of
        range (one bad rule is a SimulationError, never a traceback)."""
        builtin = {(table, chain) for table, chains in BUILTIN_CHAINS.items() for chain in chains}
        for (table, chain), entries in self._chains.items():
            if (table, chain) not in self._declared and (table, chain) not in builtin:
                raise SimulationError(
                    entries[0].line_no,
                    f"chain {chain} of table {table} is not declared "
                    f"(no ':{chain} - [0:0]' line): iptables-restore refuses its rules",
                )
            for entry in entries:
                target = entry.spec.target
                known = target is None or target in KNOWN_TARGETS
                if not known and not self._is_chain(table, str(target)):
                    raise SimulationError(
                        entry.line_no,
                        f"rule {_shown(entry.args)}: no chain or target named {target!r} "
                        f"in table {table}",
                    )
                try:
                    check_rule(entry.spec)
                except (ValueError, IndexError, netaddr.AddrFormatError) as exc:
                    raise _unreadable(entry.line_no, f"rule {_shown(entry.args)}", exc) from None

    def _check_jumps(self) -> None:
        """Refuse jump loops and chains nested deeper than MAX_DEPTH among
        the chains a built-in chain leads to (as the kernel checks a table:
        a chain nothing jumps to may loop, it is never entered)."""
        for table in self.ruleset.tables:
            jumps: dict[str, list[tuple[str, int]]] = {}
            for (name, chain), entries in self._chains.items():
                if name == table:
                    jumps[chain] = [
                        (e.spec.target, e.line_no)
                        for e in entries
                        if e.spec.target is not None and self._is_chain(table, e.spec.target)
                    ]
            below: dict[str, int] = {}  # chain → the most nested jumps below it
            for root in BUILTIN_CHAINS.get(table, ()):
                if root in jumps and root not in below:
                    _walk_jumps(root, jumps, below)

    def _step(self, line_no: int) -> None:
        self._steps += 1
        if self._steps > MAX_STEPS:
            raise SimulationError(
                line_no,
                f"the packet's walk needs more than {MAX_STEPS:,} rule checks "
                "(rules that lead into the same chains over and over, or random matches "
                "that fork it): not simulated",
            )

    def is_local(self, ip: str) -> bool:
        addr = netaddr.IPAddress(ip)
        return addr in LOOPBACK or addr in self.local

    def run(self, packet: Packet) -> Simulation:
        self.packet = packet
        self._steps = 0
        local_origin = self.is_local(packet.src)
        start = _State(dst=packet.dst, dport=packet.dport)
        paths = [finish_path(st, v) for v, st in self._hooks(start, local_origin)]
        return Simulation(packet, local_origin, paths, self.assumptions)

    def begin(self, packet: Packet) -> None:
        """Start a walk of `packet` made chain by chain from outside (the
        nftables simulator walks iptables-nft's built-in chains among its
        own base chains, with walk_builtin)."""
        self.packet = packet
        self._steps = 0

    def walk_builtin(self, table: str, chain: str, st: _State) -> Iterator[_Outcome]:
        """The outcomes of one built-in chain for `st` (after begin):
        RETURN when the packet reaches its end (its policy applies)."""
        yield from self._chain(table, chain, 0, st)

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
        """The outcomes of walking `chain` from rule `start`, depth first.

        The rest of a chain after a rule that lets the packet go on is
        walked in this loop, not by a nested call, so a chain of any length
        costs one stack frame; when a rule forks the walk, what is left
        waits on `todo` in the order a depth-first walk meets it."""
        rules = self._chains.get((table, chain), [])
        todo = [_Pending(start, "NEXT", st)]
        while todo:
            pending = todo.pop()
            if pending.index is None:
                yield pending.verdict, pending.state
                continue
            index, st = pending.index, pending.state
            while index < len(rules):
                args, spec, line_no = rules[index]
                self._step(line_no)
                try:
                    p = self._matches(spec, st)
                    if p == 0.0:
                        index += 1
                        continue
                    hit = replace(
                        st,
                        probability=st.probability * p,
                        matched=_Trail(
                            MatchedRule(table, chain, f"-A {chain} {args}".rstrip()), st.matched
                        ),
                    )
                    outcomes = list(self._target(table, spec, hit))
                except SimulationError:
                    raise
                except (ValueError, IndexError, netaddr.AddrFormatError) as exc:
                    # Arguments the simulator cannot read (a bad address,
                    # port, mark or probability): the rule's line, never a
                    # traceback.
                    raise _unreadable(line_no, f"rule {_shown(args)}", exc) from None
                if p < 1.0:
                    # A random statistic match: the miss goes on once
                    # everything the match leads to has been walked.
                    todo.append(
                        _Pending(
                            index + 1, "NEXT", replace(st, probability=st.probability * (1.0 - p))
                        )
                    )
                elif len(outcomes) == 1 and outcomes[0][0] == "NEXT":
                    index, st = index + 1, outcomes[0][1]
                    continue
                todo.extend(
                    _Pending(index + 1 if verdict == "NEXT" else None, verdict, out)
                    for verdict, out in reversed(outcomes)
                )
                break
            else:
                yield "RETURN", st

    def _target(self, table: str, spec: RuleSpec, st: _State) -> Iterator[_Outcome]:
        target = spec.target
        if target is None:
            yield "NEXT", st
        elif target in ("ACCEPT",):
            yield "ACCEPT", replace(st, accepted=True)
        elif target in ("DROP", "REJECT"):
            yield target, st
        elif target == "RETURN":
            yield "RETURN", st
        elif target == "MARK":
            value, mask = mark_target(spec)
            yield "NEXT", replace(st, mark=(st.mark & ~mask & 0xFFFFFFFF) ^ value)
        elif target == "DNAT":
            ip, port = _dnat_destination(spec)
            ip, dport = ip or st.dst, port or st.dport
            yield "ACCEPT", replace(st, dst=ip, dport=dport, dnat=f"{ip}:{dport}")
        elif target in ("MASQUERADE", "SNAT"):
            yield "ACCEPT", replace(st, snat=True)
        elif target in ("LOG", "NFLOG", "TRACE", "CT", "CONNMARK", "NOTRACK", "CHECKSUM"):
            yield "NEXT", st
        elif self._is_chain(table, target):
            for verdict, out in self._chain(table, target, 0, st):
                if verdict == "RETURN" and not spec.goto:
                    yield "NEXT", out
                else:
                    yield verdict, out
        else:
            self._assume(f"target {target} is not simulated; the walk continues past it")
            yield "NEXT", st

    # ---------------------------------------------------------------- matching

    def _matches(self, spec: RuleSpec, st: _State) -> float:
        pkt = self.packet
        for key, (value, negated) in spec.core.items():
            if key == "src":
                ok = netaddr.IPAddress(pkt.src) in _network(value)
            elif key == "dst":
                ok = netaddr.IPAddress(st.dst) in _network(value)
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
                return _probability(prob.values[0])
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


def finish_path(st: _State, verdict: str) -> Path:
    """The Path a walk that ended with `verdict` took."""
    if verdict not in ("DROP", "REJECT"):
        verdict = "DNAT" if st.dnat else ("ACCEPT" if st.accepted else "NONE")
    rules = st.matched.rules() if st.matched is not None else ()
    return Path(verdict, st.dnat, st.probability, st.snat, rules)


def simulate(ruleset: RuleSet, local_ips: list[str], packet: Packet) -> Simulation:
    return Simulator(ruleset, local_ips).run(packet)


def _port_in(port: int, spec: str) -> bool:
    return any(low <= port <= high for low, high in _port_ranges(spec))


@lru_cache(maxsize=4096)
def _port_ranges(spec: str) -> tuple[tuple[int, int], ...]:
    """`80`, `30000:32767`, `80,443` (multiport) as ranges; iptables
    refuses a port outside 0-65535 ("invalid port/service")."""
    ranges = []
    for part in spec.split(","):
        low, sep, high = part.partition(":")
        first, last = _port(low or "0"), _port(high or "65535") if sep else _port(low)
        if first > last:
            raise ValueError(f"port range {part!r} runs backwards")
        ranges.append((first, last))
    return tuple(ranges)


def _port(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"port {text!r} is not a number")
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {text} is not in 0-65535")
    return port


@lru_cache(maxsize=65536)
def _network(text: str) -> netaddr.IPNetwork:
    # Cached: a dump names the same addresses in rule after rule, and the
    # walk checks them again for every packet.
    return netaddr.IPNetwork(text)


def _probability(text: str) -> float:
    probability = float(text)
    if not 0.0 <= probability <= 1.0:  # also refuses nan
        raise ValueError(f"--probability {text} is not between 0 and 1")
    return probability


def _dnat_destination(spec: RuleSpec) -> tuple[str | None, int | None]:
    """DNAT's `--to-destination ip[-ip][:port[-port]]`: the first address
    and port (None where not given: the packet's own)."""
    to = spec.target_option("to-destination")
    if to is None:
        return None, None
    address, _, ports = to.values[0].partition(":")
    ip = address.split("-")[0] or None
    if ip is not None:
        netaddr.IPAddress(ip)  # refuses what is no IPv4 address
    port = _port(ports.split("-")[0]) if ports else None
    if port == 0:
        raise ValueError("port 0 is not a DNAT destination port")
    return ip, port


def check_rule(spec: RuleSpec) -> None:
    """Raise ValueError (or netaddr's AddrFormatError) for a value
    iptables-restore itself refuses, in the parts the simulator reads:
    addresses, ports, probabilities, marks and DNAT destinations."""
    for key, (value, _) in spec.core.items():
        if key in ("src", "dst"):
            _network(value)
    for m in spec.matches:
        for opt in m.options:
            if m.module in ("tcp", "udp", "sctp", "multiport") and opt.name in _PORT_OPTIONS:
                _port_ranges(opt.values[0])
            elif m.module == "statistic" and opt.name == "probability":
                _probability(opt.values[0])
            elif m.module == "mark" and opt.name == "mark":
                mark_pair(opt.values[0])
    if spec.target == "MARK":
        mark_target(spec)
    elif spec.target == "DNAT":
        _dnat_destination(spec)


def _masquerade_bit(chains: dict[tuple[str, str], list[_Entry]]) -> int:
    """The bit KUBE-MARK-MASQ sets (kube-proxy's masqueradeBit; 0x4000 by default)."""
    for entry in chains.get(("nat", n.KUBE_MARK_MASQ), []):
        if entry.spec.target == "MARK":
            try:
                return mark_target(entry.spec)[0]
            except (ValueError, IndexError):
                raise SimulationError(
                    entry.line_no, f"rule {_shown(entry.args)}: cannot read its mark"
                ) from None
    return 1 << 14


def _entry(rule: Rule) -> _Entry:
    try:
        spec = parse_args(rule.args)
    except (ValueError, IndexError) as exc:
        raise _unreadable(rule.line_no, f"rule {_shown(rule.args)}", exc) from None
    return _Entry(rule.args, spec, rule.line_no)


def _unreadable(line_no: int, what: str, exc: Exception) -> SimulationError:
    # An IndexError is an option given without its value (`--dport` last).
    detail = "an option without its value" if isinstance(exc, IndexError) else str(exc)
    return SimulationError(line_no, f"{what}: {detail}")


def _walk_jumps(root: str, jumps: dict[str, list[tuple[str, int]]], below: dict[str, int]) -> None:
    """Depth-first through the jumps from `root` (with a stack of its own:
    the nesting is what is being checked), filling `below`; a jump back to
    a chain on the current path is a loop."""
    path = [root]
    on_path = {root: 0}
    branches = [iter(jumps.get(root, []))]
    while path:
        step = next(branches[-1], None)
        if step is None:
            chain = path.pop()
            branches.pop()
            del on_path[chain]
            below[chain] = max((below[t] + 1 for t, _ in jumps.get(chain, [])), default=0)
            continue
        target, line_no = step
        if target in on_path:
            loop = " -> ".join([*path[on_path[target] :], target])
            raise SimulationError(
                line_no,
                f"chains jump in a loop: {loop} (iptables-restore refuses this: "
                "the kernel answers ELOOP)",
            )
        nesting = len(path) + below.get(target, 0)
        if nesting > MAX_DEPTH:
            raise SimulationError(
                line_no,
                f"chain {target} is nested {nesting} jumps deep under {root} "
                f"(more than the {MAX_DEPTH} the simulator follows)",
            )
        if target not in below:
            on_path[target] = len(path)
            path.append(target)
            branches.append(iter(jumps.get(target, [])))


def _shown(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
