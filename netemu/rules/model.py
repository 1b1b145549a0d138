"""The rule-set model: tables of declared chains and rules, in write order.

A rule keeps its arguments as iptables-restore text, exactly as written (for
compiled rules, in kube-proxy's own argument order), so rendering is cheap and
render → parse → render is the identity. Structured views for matching and
for comparing with the kernel's normalised `iptables-save` output live in
`netemu.rules.spec`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

BUILTIN_CHAINS: dict[str, tuple[str, ...]] = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
TABLE_ORDER = ("raw", "mangle", "filter", "nat", "security")


@dataclass(frozen=True, slots=True)
class Rule:
    """`-A chain args`; `args` is restore syntax (quotes included)."""

    chain: str
    args: str

    def line(self) -> str:
        return f"-A {self.chain} {self.args}" if self.args else f"-A {self.chain}"


@dataclass
class Table:
    """One `*table` section: chain declarations, rules and chain deletions, in order."""

    name: str
    chains: list[str] = field(default_factory=list)
    policies: dict[str, str] = field(default_factory=dict)  # built-in chain → policy
    rules: list[Rule] = field(default_factory=list)
    deletions: list[str] = field(default_factory=list)  # `-X chain` lines

    def declare(self, chain: str) -> None:
        self.chains.append(chain)

    def append(self, chain: str, args: str) -> None:
        self.rules.append(Rule(chain, args))

    def chain_rules(self, chain: str) -> list[Rule]:
        return [r for r in self.rules if r.chain == chain]

    def has_chain(self, chain: str) -> bool:
        return chain in self.policies or chain in self.chains


@dataclass
class RuleSet:
    """A set of tables, as one iptables-restore input or one iptables-save dump."""

    tables: dict[str, Table] = field(default_factory=dict)

    def table(self, name: str) -> Table:
        if name not in self.tables:
            self.tables[name] = Table(name)
        return self.tables[name]

    def rules(self) -> Iterator[tuple[str, Rule]]:
        for name in TABLE_ORDER:
            if name in self.tables:
                for rule in self.tables[name].rules:
                    yield name, rule

    def render(self) -> str:
        """iptables-restore input (also the shape of iptables-save output)."""
        out: list[str] = []
        for name in TABLE_ORDER:
            table = self.tables.get(name)
            if table is None:
                continue
            out.append(f"*{name}")
            for chain, policy in table.policies.items():
                out.append(f":{chain} {policy} [0:0]")
            out.extend(f":{chain} - [0:0]" for chain in table.chains)
            out.extend(rule.line() for rule in table.rules)
            out.extend(f"-X {chain}" for chain in table.deletions)
            out.append("COMMIT")
        return "\n".join(out) + "\n"


class ParseError(ValueError):
    def __init__(self, line_no: int, message: str) -> None:
        super().__init__(f"line {line_no}: {message}")
        self.line_no = line_no


def parse_restore(text: str) -> RuleSet:
    """Parse iptables-save output (or iptables-restore input) into a RuleSet.

    Counters (`[pkts:bytes]` prefixes from `iptables-save -c`) are dropped;
    comments and blank lines are skipped.
    """
    ruleset = RuleSet()
    table: Table | None = None
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):  # counters prefix of `iptables-save -c`
            end = line.find("]")
            line = line[end + 1 :].lstrip()
        if line.startswith("*"):
            table = ruleset.table(line[1:].strip())
            continue
        if table is None:
            raise ParseError(line_no, f"{line.split()[0]!r} outside of a *table section")
        if line == "COMMIT":
            table = None
            continue
        if line.startswith(":"):
            parts = line[1:].split()
            if len(parts) < 2:
                raise ParseError(line_no, f"malformed chain line {line!r}")
            chain, policy = parts[0], parts[1]
            if policy == "-":
                table.declare(chain)
            else:
                table.policies[chain] = policy
            continue
        if line.startswith("-A ") or line.startswith("--append "):
            _, rest = line.split(" ", 1)
            chain, _, args = rest.strip().partition(" ")
            table.append(chain, args.strip())
            continue
        if line.startswith("-X ") or line.startswith("--delete-chain "):
            table.deletions.append(line.split()[1])
            continue
        raise ParseError(line_no, f"unsupported line {line!r}")
    if table is not None:
        raise ParseError(len(text.splitlines()), f"table {table.name!r} has no COMMIT")
    return ruleset


def tokenize(args: str) -> list[str]:
    """Split rule arguments as iptables-restore does: whitespace, double quotes
    with backslash escapes inside them."""
    tokens: list[str] = []
    i, n = 0, len(args)
    while i < n:
        ch = args[i]
        if ch.isspace():
            i += 1
            continue
        buf: list[str] = []
        while i < n and not args[i].isspace():
            if args[i] == '"':
                i += 1
                while i < n and args[i] != '"':
                    if args[i] == "\\" and i + 1 < n:
                        i += 1
                    buf.append(args[i])
                    i += 1
                i += 1  # closing quote
            else:
                buf.append(args[i])
                i += 1
        tokens.append("".join(buf))
    return tokens


_SAFE = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ/:.,+!=")


def quote(token: str) -> str:
    """Quote a token for restore input when it needs it (spaces, quotes, empty)."""
    if token and all(c in _SAFE for c in token):
        return token
    return '"' + token.replace("\\", "\\\\").replace('"', '\\"') + '"'


def join(tokens: Iterable[str]) -> str:
    return " ".join(quote(t) for t in tokens)
