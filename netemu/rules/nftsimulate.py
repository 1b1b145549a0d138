"""The offline simulator for nftables: walk one packet through a node's
nftables base chains (and its iptables-nft tables, when given) in the
kernel's hook and priority order, recording every rule that matched.

The result is the iptables simulator's (netemu.rules.simulate): the same
Packet, Simulation, Path and MatchedRule, the same JSON. A MatchedRule's
table is the nftables table (`ip kube-proxy`), its chain the chain's name,
its rule the rule's text as written (`nft list` prints it the same way,
less its `# handle`).

Order: the hooks as the iptables simulator walks them (PREROUTING, then
INPUT for a local destination or FORWARD and POSTROUTING; a local-origin
packet OUTPUT, POSTROUTING, and INPUT when it stays on the node). At each
hook, every base chain of a table of the packet's family runs in priority
order; iptables-nft's tables are base chains at their fixed priorities
(raw -300, mangle -150, nat -100 in PREROUTING and OUTPUT and 100 in INPUT
and POSTROUTING, filter 0, security 50), and at equal priority the
iptables table goes first (kubelet's and the CNI plugins' tables exist
before kube-proxy starts; the kernel runs equal priorities in the order
they were registered). `accept` ends one base chain, the packet goes on to
the next; `drop` and `reject` end the walk. The first NAT a packet gets at
a hook ends NAT at that hook: the kernel runs a hook's nat chains until one
of them sets up the mapping (nf_nat_inet_fn).

What kube-proxy's rules use is simulated (pkg/proxy/nftables/proxier.go;
its own tracer, helpers_test.go, reads the same rules): `ip[6] daddr/saddr`
against addresses, CIDRs, anonymous sets and named sets, concatenations
(`ip daddr . meta l4proto . th dport`) looked up in sets and verdict maps,
`numgen random mod N vmap { ... }` (a fork, each branch with probability
1/N, as the iptables simulator forks on `statistic`), `fib saddr|daddr type
local`, `ct state`, `ct status dnat`, `meta mark` tests and `mark set`,
`jump`/`goto`/`return`, `dnat to`, `masquerade`, `snat`, `reject`, `drop`,
`accept`, and the statements that do not decide (counter, log, comment,
`update @set`, `meta nftrace set`). Anything else is a SimulationError
naming the rule's line, never a silent guess. A chain's rules are read when
the walk first enters it (a node's table for 10,000 Services holds 120,000
rules, a packet meets a few dozen); the chains, sets and maps every rule
names are checked before the walk, and jumps that loop refused.

Assumed, and said in the result's assumptions: the packet opens a NEW
connection; the affinity sets kube-proxy fills with `update @affinity-...
{ ip saddr }` have no entry yet (as NO_AFFINITY in the iptables
simulator); interfaces are unknown offline, so `iifname`/`oifname` matches
never match.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import NamedTuple

import netaddr

from netemu.rules.model import RuleSet
from netemu.rules.nftmodel import NftRule, NftRuleset, NftSet, NftTable, unquote
from netemu.rules.simulate import (
    LOOPBACK,
    MAX_DEPTH,
    MAX_STEPS,
    NEW_CONNECTION,
    MatchedRule,
    Packet,
    Simulation,
    SimulationError,
    Simulator,
    _State,
    _Trail,
    _walk_jumps,
    finish_path,
)

LOOPBACK6 = netaddr.IPNetwork("::1/128")
NO_AFFINITY = (
    "no session-affinity entry exists yet: every lookup in an affinity set "
    "(`ip saddr @affinity-...`) fails"
)

# iptables-nft's tables as base chains: (hook, table) → priority
# (iptables-nft registers them at the legacy tables' NF_IP_PRI_* values).
IPTABLES_PRIORITIES: dict[tuple[str, str], int] = {
    ("prerouting", "raw"): -300,
    ("prerouting", "mangle"): -150,
    ("prerouting", "nat"): -100,
    ("input", "mangle"): -150,
    ("input", "filter"): 0,
    ("input", "security"): 50,
    ("input", "nat"): 100,
    ("forward", "mangle"): -150,
    ("forward", "filter"): 0,
    ("forward", "security"): 50,
    ("output", "raw"): -300,
    ("output", "mangle"): -150,
    ("output", "nat"): -100,
    ("output", "filter"): 0,
    ("output", "security"): 50,
    ("postrouting", "mangle"): -150,
    ("postrouting", "nat"): 100,
}
_PROTOCOLS = {"tcp": "6", "udp": "17", "sctp": "132", "icmp": "1", "icmpv6": "58"}
_VERDICTS = ("accept", "drop", "reject", "return", "continue", "jump", "goto")
_NO_OP_WORDS = ("counter", "log", "notrack")
# The flags a NAT statement may carry (`masquerade fully-random`, `snat to
# 10.0.0.1 random,persistent`), and the options of `log`, each with a value.
_NAT_FLAGS = frozenset(("random", "fully-random", "persistent", ","))
_LOG_OPTIONS = frozenset(("prefix", "level", "group", "snaplen", "queue-threshold", "flags"))

# (verdict, state): NEXT (the rule did not decide), RETURN, ACCEPT, DROP, REJECT
_Outcome = tuple[str, _State]


# ---------------------------------------------------------------- rule ops


class _Op(NamedTuple):
    """One step of a rule, left to right: a match (`kind` cmp, lookup,
    fib, ct, mark), a statement (mark_set, nop), or what ends it (verdict,
    vmap, numgen, dnat, snat)."""

    kind: str
    fields: tuple[str, ...] = ()
    negated: bool = False
    values: tuple[str, ...] = ()
    verdicts: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (key, verdict words)
    name: str = ""  # a named set or map, a chain, a mark operator


@dataclass(frozen=True)
class _Compiled:
    rule: NftRule
    ops: tuple[_Op, ...]


class _Rule:
    """Turn one rule's tokens into ops; a ValueError names what is wrong."""

    def __init__(self, tokens: tuple[str, ...]) -> None:
        self.t = [t for t in tokens if t != "\n"]
        self.i = 0
        self.ops: list[_Op] = []

    def peek(self, ahead: int = 0) -> str | None:
        at = self.i + ahead
        return self.t[at] if at < len(self.t) else None

    def take(self, what: str) -> str:
        word = self.peek()
        if word is None:
            raise ValueError(f"the rule ends where {what} was expected")
        self.i += 1
        return word

    def compile(self) -> tuple[_Op, ...]:
        while self.peek() is not None:
            self._step()
        return tuple(self.ops)

    def _step(self) -> None:
        word = self.take("an expression")
        if word == "comment":
            self.take("a comment")
        elif word in _NO_OP_WORDS:
            self._statement_arguments(word)
            self.ops.append(_Op("nop", name=word))
        elif word in ("update", "add") and (self.peek() or "").startswith("@"):
            self.take("a set")
            self._braced()
            self.ops.append(_Op("nop", name="update"))
        elif word in _VERDICTS:
            target = ""
            if word in ("jump", "goto"):
                target = self.take("a chain name")
            elif word == "reject":
                self._statement_arguments(word)
            self.ops.append(_Op("verdict", name=f"{word} {target}".strip()))
        elif word in ("dnat", "snat"):
            if self.peek() in ("ip", "ip6"):
                self.take("a family")
            if self.take("'to'") != "to":
                raise ValueError(f"{word}: expected `{word} to ADDRESS[:PORT]`")
            to = self.take("an address")
            _nat_address(to)  # refuses a bad one now
            self._statement_arguments(word)
            self.ops.append(_Op(word, values=(to,)))
        elif word == "masquerade":
            self._statement_arguments(word)
            self.ops.append(_Op("snat", name="masquerade"))
        elif word == "numgen":
            self._numgen()
        elif word == "fib":
            self._fib()
        elif word == "ct":
            self._ct()
        else:
            self.i -= 1
            self._match()

    def _statement_arguments(self, statement: str) -> None:
        """Step over what a statement carries: `counter packets 0 bytes 0`,
        `reject with icmp port-unreachable` (or `with tcp reset`, `with icmp
        type host-unreachable`), the flags of masquerade/snat/dnat, `log
        prefix "x" level warn`."""
        if statement == "counter":
            while self.peek() in ("packets", "bytes"):
                self.take("a counter")
                self.take("a count")
        elif statement == "reject":
            if self.peek() == "with":
                self.take("with")
                self.take("icmp, icmpv6, icmpx or tcp")
                if self.peek() == "type":
                    self.take("type")
                self.take("a reject reason")
        elif statement in ("masquerade", "snat", "dnat"):
            while self.peek() in _NAT_FLAGS:
                self.take("a flag")
        elif statement == "log":
            while self.peek() in _LOG_OPTIONS:
                self.take("a log option")
                self.take("its value")

    def _braced(self) -> list[str]:
        if self.take("'{'") != "{":
            raise ValueError("expected '{'")
        words: list[str] = []
        depth = 1
        while True:
            word = self.take("'}'")
            if word == "{":
                depth += 1
            elif word == "}":
                depth -= 1
                if depth == 0:
                    return words
            words.append(word)

    def _fields(self) -> tuple[str, ...]:
        """A selector, or a concatenation of them (`ip daddr . meta l4proto`)."""
        fields = [self._field()]
        while self.peek() == ".":
            self.take(".")
            fields.append(self._field())
        return tuple(fields)

    def _field(self) -> str:
        word = self.take("a selector")
        if word in ("ip", "ip6"):
            part = self.take(f"{word} daddr or saddr")
            if part in ("daddr", "saddr"):
                return f"{word} {part}"
            if part in ("protocol", "nexthdr"):
                return "l4proto"
            raise ValueError(f"{word} {part}: only daddr, saddr and protocol are simulated")
        if word == "meta":
            word = self.take("a meta key")
        if word in ("l4proto", "mark", "iifname", "oifname", "iif", "oif", "nfproto", "nftrace"):
            return word
        if word in ("th", "tcp", "udp", "sctp"):
            part = self.take("dport or sport")
            if part not in ("dport", "sport"):
                raise ValueError(f"{word} {part}: only dport and sport are simulated")
            return f"{word} {part}"
        raise ValueError(f"{word!r} is not simulated (expected ip, ip6, meta, th, tcp, udp, ...)")

    def _match(self) -> None:
        fields = self._fields()
        word = self.peek()
        if fields == ("mark",) and word == "set":
            self.take("set")
            self._mark_set()
            return
        if fields == ("nftrace",) and word == "set":
            # The live tracer's `meta nftrace set 1`: it changes no verdict.
            self.take("set")
            self.take("a value")
            self.ops.append(_Op("nop", name="nftrace"))
            return
        if word == "vmap":
            self.take("vmap")
            self._vmap(fields)
            return
        mask = ""
        if word in ("&", "and"):
            self.take(word)
            mask = self.take("a mask")
            word = self.peek()
        negated = False
        if word in ("!=", "=="):
            negated = self.take(word) == "!="
            word = self.peek()
        if word is not None and word.startswith("@"):
            self.take("a set")
            self.ops.append(_Op("lookup", fields, negated, name=word[1:]))
            return
        values = (
            tuple(v for v in self._braced() if v != ",") if word == "{" else (self.take("a value"),)
        )
        if fields == ("mark",):
            mask_value = _number(mask) if mask else 0xFFFFFFFF
            self.ops.append(
                _Op(
                    "mark",
                    fields,
                    negated,
                    tuple(str(_number(v)) for v in values),
                    name=str(mask_value),
                )
            )
            return
        if mask:
            raise ValueError(f"a mask on {' . '.join(fields)} is not simulated")
        if len(fields) != 1:
            raise ValueError("a concatenation compared with a value is not simulated")
        for value in values:
            _check_value(fields[0], value)
        self.ops.append(_Op("cmp", fields, negated, values))

    def _mark_set(self) -> None:
        """`mark set mark or 0x4000`, `meta mark set meta mark | 0x00004000`,
        `mark set 0x4000`."""
        word = self.take("a mark value")
        if word == "meta":
            word = self.take("mark")
        if word == "mark":
            operator = self.take("an operator")
            operator = {"|": "or", "&": "and", "^": "xor"}.get(operator, operator)
            if operator not in ("or", "and", "xor"):
                raise ValueError(f"mark set mark {operator}: expected or, and or xor")
            value = _number(self.take("a number"))
            self.ops.append(_Op("mark_set", values=(str(value),), name=operator))
        else:
            self.ops.append(_Op("mark_set", values=(str(_number(word)),), name="set"))

    def _vmap(self, fields: tuple[str, ...]) -> None:
        word = self.take("a map")
        if word.startswith("@"):
            self.ops.append(_Op("vmap", fields, name=word[1:]))
            return
        self.i -= 1
        self.ops.append(_Op("vmap", fields, verdicts=_inline_map(self._braced())))

    def _numgen(self) -> None:
        if self.take("random") != "random" or self.take("mod") != "mod":
            raise ValueError("numgen: only `numgen random mod N` is simulated")
        modulus = self.take("a modulus")
        if not modulus.isdigit() or int(modulus) == 0:
            raise ValueError(f"numgen random mod {modulus}: expected a positive number")
        if self.peek() != "vmap":
            raise ValueError("numgen: only `numgen random mod N vmap { ... }` is simulated")
        self.take("vmap")
        verdicts = _inline_map(self._braced())
        for key, _ in verdicts:
            if not key.isdigit() or int(key) >= int(modulus):
                raise ValueError(f"numgen random mod {modulus}: key {key} is out of range")
        self.ops.append(_Op("numgen", values=(modulus,), verdicts=verdicts))

    def _fib(self) -> None:
        which = self.take("saddr or daddr")
        if which not in ("saddr", "daddr"):
            raise ValueError(f"fib {which}: expected saddr or daddr")
        while self.peek() == ".":  # `fib daddr . iif type local`: the address decides
            self.take(".")
            self.take("iif or oif")
        if self.take("'type'") != "type":
            raise ValueError("fib: only `fib saddr|daddr type ...` is simulated")
        negated = self.peek() == "!="
        if self.peek() in ("!=", "=="):
            self.take("an operator")
        types = self._braced() if self.peek() == "{" else [self.take("an address type")]
        types = [t for t in types if t != ","]
        for kind in types:
            if kind not in ("local", "unicast"):
                raise ValueError(f"fib type {kind}: only local and unicast are simulated")
        self.ops.append(_Op("fib", (which,), negated, tuple(types)))

    def _ct(self) -> None:
        key = self.take("state or status")
        if key not in ("state", "status"):
            raise ValueError(f"ct {key}: only ct state and ct status are simulated")
        negated = self.peek() == "!="
        if self.peek() in ("!=", "=="):
            self.take("an operator")
        values = self._braced() if self.peek() == "{" else self.take("a value").split(",")
        self.ops.append(_Op("ct", (key,), negated, tuple(v for v in values if v not in ("", ","))))


def _inline_map(words: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`0 : goto a , 1 : goto b` as ((key, verdict words), ...)."""
    entries: list[tuple[str, tuple[str, ...]]] = []
    for part in " ".join(words).split(","):
        key, sep, verdict = part.partition(":")
        if not sep or not key.strip() or not verdict.split():
            raise ValueError(f"map entry {part.strip()!r}: expected `KEY : VERDICT`")
        _check_verdict(tuple(verdict.split()))
        entries.append((key.strip(), tuple(verdict.split())))
    return tuple(entries)


def _check_verdict(words: tuple[str, ...]) -> None:
    if not words or words[0] not in _VERDICTS:
        raise ValueError(f"{' '.join(words)!r} is not a verdict")
    if words[0] in ("jump", "goto") and len(words) != 2:
        raise ValueError(f"{' '.join(words)!r}: expected `{words[0]} CHAIN`")


def _number(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def _check_value(field: str, value: str) -> None:
    if field.endswith("addr"):
        _address_range(value)
    elif field.endswith("port"):
        _port_range(value)


@lru_cache(maxsize=65536)
def _address_range(text: str) -> tuple[int, int, int]:
    """An address, CIDR or `a-b` range as (version, first, last)."""
    try:
        if "-" in text:
            low, high = (netaddr.IPAddress(p) for p in text.split("-", 1))
            return low.version, int(low), int(high)
        network = netaddr.IPNetwork(text)
    except (netaddr.AddrFormatError, ValueError):
        raise ValueError(f"{text!r} is not an address, CIDR or range") from None
    return network.version, network.first, network.last


@lru_cache(maxsize=4096)
def _port_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        raise ValueError(f"{text!r} is not a port or port range") from None
    if not (0 <= first <= last <= 65535):
        raise ValueError(f"{text!r} is not a port range within 0-65535")
    return first, last


def _nat_address(text: str) -> tuple[str | None, int | None]:
    """`10.180.0.1:80`, `10.180.0.1`, `[fd00::1]:80`, `fd00::1`, `:80`."""
    address, port = text, None
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif text.count(":") == 1:
        address, _, port_text = text.partition(":")
        port = int(port_text) if port_text.isdigit() else -1
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: the port is not in 1-65535")
    if address:
        try:
            netaddr.IPAddress(address)
        except (netaddr.AddrFormatError, ValueError):
            raise ValueError(f"{text!r} is not an ADDRESS[:PORT]") from None
    return address or None, port


# ---------------------------------------------------------------- the walk


@dataclass(frozen=True)
class _Base:
    """A base chain at a hook: an nftables chain, or an iptables-nft table's
    built-in chain (`table` None for nftables, its iptables name otherwise)."""

    priority: int
    order: int
    is_nat: bool
    nft: NftTable | None
    chain: str
    iptables: str | None = None


_HOOK_CHAINS = {
    "prerouting": "PREROUTING",
    "input": "INPUT",
    "forward": "FORWARD",
    "output": "OUTPUT",
    "postrouting": "POSTROUTING",
}


class NftSimulator:
    def __init__(
        self,
        ruleset: NftRuleset,
        local_ips: list[str],
        iptables: RuleSet | None = None,
    ) -> None:
        """`iptables`: the node's iptables-nft tables of the packet's family
        (flannel, portmap, kubelet: iptables-save's for an IPv4 packet,
        ip6tables-save's for an IPv6 one), walked among the nftables base
        chains; when given, the tables of `ruleset` that nft's listing marks
        as iptables-nft's are left out (the dump is what they mean)."""
        self.ruleset = ruleset
        self.local = [netaddr.IPAddress(ip) for ip in local_ips]
        self.iptables = Simulator(iptables, local_ips) if iptables is not None else None
        self.assumptions: list[str] = [NEW_CONNECTION]
        self.packet = Packet("0.0.0.0", "0.0.0.0", 0)
        self._steps = 0
        # Rules are compiled when the walk first enters their chain: a node
        # with 10,000 Services has 120,000 rules and a packet meets a few
        # dozen. What every rule names (chains, sets, maps) is checked for
        # all of them first, and jump loops refused, as the kernel refuses
        # such a table.
        self._compiled: dict[tuple[str, str, str], list[_Compiled]] = {}
        self._indexes: dict[
            tuple[int, tuple[str, ...]], dict[tuple[str | None, ...], tuple[str, ...]] | None
        ] = {}
        for table in ruleset.tables.values():
            self._check_names(table)
        # Each table's base chains (a table holds thousands of chains, a few
        # of them on hooks).
        self._base_chains = {
            key: [chain for chain in table.chains.values() if chain.is_base]
            for key, table in ruleset.tables.items()
        }

    def _rules(self, table: NftTable, chain: str) -> list[_Compiled]:
        key = (table.family, table.name, chain)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = [self._compile(table, rule) for rule in table.chains[chain].rules]
            self._compiled[key] = compiled
        return compiled

    # -- checks

    def _compile(self, table: NftTable, rule: NftRule) -> _Compiled:
        try:
            ops = _Rule(rule.tokens).compile()
            for op in ops:
                self._check_op(table, op)
        except (ValueError, IndexError) as exc:
            raise SimulationError(rule.line_no, f"rule {_shown(rule.text)}: {exc}") from None
        return _Compiled(rule, ops)

    def _check_op(self, table: NftTable, op: _Op) -> None:
        if op.kind in ("lookup", "vmap") and op.name:
            named = table.sets[op.name]  # its existence was checked by _check_names
            if op.kind == "vmap" and (named.kind != "map" or named.value_type != "verdict"):
                raise ValueError(f"{op.name} is not a verdict map")
            if len(named.key_type) not in (0, len(op.fields)):
                raise ValueError(
                    f"{op.name}'s keys have {len(named.key_type)} parts, the rule looks up "
                    f"{len(op.fields)}"
                )

    def _check_names(self, table: NftTable) -> None:
        """Every chain a rule or a verdict map element jumps to exists, and
        every set a rule names; no jumps loop back, none nest deeper than
        MAX_DEPTH below a base chain. Read from the rules' words (`jump X`,
        `goto X`, `@set`), not their compiled form."""
        jumps: dict[str, list[tuple[str, int]]] = {}
        map_targets: dict[str, list[str]] = {}
        for named in table.sets.values():
            targets = []
            for element in named.elements:
                value = element.value
                if value is None:
                    continue
                if named.value_type == "verdict":
                    try:
                        _check_verdict(value)
                    except ValueError as exc:
                        raise SimulationError(element.line_no, f"{named.name}: {exc}") from None
                if value[0] in ("jump", "goto"):
                    if value[1] not in table.chains:
                        raise SimulationError(
                            element.line_no,
                            f"{named.name}: no chain {value[1]!r} in table {table.label}",
                        )
                    targets.append(value[1])
            map_targets[named.name] = targets
        for chain in table.chains.values():
            edges: list[tuple[str, int]] = []
            for rule in chain.rules:
                words = rule.tokens
                for at, word in enumerate(words):
                    if word in ("jump", "goto") and at + 1 < len(words):
                        target = words[at + 1]
                        if target not in table.chains:
                            raise SimulationError(
                                rule.line_no,
                                f"rule {_shown(rule.text)}: no chain {target!r} in table "
                                f"{table.label}",
                            )
                        edges.append((target, rule.line_no))
                    elif word.startswith("@"):
                        if word[1:] not in table.sets:
                            raise SimulationError(
                                rule.line_no,
                                f"rule {_shown(rule.text)}: no set or map {word[1:]!r} in "
                                f"table {table.label}",
                            )
                        if at > 0 and words[at - 1] == "vmap":
                            edges.extend((t, rule.line_no) for t in map_targets[word[1:]])
            jumps[chain.name] = edges
        below: dict[str, int] = {}
        for chain in table.chains.values():
            if chain.is_base and chain.name not in below:
                _walk_jumps(chain.name, jumps, below)

    # -- the walk

    def is_local(self, ip: str) -> bool:
        addr = netaddr.IPAddress(ip)
        return addr in LOOPBACK or addr in LOOPBACK6 or addr in self.local

    def run(self, packet: Packet) -> Simulation:
        self.packet = packet
        self._steps = 0
        if self.iptables is not None:
            self.iptables.begin(packet)
        self._family = "ip" if netaddr.IPAddress(packet.dst).version == 4 else "ip6"
        local_origin = self.is_local(packet.src)
        start = _State(dst=packet.dst, dport=packet.dport)
        first = ["output"] if local_origin else ["prerouting"]
        paths = [finish_path(st, verdict) for verdict, st in self._through(first, start)]
        assumptions = list(self.assumptions)
        if self.iptables is not None:
            assumptions += [a for a in self.iptables.assumptions if a not in assumptions]
        return Simulation(packet, local_origin, paths, assumptions)

    def _through(self, hooks: list[str], st: _State) -> Iterator[_Outcome]:
        if not hooks:
            yield "PASS", st
            return
        hook, rest = hooks[0], hooks[1:]
        for verdict, out in self._hook(self._bases(hook), st, None):
            if verdict in ("DROP", "REJECT"):
                yield verdict, out
                continue
            following = rest
            if hook == "prerouting":
                following = ["input"] if self.is_local(out.dst) else ["forward", "postrouting"]
            elif hook == "output":
                following = ["postrouting", "input"] if self.is_local(out.dst) else ["postrouting"]
            yield from self._through(following, out)

    def _bases(self, hook: str) -> list[_Base]:
        bases: list[_Base] = []
        for table in self.ruleset.tables.values():
            if table.family not in (self._family, "inet"):
                continue
            if table.iptables_nft and self.iptables is not None:
                # The iptables-save dump given holds these rules as iptables
                # means them; nft's listing of some (xt matches it cannot
                # translate, such as kubelet's `-m conntrack ! --ctstate`)
                # loses their meaning.
                continue
            for chain in self._base_chains[(table.family, table.name)]:
                if chain.hook == hook and chain.priority is not None:
                    bases.append(_Base(chain.priority, 1, chain.type == "nat", table, chain.name))
        if self.iptables is not None:
            for name in self.iptables.ruleset.tables:
                priority = IPTABLES_PRIORITIES.get((hook, name))
                if priority is not None:
                    builtin = _HOOK_CHAINS[hook]
                    bases.append(_Base(priority, 0, name == "nat", None, builtin, name))
        return sorted(bases, key=lambda b: (b.priority, b.order))

    def _hook(self, bases: list[_Base], st: _State, nat_from: _State | None) -> Iterator[_Outcome]:
        """Run the base chains in turn. `nat_from` is the state before the
        first nat chain, once a nat chain has translated the packet: the
        hook's other nat chains are then skipped."""
        if not bases:
            yield "PASS", st
            return
        base, rest = bases[0], bases[1:]
        if base.is_nat and nat_from is not None:
            yield from self._hook(rest, st, nat_from)
            return
        for verdict, out in self._base(base, st):
            if verdict in ("DROP", "REJECT"):
                yield verdict, out
                continue
            translated = base.is_nat and (out.dnat != st.dnat or out.snat != st.snat)
            yield from self._hook(rest, out, st if translated else nat_from)

    def _base(self, base: _Base, st: _State) -> Iterator[_Outcome]:
        if base.nft is None:
            assert self.iptables is not None and base.iptables is not None
            table = self.iptables.ruleset.tables[base.iptables]
            policy = table.policies.get(base.chain, "ACCEPT")
            for verdict, out in self.iptables.walk_builtin(base.iptables, base.chain, st):
                if verdict == "RETURN":
                    yield ("DROP" if policy == "DROP" else "ACCEPT"), out
                else:
                    yield verdict, out
            return
        chain = base.nft.chains[base.chain]
        for verdict, out in self._chain(base.nft, base.chain, st, 0):
            if verdict in ("RETURN", "NEXT"):
                yield ("DROP" if chain.policy == "drop" else "ACCEPT"), out
            else:
                yield verdict, out

    def _chain(self, table: NftTable, name: str, st: _State, depth: int) -> Iterator[_Outcome]:
        """The outcomes of walking chain `name` from its first rule, depth
        first; forks (numgen) leave what follows them on `todo`."""
        if depth > MAX_DEPTH:
            raise SimulationError(
                table.chains[name].line_no,
                f"chain {name} is nested more than {MAX_DEPTH} jumps deep: not simulated",
            )
        rules = self._rules(table, name)
        todo: list[tuple[int | None, str, _State]] = [(0, "NEXT", st)]
        while todo:
            index, verdict, st = todo.pop()
            if index is None:
                yield verdict, st
                continue
            while index < len(rules):
                compiled = rules[index]
                self._step(compiled.rule.line_no)
                outcomes = list(self._rule(table, name, compiled, st, depth))
                if len(outcomes) == 1 and outcomes[0][0] == "NEXT":
                    index, st = index + 1, outcomes[0][1]
                    continue
                todo.extend(
                    (index + 1 if v == "NEXT" else None, v, out) for v, out in reversed(outcomes)
                )
                break
            else:
                yield "RETURN", st

    def _step(self, line_no: int) -> None:
        self._steps += 1
        if self._steps > MAX_STEPS:
            raise SimulationError(
                line_no,
                f"the packet's walk needs more than {MAX_STEPS:,} rule checks: not simulated",
            )

    def _rule(
        self, table: NftTable, chain: str, compiled: _Compiled, st: _State, depth: int
    ) -> Iterator[_Outcome]:
        for op in compiled.ops:
            if op.kind == "nop":
                continue
            if op.kind == "mark_set":
                st = replace(st, mark=_set_mark(st.mark, op.name, int(op.values[0])))
                continue
            if op.kind in ("cmp", "lookup", "fib", "ct", "mark"):
                if not self._matches(table, op, st):
                    yield "NEXT", st
                    return
                continue
            if op.kind == "vmap":
                # A verdict map decides only for a key it holds: a miss is
                # a rule that did not match.
                verdict = self._map_lookup(table, op, st)
                if verdict is None:
                    yield "NEXT", st
                    return
                op = _Op("verdict", name=" ".join(verdict))
            # What ends the rule: it matched.
            matched = MatchedRule(table.label, chain, compiled.rule.text)
            st = replace(st, matched=_Trail(matched, st.matched))
            yield from self._decide(table, op, st, depth)
            return
        # Every match held and nothing decided (`mark set ...`, `update @set
        # ...`): the rule matched, and the chain goes on.
        matched = MatchedRule(table.label, chain, compiled.rule.text)
        yield "NEXT", replace(st, matched=_Trail(matched, st.matched))

    def _decide(self, table: NftTable, op: _Op, st: _State, depth: int) -> Iterator[_Outcome]:
        if op.kind == "verdict":
            yield from self._verdict(table, tuple(op.name.split()), st, depth)
        elif op.kind == "dnat":
            address, port = _nat_address(op.values[0])
            dst, dport = address or st.dst, port or st.dport
            shown = f"[{dst}]:{dport}" if ":" in dst else f"{dst}:{dport}"
            yield "ACCEPT", replace(st, dst=dst, dport=dport, dnat=shown)
        elif op.kind == "snat":
            yield "ACCEPT", replace(st, snat=True)
        elif op.kind == "numgen":
            modulus = int(op.values[0])
            keys = {int(key): words for key, words in op.verdicts}
            share = 1.0 / modulus
            for key in range(modulus):
                if key in keys:
                    branch = replace(st, probability=st.probability * share)
                    yield from self._verdict(table, keys[key], branch, depth)
            missed = modulus - len(keys)
            if missed:
                yield "NEXT", replace(st, probability=st.probability * share * missed)
        else:  # pragma: no cover - every op kind is handled above
            raise AssertionError(op.kind)

    def _verdict(
        self, table: NftTable, words: tuple[str, ...], st: _State, depth: int
    ) -> Iterator[_Outcome]:
        kind = words[0]
        if kind == "accept":
            yield "ACCEPT", replace(st, accepted=True)
        elif kind in ("drop", "reject"):
            yield kind.upper(), st
        elif kind == "return":
            yield "RETURN", st
        elif kind == "continue":
            yield "NEXT", st
        else:
            for verdict, out in self._chain(table, words[1], st, depth + 1):
                # After a jump the caller goes on with its next rule; after a
                # goto, the called chain's end is the caller's end.
                if verdict == "RETURN" and kind == "jump":
                    yield "NEXT", out
                else:
                    yield verdict, out

    # -- matching

    def _value(self, field: str, st: _State) -> str | None:
        """The packet's value for a selector; None where the selector does
        not apply (an IPv6 address selector on an IPv4 packet)."""
        pkt = self.packet
        if field in ("ip daddr", "ip saddr", "ip6 daddr", "ip6 saddr"):
            family, which = field.split()
            if family != self._family:
                return None
            return st.dst if which == "daddr" else pkt.src
        if field == "l4proto":
            return pkt.proto
        if field == "nfproto":
            return "ipv4" if self._family == "ip" else "ipv6"
        if field.endswith("dport") or field.endswith("sport"):
            proto = field.split()[0]
            if proto != "th" and proto != pkt.proto:
                return None
            return str(st.dport if field.endswith("dport") else pkt.sport)
        if field == "mark":
            return str(st.mark)
        self._assume(f"interface matches ({field}) are not simulated: no match")
        return None

    def _matches(self, table: NftTable, op: _Op, st: _State) -> bool:
        if op.kind == "fib":
            ip = self.packet.src if op.fields[0] == "saddr" else st.dst
            local = self.is_local(ip)
            ok = any(local if kind == "local" else not local for kind in op.values)
            return ok != op.negated
        if op.kind == "ct":
            states = {"new"} if op.fields[0] == "state" else ({"dnat"} if st.dnat else set())
            return bool(states & set(op.values)) != op.negated
        if op.kind == "mark":
            mask = int(op.name)
            ok = any((st.mark & mask) == int(v) for v in op.values)
            return ok != op.negated
        if op.kind == "lookup":
            named = table.sets[op.name]
            if not named.elements and ("dynamic" in named.flags or "timeout" in named.flags):
                # kube-proxy's affinity sets: filled by the kernel as
                # connections are made, so empty for a first packet.
                self._assume(NO_AFFINITY)
            found = self._find(named, op.fields, st) is not None
            return found != op.negated
        value = self._value(op.fields[0], st)
        if value is None:
            return False
        ok = any(_part_matches(op.fields[0], value, v) for v in op.values)
        return ok != op.negated

    def _find(self, named: NftSet, fields: tuple[str, ...], st: _State) -> tuple[str, ...] | None:
        values = [self._value(field, st) for field in fields]
        if any(v is None for v in values):
            return None
        index = self._index(named, fields)
        if index is not None:
            try:
                key = tuple(_normal(f, str(v)) for f, v in zip(fields, values, strict=True))
            except ValueError:
                return None
            return index.get(key)
        for element in named.elements:
            if all(
                _part_matches(field, str(value), part)
                for field, value, part in zip(fields, values, element.key, strict=True)
            ):
                return element.value or ()
        return None

    def _index(
        self, named: NftSet, fields: tuple[str, ...]
    ) -> dict[tuple[str | None, ...], tuple[str, ...]] | None:
        """The set's elements by their normalised key, for a set of single
        values (service-ips holds one element per Service port: a lookup
        must not read them all); None for a set with CIDRs or ranges."""
        cache_key = (id(named), fields)
        if cache_key in self._indexes:
            return self._indexes[cache_key]
        index: dict[tuple[str | None, ...], tuple[str, ...]] | None = {}
        for element in named.elements:
            try:
                key = tuple(_normal(f, p) for f, p in zip(fields, element.key, strict=True))
            except ValueError:
                key = (None,)
            if None in key or index is None:
                index = None
                break
            index.setdefault(key, element.value or ())
        self._indexes[cache_key] = index
        return index

    def _map_lookup(self, table: NftTable, op: _Op, st: _State) -> tuple[str, ...] | None:
        if op.name:
            return self._find(table.sets[op.name], op.fields, st)
        # An anonymous map (`vmap { 80 : accept, ... }`): keys of one part.
        value = self._value(op.fields[0], st) if len(op.fields) == 1 else None
        for key, words in op.verdicts:
            if value is not None and _part_matches(op.fields[0], value, key):
                return words
        return None

    def _assume(self, text: str) -> None:
        if text not in self.assumptions:
            self.assumptions.append(text)


def _part_matches(field: str, value: str, part: str) -> bool:
    """Whether a packet's value for `field` is `part` of a rule or element:
    an address in an address, CIDR or range; a port in a port or range; a
    protocol by name or number."""
    part = unquote(part)
    if field.endswith("addr"):
        version, first, last = _address_range(part)
        addr = netaddr.IPAddress(value)
        return addr.version == version and first <= int(addr) <= last
    if field.endswith("port"):
        low, high = _port_range(part)
        return low <= int(value) <= high
    if field == "l4proto":
        return _PROTOCOLS.get(part, part) == _PROTOCOLS.get(value, value)
    if field == "mark":
        return int(value) == _number(part)
    return value == part


@lru_cache(maxsize=65536)
def _normal(field: str, text: str) -> str | None:
    """A value as an exact-match index holds it (an address in one spelling,
    a protocol by number); None for a CIDR or range, which is no exact key."""
    text = unquote(text)
    if field.endswith("addr"):
        if "/" in text or "-" in text:
            return None
        try:
            return str(netaddr.IPAddress(text))
        except (netaddr.AddrFormatError, ValueError):
            raise ValueError(f"{text!r} is not an address") from None
    if field.endswith("port"):
        return None if "-" in text else str(int(text))
    if field == "l4proto":
        return _PROTOCOLS.get(text, text)
    return text


def _set_mark(mark: int, operator: str, value: int) -> int:
    if operator == "or":
        return (mark | value) & 0xFFFFFFFF
    if operator == "and":
        return mark & value
    if operator == "xor":
        return (mark ^ value) & 0xFFFFFFFF
    return value & 0xFFFFFFFF


def simulate_nft(
    ruleset: NftRuleset,
    local_ips: list[str],
    packet: Packet,
    iptables: RuleSet | None = None,
) -> Simulation:
    return NftSimulator(ruleset, local_ips, iptables).run(packet)


def _shown(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
