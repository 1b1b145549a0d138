"""The nftables rule-set model, and its parser.

Owns: reading nftables rules into one model (tables with a family, chains
with type/hook/priority/policy, rules as token lists, sets and maps with
their elements) from both text forms a node's rules come in:

- an `nft -f` script of commands, one a line (`add table ip kube-proxy
  { comment "..." ; }`, `add chain ...`, `add rule ip kube-proxy CHAIN
  expr`, `add element ... { ... }`, `flush ...`, `delete ...`): what
  kube-proxy writes in one transaction and what knftables' fake dumps;
- `nft list ruleset` output, blocks as the kernel prints them back
  (`table ip kube-proxy { chain x { type filter hook input priority
  filter; policy accept; ... } }`), for reading a live node's tables.

A rule keeps its text exactly as written (for `nft list` output, without the
`# handle N` note), and that text is what the simulator reports. Errors are
ParseErrors naming the line and what was expected.

Pure: parses text it is given; reads no file, runs no `nft`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from netemu.rules.model import ParseError

FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
HOOKS = ("prerouting", "input", "forward", "output", "postrouting", "ingress", "egress")
CHAIN_TYPES = ("filter", "nat", "route")
# The standard priority names nft prints for the ip, ip6 and inet families
# (nft(8), "CHAINS": raw -300, mangle -150, dstnat -100, filter 0,
# security 50, srcnat 100), e.g. `priority dstnat - 10` for -110.
PRIORITY_NAMES = {
    "raw": -300,
    "mangle": -150,
    "dstnat": -100,
    "filter": 0,
    "security": 50,
    "srcnat": 100,
}


@dataclass(frozen=True)
class NftRule:
    """One rule: its tokens (quoted strings keep their quotes) and its text.
    `line_no` is where it was written; `handle` the kernel's, when listed."""

    tokens: tuple[str, ...]
    text: str
    line_no: int = field(default=0, compare=False)
    handle: int | None = field(default=None, compare=False)


@dataclass
class NftChain:
    name: str
    type: str | None = None  # filter | nat | route, for a base chain
    hook: str | None = None
    priority: int | None = None
    policy: str = "accept"
    comment: str | None = None
    rules: list[NftRule] = field(default_factory=list)
    line_no: int = 0

    @property
    def is_base(self) -> bool:
        return self.hook is not None


@dataclass(frozen=True)
class NftElement:
    """A set element's key parts (`172.30.0.41 . tcp . 80`), and for a map
    its value tokens (`goto service-...`, `drop`)."""

    key: tuple[str, ...]
    value: tuple[str, ...] | None = None
    comment: str | None = None
    line_no: int = field(default=0, compare=False)


@dataclass
class NftSet:
    """A named set, or (kind "map") a map; `key_type` is its `type`'s key
    parts, `value_type` a map's value type (`verdict`)."""

    name: str
    kind: str = "set"
    key_type: tuple[str, ...] = ()
    value_type: str | None = None
    flags: tuple[str, ...] = ()
    timeout: str | None = None
    comment: str | None = None
    elements: list[NftElement] = field(default_factory=list)
    line_no: int = 0


@dataclass
class NftTable:
    family: str
    name: str
    comment: str | None = None
    chains: dict[str, NftChain] = field(default_factory=dict)
    sets: dict[str, NftSet] = field(default_factory=dict)
    line_no: int = 0

    @property
    def label(self) -> str:
        """`ip kube-proxy`, as nft names a table."""
        return f"{self.family} {self.name}"


@dataclass
class NftRuleset:
    tables: dict[tuple[str, str], NftTable] = field(default_factory=dict)

    def table(self, family: str, name: str) -> NftTable | None:
        return self.tables.get((family, name))

    def base_chains(self) -> Iterator[tuple[NftTable, NftChain]]:
        for table in self.tables.values():
            for chain in table.chains.values():
                if chain.is_base:
                    yield table, chain


# ---------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    line_no: int
    start: int  # offset of the token in the source text
    end: int


# A quoted string; `# ...` to the end of the line; one of the punctuation
# tokens that stand alone whatever touches them; a newline; or a word (a run
# of anything else: addresses, `10.180.0.1:80`, chain names with `/` and `.`).
_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[{};,]|\n|[^\s{};,"#]+')
_HANDLE = re.compile(r"#\s*handle\s+(\d+)")
NEWLINE = "\n"


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    line_no = 1
    position = 0
    for match in _TOKEN.finditer(text):
        gap = text[position : match.start()]
        if gap.strip():
            bad = gap.strip()[0]
            raise ParseError(line_no + gap[: gap.index(bad)].count("\n"), f"unexpected {bad!r}")
        line_no += gap.count("\n")
        word = match.group()
        if word.startswith('"') and (len(word) < 2 or not word.endswith('"')):
            raise ParseError(line_no, "a quoted string is not closed on its line")
        out.append(_Token(word, line_no, match.start(), match.end()))
        if word == NEWLINE:
            line_no += 1
        position = match.end()
    rest = text[position:]
    if rest.strip():
        raise ParseError(line_no, f"unexpected {rest.strip()[0]!r}")
    return out


def unquote(token: str) -> str:
    if len(token) >= 2 and token.startswith('"') and token.endswith('"'):
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    return token


class _Stream:
    """The tokens of a text, with the position of the next one."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.index = 0
        # The `# handle N` note on the last statement's line (nft -a output).
        self.note_handle: int | None = None

    def _ahead(self, skip_newlines: bool) -> int:
        """The index of the next token that is not a `# ...` note (nor,
        with skip_newlines, a newline)."""
        index = self.index
        while index < len(self.tokens):
            text = self.tokens[index].text
            if not (text.startswith("#") or (skip_newlines and text == NEWLINE)):
                break
            index += 1
        return index

    def peek(self, skip_newlines: bool = False) -> _Token | None:
        index = self._ahead(skip_newlines)
        return self.tokens[index] if index < len(self.tokens) else None

    def next(self, what: str, skip_newlines: bool = False) -> _Token:
        index = self._ahead(skip_newlines)
        if index >= len(self.tokens):
            last = self.tokens[-1].line_no if self.tokens else 1
            raise ParseError(last, f"the text ends where {what} was expected")
        self.index = index + 1
        return self.tokens[index]

    def expect(self, word: str, skip_newlines: bool = False) -> _Token:
        token = self.next(repr(word), skip_newlines)
        if token.text != word:
            raise ParseError(token.line_no, f"expected {word!r}, found {_shown(token.text)}")
        return token

    def statement(self) -> list[_Token]:
        """The tokens up to the end of the line or a `;` outside braces
        (the end is consumed, and `# ...` notes are left out)."""
        out: list[_Token] = []
        depth = 0
        self.note_handle = None
        while self.index < len(self.tokens):
            token = self.tokens[self.index]
            if token.text == "}" and depth == 0:
                break  # the end of the enclosing block ends the statement
            self.index += 1
            if token.text.startswith("#"):
                found = _HANDLE.match(token.text)
                if found and out:
                    self.note_handle = int(found.group(1))
                continue
            if token.text in (NEWLINE, ";") and depth == 0:
                if out:
                    break
                continue
            if token.text == "{":
                depth += 1
            elif token.text == "}":
                depth -= 1
            out.append(token)
        if depth:
            raise ParseError(out[-1].line_no if out else 1, "a '{' is not closed")
        return out


def _shown(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


# ---------------------------------------------------------------- parsing


def parse_nft(text: str) -> NftRuleset:
    """Parse an `nft -f` script or `nft list ruleset` output (the two may
    mix: a script may hold `table ... { ... }` blocks)."""
    if "\0" in text:
        raise ParseError(
            text.count("\n", 0, text.index("\0")) + 1,
            "binary data (a NUL byte): expected nftables rules",
        )
    parser = _Parser(_Stream(text))
    parser.run()
    return parser.ruleset


class _Parser:
    def __init__(self, stream: _Stream) -> None:
        self.s = stream
        self.ruleset = NftRuleset()

    def run(self) -> None:
        while True:
            token = self.s.peek(skip_newlines=True)
            if token is None:
                return
            if token.text == "table":
                self.s.next("table", skip_newlines=True)
                self._table_block(token)
                continue
            if token.text == "}":
                raise ParseError(token.line_no, "a '}' that closes nothing")
            words = self.s.statement()
            if words:
                self._command(words)

    # -- commands (`add chain ip kube-proxy services`)

    def _command(self, words: list[_Token]) -> None:
        verb, line_no = words[0].text, words[0].line_no
        if verb not in ("add", "create", "insert", "flush", "delete", "destroy", "replace"):
            raise ParseError(
                line_no,
                f"unsupported command {_shown(verb)}: expected add, create, insert, "
                "replace, flush, delete or a `table ... {` block",
            )
        if len(words) < 2:
            raise ParseError(line_no, f"{verb} of what? expected table, chain, rule, set, ...")
        kind = words[1].text
        if kind == "ruleset" and verb == "flush":
            self.ruleset.tables.clear()
            return
        if kind not in ("table", "chain", "rule", "set", "map", "element"):
            raise ParseError(
                line_no,
                f"unsupported object {_shown(kind)} after {verb}: expected table, chain, "
                "rule, set, map or element",
            )
        family, name, rest = self._table_name(words[2:], line_no)
        if kind == "table":
            self._table_command(verb, family, name, rest, line_no)
            return
        table = self.ruleset.table(family, name)
        if table is None:
            raise ParseError(line_no, f"no table {family} {name} (add it first)")
        if not rest:
            raise ParseError(line_no, f"{verb} {kind} {family} {name}: expected the {kind}'s name")
        target, body = rest[0], rest[1:]
        if kind == "chain":
            self._chain_command(verb, table, target, body)
        elif kind in ("set", "map"):
            self._set_command(verb, kind, table, target, body)
        elif kind == "element":
            self._element_command(verb, table, target, body)
        else:
            self._rule_command(verb, table, target, body)

    def _table_name(self, words: list[_Token], line_no: int) -> tuple[str, str, list[_Token]]:
        if words and words[0].text in FAMILIES:
            family, words = words[0].text, words[1:]
        else:
            family = "ip"  # nft's default family
        if not words:
            raise ParseError(line_no, "expected a table name")
        return family, words[0].text, words[1:]

    def _table_command(
        self, verb: str, family: str, name: str, body: list[_Token], line_no: int
    ) -> None:
        key = (family, name)
        if verb in ("delete", "destroy"):
            if key not in self.ruleset.tables and verb == "delete":
                raise ParseError(line_no, f"delete table {family} {name}: no such table")
            self.ruleset.tables.pop(key, None)
            return
        table = self.ruleset.tables.get(key)
        if verb == "flush":
            if table is None:
                raise ParseError(line_no, f"flush table {family} {name}: no such table")
            for chain in table.chains.values():
                chain.rules.clear()
            for named in table.sets.values():
                named.elements.clear()
            return
        if table is None:
            table = NftTable(family, name, line_no=line_no)
            self.ruleset.tables[key] = table
        elif verb == "create":
            raise ParseError(line_no, f"create table {family} {name}: it exists already")
        for prop, value in _properties(body, line_no):
            if prop == "comment":
                table.comment = unquote(value[0].text)
            elif prop != "flags":
                raise ParseError(line_no, f"table property {_shown(prop)}: expected comment")

    def _chain_command(self, verb: str, table: NftTable, name: _Token, body: list[_Token]) -> None:
        line_no = name.line_no
        chain = table.chains.get(name.text)
        if verb in ("delete", "destroy"):
            if chain is not None and chain.rules and verb == "delete":
                raise ParseError(line_no, f"delete chain {name.text}: it still has rules")
            if chain is None and verb == "delete":
                raise ParseError(line_no, f"delete chain {name.text}: no such chain")
            table.chains.pop(name.text, None)
            return
        if verb == "flush":
            if chain is None:
                raise ParseError(line_no, f"flush chain {name.text}: no such chain")
            chain.rules.clear()
            return
        if chain is None:
            chain = NftChain(name.text, line_no=line_no)
            table.chains[name.text] = chain
        elif verb == "create":
            raise ParseError(line_no, f"create chain {name.text}: it exists already")
        if body:
            self._chain_properties(chain, _properties(body, line_no), line_no)

    def _chain_properties(
        self, chain: NftChain, props: list[tuple[str, list[_Token]]], line_no: int
    ) -> None:
        for prop, value in props:
            if prop == "type":
                _chain_type(chain, value, line_no)
            elif prop == "policy":
                policy = value[0].text if value else ""
                if policy not in ("accept", "drop"):
                    raise ParseError(line_no, f"policy {_shown(policy)}: expected accept or drop")
                chain.policy = policy
            elif prop == "comment":
                chain.comment = unquote(value[0].text)
            elif prop not in ("devices", "device"):
                raise ParseError(
                    line_no, f"chain property {_shown(prop)}: expected type, policy or comment"
                )

    def _set_command(
        self, verb: str, kind: str, table: NftTable, name: _Token, body: list[_Token]
    ) -> None:
        line_no = name.line_no
        named = table.sets.get(name.text)
        if verb in ("delete", "destroy"):
            if named is None and verb == "delete":
                raise ParseError(line_no, f"delete {kind} {name.text}: no such {kind}")
            table.sets.pop(name.text, None)
            return
        if verb == "flush":
            if named is None:
                raise ParseError(line_no, f"flush {kind} {name.text}: no such {kind}")
            named.elements.clear()
            return
        if named is None:
            named = NftSet(name.text, kind, line_no=line_no)
            table.sets[name.text] = named
        self._set_properties(named, _properties(body, line_no), line_no)

    def _set_properties(
        self, named: NftSet, props: list[tuple[str, list[_Token]]], line_no: int
    ) -> None:
        for prop, value in props:
            if prop == "type" or prop == "typeof":
                words = [t.text for t in value]
                if ":" in words:
                    split = words.index(":")
                    words, named.value_type = words[:split], " ".join(words[split + 1 :])
                    named.kind = "map"
                named.key_type = tuple(w for w in words if w != ".")
            elif prop == "flags":
                named.flags = tuple(
                    f for t in value for f in t.text.split(",") if f and t.text != ","
                )
            elif prop == "timeout":
                named.timeout = value[0].text if value else None
            elif prop == "comment":
                named.comment = unquote(value[0].text)
            elif prop == "elements":
                named.elements.extend(_elements(value, named, line_no))
            elif prop not in ("size", "policy", "gc-interval", "auto-merge", "counter"):
                raise ParseError(
                    line_no,
                    f"{named.kind} property {_shown(prop)}: expected type, flags, timeout, "
                    "comment or elements",
                )

    def _element_command(
        self, verb: str, table: NftTable, name: _Token, body: list[_Token]
    ) -> None:
        named = table.sets.get(name.text)
        if named is None:
            raise ParseError(name.line_no, f"{verb} element: no set or map {name.text!r}")
        elements = _elements(body, named, name.line_no)
        if verb in ("delete", "destroy"):
            for element in elements:
                kept = [e for e in named.elements if e.key != element.key]
                if len(kept) == len(named.elements) and verb == "delete":
                    raise ParseError(
                        name.line_no,
                        f"delete element {' . '.join(element.key)}: not in {name.text}",
                    )
                named.elements = kept
            return
        known = {e.key for e in named.elements}
        for element in elements:
            if element.key in known:
                if verb == "create":
                    raise ParseError(name.line_no, f"element {' . '.join(element.key)} exists")
                continue  # `add` of an element that is there changes nothing
            named.elements.append(element)
            known.add(element.key)

    def _rule_command(
        self, verb: str, table: NftTable, chain_name: _Token, body: list[_Token]
    ) -> None:
        chain = table.chains.get(chain_name.text)
        line_no = chain_name.line_no
        if chain is None:
            raise ParseError(line_no, f"{verb} rule: no chain {chain_name.text!r} in {table.label}")
        if verb in ("delete", "destroy", "replace"):
            if len(body) < 2 or body[0].text != "handle" or not body[1].text.isdigit():
                raise ParseError(line_no, f"{verb} rule: expected `handle N`")
            handle = int(body[1].text)
            index = next((i for i, r in enumerate(chain.rules) if r.handle == handle), None)
            if index is None:
                if verb == "destroy":
                    return
                raise ParseError(line_no, f"{verb} rule: no rule with handle {handle}")
            if verb == "replace":
                chain.rules[index] = self._rule(body[2:], line_no)
            else:
                del chain.rules[index]
            return
        if verb in ("add", "insert") and body and body[0].text in ("position", "handle", "index"):
            raise ParseError(line_no, f"{verb} rule at a {body[0].text}: not supported")
        if not body:
            raise ParseError(line_no, f"{verb} rule to {chain_name.text}: the rule is empty")
        rule = self._rule(body, line_no)
        if verb == "insert":
            chain.rules.insert(0, rule)
        else:
            chain.rules.append(rule)

    def _rule(self, body: list[_Token], line_no: int, handle: int | None = None) -> NftRule:
        text = self.s.text[body[0].start : body[-1].end]
        return NftRule(tuple(t.text for t in body), text, body[0].line_no or line_no, handle)

    # -- blocks (`table ip kube-proxy { ... }`, as `nft list ruleset` prints)

    def _table_block(self, keyword: _Token) -> None:
        words = []
        while True:
            token = self.s.next("'{'")
            if token.text == "{":
                break
            words.append(token)
        family, name, rest = self._table_name(words, keyword.line_no)
        if rest:
            raise ParseError(keyword.line_no, f"unexpected {_shown(rest[0].text)} after table name")
        table = self.ruleset.tables.get((family, name))
        if table is None:
            table = NftTable(family, name, line_no=keyword.line_no)
            self.ruleset.tables[(family, name)] = table
        while True:
            token = self.s.next("'}' closing the table", skip_newlines=True)
            if token.text == "}":
                return
            if token.text == ";":
                continue
            if token.text == "chain":
                self._chain_block(table, self.s.next("a chain name"))
            elif token.text in ("set", "map"):
                self._set_block(table, token.text, self.s.next(f"a {token.text} name"))
            elif token.text == "comment":
                table.comment = unquote(self.s.next("a comment").text)
            elif token.text == "flags":
                self.s.statement()
            else:
                raise ParseError(
                    token.line_no,
                    f"unexpected {_shown(token.text)} in table {table.label}: expected chain, "
                    "set, map or comment",
                )

    def _chain_block(self, table: NftTable, name: _Token) -> None:
        self.s.expect("{")
        chain = table.chains.get(name.text)
        if chain is None:
            chain = NftChain(name.text, line_no=name.line_no)
            table.chains[name.text] = chain
        while True:
            token = self.s.peek(skip_newlines=True)
            if token is None:
                raise ParseError(name.line_no, f"chain {name.text}: no '}}' closes it")
            if token.text == "}":
                self.s.next("'}'", skip_newlines=True)
                return
            words = self.s.statement()
            if not words:
                continue
            first = words[0].text
            if first in ("type", "policy", "comment", "devices", "device"):
                self._chain_properties(chain, [(first, words[1:])], words[0].line_no)
            else:
                chain.rules.append(self._rule(words, words[0].line_no, self.s.note_handle))

    def _set_block(self, table: NftTable, kind: str, name: _Token) -> None:
        self.s.expect("{")
        named = table.sets.get(name.text)
        if named is None:
            named = NftSet(name.text, kind, line_no=name.line_no)
            table.sets[name.text] = named
        while True:
            token = self.s.peek(skip_newlines=True)
            if token is None:
                raise ParseError(name.line_no, f"{kind} {name.text}: no '}}' closes it")
            if token.text == "}":
                self.s.next("'}'", skip_newlines=True)
                return
            words = self.s.statement()
            if not words:
                continue
            value = words[1:]
            if words[0].text == "elements" and value and value[0].text == "=":
                value = value[1:]
            self._set_properties(named, [(words[0].text, value)], words[0].line_no)


def _chain_type(chain: NftChain, words: list[_Token], line_no: int) -> None:
    """`filter hook prerouting priority dstnat - 10` (after `type`)."""
    texts = [t.text for t in words]
    if len(texts) < 5 or texts[1] != "hook" or texts[3] != "priority":
        raise ParseError(line_no, "chain type: expected `type T hook H priority P`")
    if texts[0] not in CHAIN_TYPES:
        raise ParseError(line_no, f"chain type {_shown(texts[0])}: expected filter, nat or route")
    if texts[2] not in HOOKS:
        raise ParseError(line_no, f"hook {_shown(texts[2])}: expected one of {', '.join(HOOKS)}")
    chain.type, chain.hook = texts[0], texts[2]
    chain.priority = _priority(texts[4:], line_no)


def _priority(words: list[str], line_no: int) -> int:
    """`-110`, `filter`, `dstnat - 10`, `srcnat + 5`."""
    text = " ".join(words).replace(" ", "")
    found = re.fullmatch(r"([a-z]+)?([+-]?\d+)?", text) if text else None
    if found is None or not any(found.groups()):
        raise ParseError(line_no, f"priority {_shown(' '.join(words))}: expected a number or name")
    name, number = found.groups()
    if name is not None and name not in PRIORITY_NAMES:
        raise ParseError(
            line_no, f"priority {name!r}: expected one of {', '.join(PRIORITY_NAMES)} or a number"
        )
    base = PRIORITY_NAMES[name] if name else 0
    if name and number and number[0] not in "+-":
        raise ParseError(line_no, f"priority {_shown(' '.join(words))}: expected NAME +/- N")
    return base + (int(number) if number else 0)


def _properties(body: list[_Token], line_no: int) -> list[tuple[str, list[_Token]]]:
    """`{ type ipv4_addr ; flags interval ; comment "x" ; }` as (name, words)
    pairs; an empty body has none."""
    if not body:
        return []
    if body[0].text != "{" or body[-1].text != "}":
        raise ParseError(line_no, f"expected '{{ ... }}', found {_shown(body[0].text)}")
    props: list[tuple[str, list[_Token]]] = []
    current: list[_Token] = []
    depth = 0
    for token in body[1:-1]:
        if token.text == "{":
            depth += 1
        elif token.text == "}":
            depth -= 1
        if token.text in (";", NEWLINE) and depth == 0:
            if current:
                props.append((current[0].text, current[1:]))
            current = []
            continue
        if not token.text.startswith("#"):
            current.append(token)
    if current:
        props.append((current[0].text, current[1:]))
    for name, value in props:
        if name == "elements" and value and value[0].text == "=":
            value[:] = value[1:]
    return props


def _elements(body: list[_Token], named: NftSet, line_no: int) -> list[NftElement]:
    """`{ a . tcp . 80 comment "c" : goto x, b ... }`: the elements."""
    words = [t for t in body if t.text != NEWLINE and not t.text.startswith("#")]
    if not words or words[0].text != "{" or words[-1].text != "}":
        raise ParseError(line_no, f"elements of {named.name}: expected '{{ ... }}'")
    out: list[NftElement] = []
    current: list[_Token] = []
    for token in [*words[1:-1], _Token(",", line_no, 0, 0)]:
        if token.text != ",":
            current.append(token)
            continue
        if not current:
            continue
        out.append(_element(current, named))
        current = []
    return out


def _element(words: list[_Token], named: NftSet) -> NftElement:
    texts = [t.text for t in words]
    line_no = words[0].line_no
    value: tuple[str, ...] | None = None
    if ":" in texts:
        split = texts.index(":")
        texts, value = texts[:split], tuple(texts[split + 1 :])
        if not value:
            raise ParseError(line_no, f"element of {named.name}: nothing after ':'")
    elif named.kind == "map":
        raise ParseError(
            line_no, f"element {' '.join(texts)} of map {named.name}: expected `key : value`"
        )
    comment = None
    for option in ("comment", "timeout", "expires"):
        if option in texts:
            at = texts.index(option)
            if at + 1 >= len(texts):
                raise ParseError(line_no, f"element of {named.name}: {option} without a value")
            if option == "comment":
                comment = unquote(texts[at + 1])
            texts = texts[:at] + texts[at + 2 :]
    key = tuple(t for t in texts if t != ".")
    if not key:
        raise ParseError(line_no, f"element of {named.name}: expected a key")
    if named.key_type and len(key) != len(named.key_type):
        raise ParseError(
            line_no,
            f"element {' . '.join(key)} of {named.name}: expected {len(named.key_type)} "
            f"parts ({' . '.join(named.key_type)})",
        )
    return NftElement(key, value, comment, line_no)
