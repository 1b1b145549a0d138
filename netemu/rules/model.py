"""The rule-set model: tables of declared chains and rules, in write order.

A rule keeps its arguments as iptables-restore text, exactly as written (for
compiled rules, in kube-proxy's own argument order), so rendering is cheap and
render → parse → render is the identity. Structured views for matching and
for comparing with the kernel's normalised `iptables-save` output live in
`netemu.rules.spec`.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
    """`-A chain args`; `args` is restore syntax (quotes included). `line_no`
    is where a parsed rule was written (1-based; 0 for compiled rules), for
    messages only: it takes no part in comparing rules."""

    chain: str
    args: str
    line_no: int = field(default=0, compare=False)

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
    # `-I chain 1 args` lines, each put at the head of its chain in turn
    # (kube-proxy's EnsureRule(Prepend) of a missing jump, in a full resync).
    inserts: list[Rule] = field(default_factory=list)

    def declare(self, chain: str) -> None:
        self.chains.append(chain)

    def append(self, chain: str, args: str, line_no: int = 0) -> None:
        self.rules.append(Rule(chain, args, line_no))

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
            out.extend(f"-I {r.chain} 1 {r.args}".rstrip() for r in table.inserts)
            out.extend(rule.line() for rule in table.rules)
            out.extend(f"-X {chain}" for chain in table.deletions)
            out.append("COMMIT")
        return "\n".join(out) + "\n"


class ParseError(ValueError):
    """Rules that cannot be read (or walked): `source:line: message` when the
    file is known, `line N: message` otherwise. A file refused as a whole
    (too large, no table in it) is refused at line 1; line 0 is a path that
    could not be read at all (missing, not a regular file)."""

    def __init__(self, line_no: int, message: str, source: str | None = None) -> None:
        where = f"{source}:{line_no}" if source is not None else f"line {line_no}"
        super().__init__(f"{where}: {message}")
        self.line_no = line_no
        self.source = source
        self.message = message

    def located(self, source: str) -> ParseError:
        """The same error, naming the file it is about."""
        return ParseError(self.line_no, self.message, source)


# Far above any real node's dump (kube-proxy's rules for 10,000 Services of
# 5 endpoints each are 19 MB), and a bound on what one file may make the
# offline tracer read and hold.
MAX_RULES_BYTES = 64 << 20


def read_rules(path: Path) -> RuleSet:
    """Read an iptables-save dump from a file, refusing what is not one:
    a non-regular file (a FIFO or /dev/zero is never read), more than
    MAX_RULES_BYTES, binary data, text that is not UTF-8, and a file with
    no *table section. Errors name the file and line."""
    source = str(path)
    data = _read_regular_file(path, source)
    nul = data.find(b"\0")
    if nul >= 0:
        raise ParseError(
            data.count(b"\n", 0, nul) + 1,
            "binary data (a NUL byte): expected iptables-save output",
            source,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        raise ParseError(
            data.count(b"\n", 0, exc.start) + 1,
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at column "
            f"{exc.start - line_start + 1}): expected iptables-save output",
            source,
        ) from None
    try:
        ruleset = parse_restore(text)
    except ParseError as exc:
        raise exc.located(source) from None
    if not ruleset.tables:
        raise ParseError(
            1, "no *table section: expected iptables-save output (*nat ... COMMIT)", source
        )
    return ruleset


def _read_regular_file(path: Path, source: str) -> bytes:
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is
        # refused below anyway.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ParseError(0, f"cannot read: {exc.strerror}", source) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ParseError(0, "not a regular file: expected an iptables-save dump", source)
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(MAX_RULES_BYTES + 1)
        except OSError as exc:
            raise ParseError(0, f"cannot read: {exc.strerror}", source) from None
    if len(data) > MAX_RULES_BYTES:
        raise ParseError(
            1, f"larger than {MAX_RULES_BYTES >> 20} MiB: not a node's iptables-save dump", source
        )
    return data


def parse_restore(text: str, *, inserts: bool = False) -> RuleSet:
    """Parse iptables-save output (or iptables-restore input) into a RuleSet.

    `inserts`: accept `-I CHAIN [1] args` lines (restore input only; an
    iptables-save dump never has them, so they are refused by default).

    Counters (`[pkts:bytes]` prefixes from `iptables-save -c`) are dropped;
    comments and blank lines are skipped. Empty text is an empty RuleSet
    (the dump of a namespace no rule was ever written to).
    """
    ruleset = RuleSet()
    table: Table | None = None
    if "\0" in text:
        raise ParseError(
            text.count("\n", 0, text.index("\0")) + 1,
            "binary data (a NUL byte): expected iptables-save output",
        )
    last = 0
    # Lines end at "\n" only, as iptables-restore reads them (splitlines
    # would also end them at \x1c, \x85, ... and shift every line number).
    for line_no, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        last = line_no
        if line.startswith("["):  # counters prefix of `iptables-save -c`
            end = line.find("]")
            line = line[end + 1 :].lstrip()
        if line.startswith("*"):
            name = line[1:].strip()
            if name not in BUILTIN_CHAINS:
                raise ParseError(
                    line_no,
                    f"unknown table {_shown(name)} (iptables has {', '.join(TABLE_ORDER)})",
                )
            if table is not None:
                raise ParseError(
                    line_no, f"table {name!r} starts before table {table.name!r} has its COMMIT"
                )
            table = ruleset.table(name)
            continue
        if table is None:
            raise ParseError(
                line_no,
                f"{_shown(line)} outside of a *table section: expected iptables-save output",
            )
        if line == "COMMIT":
            table = None
            continue
        if line.startswith(":"):
            parts = line[1:].split()
            if len(parts) < 2:
                raise ParseError(line_no, f"malformed chain line {_shown(line)}")
            chain, policy = parts[0], parts[1]
            if policy == "-":
                table.declare(chain)
            elif chain not in BUILTIN_CHAINS[table.name]:
                # As iptables-restore: "Can't set policy ...: Bad built-in chain name".
                raise ParseError(
                    line_no,
                    f"chain {_shown(chain)} is not built in: only '-' fits it, not {policy!r}",
                )
            elif policy not in ("ACCEPT", "DROP"):
                raise ParseError(
                    line_no, f"policy {_shown(policy)} of chain {chain}: expected ACCEPT or DROP"
                )
            else:
                table.policies[chain] = policy
            continue
        if line.startswith("-A ") or line.startswith("--append "):
            _, rest = line.split(" ", 1)
            chain, _, args = rest.strip().partition(" ")
            table.append(chain, args.strip(), line_no)
            continue
        if line.startswith("-X ") or line.startswith("--delete-chain "):
            table.deletions.append(line.split()[1])
            continue
        if inserts and (line.startswith("-I ") or line.startswith("--insert ")):
            # `-I CHAIN [1] args`: at the head of the chain (no other position
            # is ever written by kube-proxy, nor read here).
            _, rest = line.split(" ", 1)
            chain, _, args = rest.strip().partition(" ")
            position, _, after = args.strip().partition(" ")
            if position.isdigit():
                if position != "1":
                    raise ParseError(line_no, f"unsupported insert position in {_shown(line)}")
                args = after
            table.inserts.append(Rule(chain, args.strip(), line_no))
            continue
        raise ParseError(line_no, f"unsupported line {_shown(line)}")
    if table is not None:
        raise ParseError(last, f"table {table.name!r} has no COMMIT")
    return ruleset


def _shown(line: str, limit: int = 80) -> str:
    """A line quoted for a one-line message, cut if long."""
    return repr(line if len(line) <= limit else line[:limit] + "...")


# One piece of rule arguments: a run of whitespace, a quoted part (its
# closing quote may be missing at the end; a backslash escapes the next
# character, a last lone one stays), or a run of other characters. Pieces
# with no whitespace between them make one token (`a"b c"` is `ab c`).
_PIECE = re.compile(r'(\s+)|"((?:[^"\\]|\\.|\\\Z)*)"?|([^\s"]+)', re.DOTALL)
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def tokenize(args: str) -> list[str]:
    """Split rule arguments as iptables-restore does: whitespace, double quotes
    with backslash escapes inside them."""
    if '"' not in args:
        return args.split()  # str.split's whitespace is str.isspace's, as \s is
    if "\\" not in args:
        simple = _standalone_quotes(args)
        if simple is not None:
            return simple
    tokens: list[str] = []
    token: list[str] | None = None
    for space, quoted, plain in _PIECE.findall(args):
        if space:
            if token is not None:
                tokens.append("".join(token))
            token = None
            continue
        if token is None:
            token = []
        token.append(plain or _ESCAPED.sub(r"\1", quoted))
    if token is not None:
        tokens.append("".join(token))
    return tokens


def _standalone_quotes(args: str) -> list[str] | None:
    """The tokens of `args` when every quoted part stands alone (whitespace
    or an end on both sides, closing quote present): kube-proxy's rules,
    `... -m comment --comment "ns/svc:port cluster IP" -j ...`. None otherwise."""
    parts = args.split('"')
    if len(parts) % 2 == 0:
        return None  # a quote left open
    tokens = parts[0].split()
    for index in range(1, len(parts), 2):
        before, after = parts[index - 1], parts[index + 1]
        # Empty before the first quote or after the last is an end; empty
        # between two quoted parts is `"a""b"`, one token.
        if not (before[-1:].isspace() or (index == 1 and not before)):
            return None
        if not (after[:1].isspace() or (index == len(parts) - 2 and not after)):
            return None
        tokens.append(parts[index])
        tokens.extend(after.split())
    return tokens


_SAFE = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ/:.,+!=")


def quote(token: str) -> str:
    """Quote a token for restore input when it needs it (spaces, quotes, empty)."""
    if token and all(c in _SAFE for c in token):
        return token
    return '"' + token.replace("\\", "\\\\").replace('"', '\\"') + '"'


def join(tokens: Iterable[str]) -> str:
    return " ".join(quote(t) for t in tokens)
