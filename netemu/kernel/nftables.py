"""Applying and reading nftables rules inside a network namespace.

A script is always applied as ONE `nft -f` transaction (the kernel commits
all of it or none of it), as knftables' Run does for kube-proxy's nftables
mode; never command by command. Reading is `nft list ruleset` or `nft list
table <family> <name>`; deleting a table is one `nft delete table`.

Scripts are in the line form knftables writes and its fake `Dump()` prints:
one command per line (`add table ip kube-proxy { comment "..." ; }`,
`add chain ...`, `add rule ip kube-proxy services ip daddr ...`,
`add element ip kube-proxy service-ips { ... }`, `flush chain ...`,
`delete chain ...`). FakeNftables understands exactly that form.

Owns: the nft processes it runs. Touches only the tables a script names.
"""

from __future__ import annotations

import copy
import re
import subprocess
from dataclasses import dataclass, field
from typing import Protocol

FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")


class NftablesError(RuntimeError):
    pass


class Nftables(Protocol):
    def apply(self, script: str) -> None:
        """Run `script` as one transaction; NftablesError (nft's own
        message) and nothing changed if any command fails."""
        ...

    def list_ruleset(self) -> str: ...

    def list_table(self, family: str, name: str) -> str:
        """The table as nft prints it; NftablesError if it does not exist."""
        ...

    def has_table(self, family: str, name: str) -> bool: ...

    def delete_table(self, family: str, name: str) -> bool:
        """Delete the table if it exists; whether it did."""
        ...


@dataclass
class KernelNftables:
    """`nft` run inside namespace `netns` (`ip netns exec`, as KernelIptables)."""

    netns: str

    def _run(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = ["ip", "netns", "exec", self.netns, "nft", *args]
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)

    def apply(self, script: str) -> None:
        done = self._run(["-f", "-"], stdin=script)
        if done.returncode != 0:
            raise NftablesError(f"nft -f failed in {self.netns}: {done.stderr.strip()}")

    def list_ruleset(self) -> str:
        done = self._run(["list", "ruleset"])
        if done.returncode != 0:
            raise NftablesError(f"nft list ruleset failed in {self.netns}: {done.stderr.strip()}")
        return done.stdout

    def list_table(self, family: str, name: str) -> str:
        _check_family(family)
        done = self._run(["list", "table", family, name])
        if done.returncode != 0:
            raise NftablesError(
                f"nft list table {family} {name} failed in {self.netns}: {done.stderr.strip()}"
            )
        return done.stdout

    def has_table(self, family: str, name: str) -> bool:
        done = self._run(["list", "tables", family])
        if done.returncode != 0:
            raise NftablesError(f"nft list tables failed in {self.netns}: {done.stderr.strip()}")
        return f"table {family} {name}" in done.stdout.splitlines()

    def delete_table(self, family: str, name: str) -> bool:
        # nft 1.0.6 has no `destroy`: look first. Nothing else in a lab
        # creates or deletes this table between the two commands.
        if not self.has_table(family, name):
            return False
        done = self._run(["delete", "table", family, name])
        if done.returncode != 0:
            raise NftablesError(
                f"nft delete table {family} {name} failed in {self.netns}: {done.stderr.strip()}"
            )
        return True


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise NftablesError(f"unknown nftables family {family!r} (expected one of {FAMILIES})")


# -- the fake -------------------------------------------------------------

_OBJECTS = ("table", "chain", "set", "map", "rule", "element")
_VERBS = ("add", "create", "insert", "replace", "delete", "destroy", "flush")
_CHAIN_REF = re.compile(r"(?:^|[\s{,:])(?:jump|goto)\s+([A-Za-z0-9_./-]+)")
_SET_REF = re.compile(r"@([A-Za-z0-9_./-]+)")
_NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_./-]*$")


@dataclass
class _Chain:
    spec: str = ""  # "{ type nat hook output priority -100 ; }" of a base chain
    rules: list[str] = field(default_factory=list)


@dataclass
class _Set:
    kind: str  # "set" or "map"
    spec: str
    elements: dict[str, str] = field(default_factory=dict)  # key → element text


@dataclass
class _Table:
    spec: str = ""
    chains: dict[str, _Chain] = field(default_factory=dict)
    sets: dict[str, _Set] = field(default_factory=dict)


@dataclass
class FakeNftables:
    """Behaves like `nft -f` on the line form: every command of a script is
    checked against the state the earlier ones left (a rule needs its chain,
    a jump or goto its target chain, an `@set` its set, a delete its
    object, a deleted chain no references), and a script with any bad
    command changes nothing. `last_transaction` is the last script applied."""

    tables: dict[tuple[str, str], _Table] = field(default_factory=dict)
    last_transaction: str | None = None
    transactions: int = 0

    def apply(self, script: str) -> None:
        state = copy.deepcopy(self.tables)
        for number, line in enumerate(script.splitlines(), 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                _execute(state, text)
            except NftablesError as exc:
                raise NftablesError(f"nft -f failed: line {number}: {exc}: {text}") from None
        self.tables = state
        self.last_transaction = script
        self.transactions += 1

    def list_ruleset(self) -> str:
        return "".join(self._dump(key) for key in self.tables)

    def list_table(self, family: str, name: str) -> str:
        if (family, name) not in self.tables:
            raise NftablesError(f"No such file or directory: table {family} {name}")
        return self._dump((family, name))

    def has_table(self, family: str, name: str) -> bool:
        return (family, name) in self.tables

    def delete_table(self, family: str, name: str) -> bool:
        return self.tables.pop((family, name), None) is not None

    def _dump(self, key: tuple[str, str]) -> str:
        """The table in the line form (knftables' Dump order: table, chains,
        sets and maps, rules, elements)."""
        family, name = key
        table = self.tables[key]
        prefix = f"{family} {name}"
        lines = [_join("add table", prefix, table.spec)]
        lines += [_join("add chain", f"{prefix} {c}", ch.spec) for c, ch in table.chains.items()]
        lines += [_join(f"add {s.kind}", f"{prefix} {n}", s.spec) for n, s in table.sets.items()]
        lines += [
            f"add rule {prefix} {c} {rule}" for c, ch in table.chains.items() for rule in ch.rules
        ]
        lines += [
            f"add element {prefix} {n} {{ {element} }}"
            for n, s in table.sets.items()
            for element in s.elements.values()
        ]
        return "\n".join(lines) + "\n"


def _join(head: str, names: str, spec: str) -> str:
    return f"{head} {names} {spec}".rstrip()


def _execute(state: dict[tuple[str, str], _Table], text: str) -> None:
    words = text.split(None, 4)
    if len(words) < 4 or words[0] not in _VERBS or words[1] not in _OBJECTS:
        raise NftablesError("syntax error: expected `<verb> <object> <family> <table> ...`")
    verb, kind, family, table_name = words[:4]
    if family not in FAMILIES:
        raise NftablesError(f"unknown family {family!r}")
    rest = words[4] if len(words) > 4 else ""
    key = (family, table_name)
    if kind == "table":
        _table_command(state, verb, key, rest)
        return
    table = state.get(key)
    if table is None:
        if verb == "destroy":
            return
        raise NftablesError(f"No such file or directory: table {family} {table_name}")
    name, _, body = rest.partition(" ")
    if not name:
        raise NftablesError(f"syntax error: {kind} without a name")
    if kind == "chain":
        _chain_command(table, verb, name, body.strip())
    elif kind in ("set", "map"):
        _set_command(table, verb, kind, name, body.strip())
    elif kind == "rule":
        _rule_command(table, verb, name, body.strip())
    else:
        _element_command(table, verb, name, body.strip())


def _table_command(
    state: dict[tuple[str, str], _Table], verb: str, key: tuple[str, str], spec: str
) -> None:
    exists = key in state
    if verb in ("add", "create"):
        if verb == "create" and exists:
            raise NftablesError(f"File exists: table {key[0]} {key[1]}")
        if not exists:
            state[key] = _Table(spec=spec)
        elif spec:
            state[key].spec = spec
    elif verb in ("delete", "destroy"):
        if not exists and verb == "delete":
            raise NftablesError(f"No such file or directory: table {key[0]} {key[1]}")
        state.pop(key, None)
    elif verb == "flush":
        if not exists:
            raise NftablesError(f"No such file or directory: table {key[0]} {key[1]}")
        for chain in state[key].chains.values():
            chain.rules.clear()
        for named in state[key].sets.values():
            named.elements.clear()
    else:
        raise NftablesError(f"syntax error: cannot {verb} a table")


def _chain_command(table: _Table, verb: str, name: str, spec: str) -> None:
    exists = name in table.chains
    if verb in ("add", "create"):
        if not _NAME.match(name):
            raise NftablesError(f"syntax error: bad chain name {name!r}")
        if verb == "create" and exists:
            raise NftablesError(f"File exists: chain {name}")
        if not exists:
            table.chains[name] = _Chain(spec=spec)
        elif spec and table.chains[name].spec and spec != table.chains[name].spec:
            # The kernel cannot change a base chain's hook, type or priority.
            raise NftablesError(f"Device or resource busy: chain {name} exists with other hooks")
        elif spec:
            table.chains[name].spec = spec
    elif verb in ("delete", "destroy"):
        if not exists:
            if verb == "delete":
                raise NftablesError(f"No such file or directory: chain {name}")
            return
        if _chain_referenced(table, name):
            raise NftablesError(f"Device or resource busy: chain {name} is still referenced")
        del table.chains[name]
    elif verb == "flush":
        if not exists:
            raise NftablesError(f"No such file or directory: chain {name}")
        table.chains[name].rules.clear()
    else:
        raise NftablesError(f"syntax error: cannot {verb} a chain")


def _set_command(table: _Table, verb: str, kind: str, name: str, spec: str) -> None:
    found = table.sets.get(name)
    if found is not None and found.kind != kind:
        raise NftablesError(f"No such file or directory: {kind} {name} (it is a {found.kind})")
    if verb in ("add", "create"):
        if verb == "create" and found is not None:
            raise NftablesError(f"File exists: {kind} {name}")
        if found is None:
            if not spec.startswith("{"):
                raise NftablesError(f"syntax error: {kind} {name} needs a type")
            table.sets[name] = _Set(kind=kind, spec=spec)
    elif verb in ("delete", "destroy"):
        if found is None:
            if verb == "delete":
                raise NftablesError(f"No such file or directory: {kind} {name}")
            return
        if any(name in _SET_REF.findall(r) for c in table.chains.values() for r in c.rules):
            raise NftablesError(f"Device or resource busy: {kind} {name} is in use")
        del table.sets[name]
    elif verb == "flush":
        if found is None:
            raise NftablesError(f"No such file or directory: {kind} {name}")
        found.elements.clear()
    else:
        raise NftablesError(f"syntax error: cannot {verb} a {kind}")


def _rule_command(table: _Table, verb: str, chain: str, rule: str) -> None:
    if chain not in table.chains:
        raise NftablesError(f"No such file or directory: chain {chain}")
    if verb not in ("add", "insert"):
        raise NftablesError(f"unsupported: {verb} rule (only add and insert)")
    if not rule:
        raise NftablesError("syntax error: empty rule")
    _check_references(table, rule)
    if verb == "add":
        table.chains[chain].rules.append(rule)
    else:
        table.chains[chain].rules.insert(0, rule)


def _element_command(table: _Table, verb: str, name: str, body: str) -> None:
    found = table.sets.get(name)
    if found is None:
        raise NftablesError(f"No such file or directory: set or map {name}")
    if not (body.startswith("{") and body.endswith("}")):
        raise NftablesError("syntax error: elements go in { }")
    elements = _split_elements(body[1:-1])
    if verb in ("add", "create"):
        for element in elements:
            if found.kind == "map" and " : " not in element:
                raise NftablesError(f"syntax error: map element {element!r} has no value")
            _check_references(table, element)
            key = _element_key(element)
            if verb == "create" and key in found.elements:
                raise NftablesError(f"File exists: element {key} in {name}")
            if key in found.elements and found.elements[key] != element:
                # A map element's value cannot be changed by adding it again.
                raise NftablesError(f"File exists: element {key} in {name}")
            found.elements[key] = element
    elif verb in ("delete", "destroy"):
        for element in elements:
            key = _element_key(element)
            if key not in found.elements and verb == "delete":
                raise NftablesError(f"No such file or directory: element {key} in {name}")
            found.elements.pop(key, None)
    else:
        raise NftablesError(f"syntax error: cannot {verb} an element")


def _element_key(element: str) -> str:
    key = element.split(" : ", 1)[0]
    return re.sub(r'\s+comment\s+"[^"]*"', "", key).strip()


def _split_elements(text: str) -> list[str]:
    """Split `a, b : goto c, d` at the top-level commas (not in quotes or braces)."""
    parts: list[str] = []
    current: list[str] = []
    depth, quoted = 0, False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "{":
            depth += 1
        elif not quoted and char == "}":
            depth -= 1
        if char == "," and not quoted and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def _check_references(table: _Table, text: str) -> None:
    unquoted = re.sub(r'"[^"]*"', '""', text)
    for target in _CHAIN_REF.findall(unquoted):
        if target not in table.chains:
            raise NftablesError(f"No such file or directory: chain {target}")
    for named in _SET_REF.findall(unquoted):
        if named not in table.sets:
            raise NftablesError(f"No such file or directory: set {named}")


def _chain_referenced(table: _Table, chain: str) -> bool:
    texts = [r for c in table.chains.values() for r in c.rules]
    texts += [e for s in table.sets.values() for e in s.elements.values()]
    return any(chain in _CHAIN_REF.findall(re.sub(r'"[^"]*"', '""', t)) for t in texts)
