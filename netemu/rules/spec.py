"""Structured view of one rule's arguments, for matching packets and for
comparing rules written in kube-proxy's argument order with the kernel's
normalised `iptables-save` output (`-d 10.0.0.1/32`, `--set-xmark`,
`--probability 0.33333333349`, `--reject-with icmp-port-unreachable`, ...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import netaddr

from netemu.rules.model import RuleSet, tokenize

_CORE = {
    "-s": "src",
    "--source": "src",
    "--src": "src",
    "-d": "dst",
    "--destination": "dst",
    "--dst": "dst",
    "-p": "proto",
    "--protocol": "proto",
    "-i": "in",
    "--in-interface": "in",
    "-o": "out",
    "--out-interface": "out",
}
_FLAG_OPTIONS = {
    "--rcheck",
    "--set",
    "--update",
    "--remove",
    "--reap",
    "--rsource",
    "--rdest",
    "--random",
    "--random-fully",
    "--persistent",
    "--rttl",
    "--fragment",
}


@dataclass(frozen=True)
class Option:
    name: str
    values: tuple[str, ...]
    negated: bool = False


@dataclass(frozen=True)
class Match:
    module: str
    options: tuple[Option, ...]

    def get(self, name: str) -> Option | None:
        for opt in self.options:
            if opt.name == name:
                return opt
        return None


@dataclass(frozen=True)
class RuleSpec:
    core: dict[str, tuple[str, bool]] = field(default_factory=dict)  # src/dst/proto/in/out
    matches: tuple[Match, ...] = ()
    target: str | None = None
    goto: bool = False
    target_options: tuple[Option, ...] = ()

    def match(self, module: str) -> Match | None:
        for m in self.matches:
            if m.module == module:
                return m
        return None

    def target_option(self, name: str) -> Option | None:
        for opt in self.target_options:
            if opt.name == name:
                return opt
        return None


@lru_cache(maxsize=65536)
def parse_args(args: str) -> RuleSpec:
    """Parse the arguments of one `-A CHAIN ...` line."""
    tokens = tokenize(args)
    core: dict[str, tuple[str, bool]] = {}
    matches: list[tuple[str, list[Option]]] = []
    target: str | None = None
    goto = False
    target_opts: list[Option] = []
    negate = False
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "!":
            negate = True
            i += 1
            continue
        if tok in _CORE:
            core[_CORE[tok]] = (tokens[i + 1], negate)
            negate = False
            i += 2
            continue
        if tok in ("-m", "--match"):
            matches.append((tokens[i + 1], []))
            i += 2
            continue
        if tok in ("-j", "--jump", "-g", "--goto"):
            target = tokens[i + 1]
            goto = tok in ("-g", "--goto")
            i += 2
            continue
        if tok.startswith("--"):
            values: list[str] = []
            j = i + 1
            if tok not in _FLAG_OPTIONS:
                while j < len(tokens) and tokens[j] != "!" and not tokens[j].startswith("-"):
                    values.append(tokens[j])
                    j += 1
                    if tok not in ("--ctstate", "--state") and len(values) == 1:
                        break
            opt = Option(tok[2:], tuple(values), negate)
            negate = False
            if target is not None:
                target_opts.append(opt)
            else:
                if not matches or (
                    tok in ("--dport", "--sport", "--destination-port", "--source-port")
                    and matches[-1][0] not in ("tcp", "udp", "sctp", "multiport")
                ):
                    # An implicit protocol match (`-p tcp --dport 80` without `-m tcp`).
                    matches.append((core.get("proto", ("", False))[0], []))
                matches[-1][1].append(opt)
            i = j
            continue
        raise ValueError(f"cannot parse rule arguments at {tok!r}: {args}")
    return RuleSpec(
        core=core,
        matches=tuple(Match(m, tuple(opts)) for m, opts in matches),
        target=target,
        goto=goto,
        target_options=tuple(target_opts),
    )


# ---------------------------------------------------------------- canonical form

Canonical = tuple[object, ...]


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"{text!r} is not a number (decimal, or hex with 0x)") from None


# What iptables-save and ip6tables-save print for `-m recent` without --mask:
# the whole address of the family.
_RECENT_DEFAULT_MASKS = (("255.255.255.255",), ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",))


def mark_pair(text: str) -> tuple[int, int]:
    """`value[/mask]` as iptables writes marks; no mask is all 32 bits."""
    value, _, mask = text.partition("/")
    return _int(value), _int(mask) if mask else 0xFFFFFFFF


def _cidr(text: str) -> str:
    return str(netaddr.IPNetwork(text))


def canonical(args: str) -> Canonical:
    """A form in which a rule compares equal however iptables prints it."""
    spec = parse_args(args)
    core = tuple(
        sorted(
            (key, _cidr(value) if key in ("src", "dst") else value.lower(), neg)
            for key, (value, neg) in spec.core.items()
        )
    )
    matches: list[tuple[object, ...]] = []
    for m in spec.matches:
        opts: list[tuple[object, ...]] = []
        for o in m.options:
            values: tuple[object, ...] = o.values
            if m.module == "mark" and o.name == "mark":
                values = mark_pair(o.values[0])
            elif m.module == "statistic" and o.name == "probability":
                # The kernel keeps lround(2^31 * p); iptables-save prints it back with 11 decimals.
                values = (round(float(o.values[0]) * 0x80000000),)
            elif m.module == "recent" and (
                (o.name == "mask" and o.values in _RECENT_DEFAULT_MASKS) or o.name == "rsource"
            ):
                continue
            elif o.name in ("ctstate", "state"):
                values = tuple(sorted(o.values[0].split(",")))
            opts.append((o.name, values, o.negated))
        module = m.module
        matches.append((module, tuple(sorted(opts, key=repr))))
    target_opts: list[tuple[object, ...]] = []
    for o in spec.target_options:
        target_opts.append((o.name, o.values, o.negated))
    if spec.target == "MARK":
        target_opts = [("set-xmark", mark_target(spec), False)]
    elif spec.target == "REJECT" and not spec.target_option("reject-with"):
        # The default each family's REJECT fills in (ip6tables: ICMPv6).
        ipv6 = any(":" in value for key, (value, _) in spec.core.items() if key in ("src", "dst"))
        default = "icmp6-port-unreachable" if ipv6 else "icmp-port-unreachable"
        target_opts.append(("reject-with", (default,), False))
    return (
        core,
        tuple(sorted(matches, key=repr)),
        spec.target,
        spec.goto,
        tuple(sorted(target_opts, key=repr)),
    )


def mark_target(spec: RuleSpec) -> tuple[int, int]:
    """MARK's options as the kernel stores them: (value, mask) of --set-xmark."""
    for opt in spec.target_options:
        v = opt.values[0] if opt.values else "0"
        if opt.name in ("set-xmark", "set-mark"):
            return mark_pair(v)
        if opt.name == "or-mark":
            return _int(v), _int(v)
        if opt.name == "xor-mark":
            return _int(v), 0
        if opt.name == "and-mark":
            return 0, (~_int(v)) & 0xFFFFFFFF
    raise ValueError("MARK without a mark option")


def canonical_ruleset(ruleset: RuleSet) -> dict[str, dict[str, list[Canonical]]]:
    """table → chain → canonical rules, with empty ACCEPT built-in chains left out."""
    out: dict[str, dict[str, list[Canonical]]] = {}
    for name, table in ruleset.tables.items():
        chains: dict[str, list[Canonical]] = {c: [] for c in table.chains}
        for chain, policy in table.policies.items():
            if policy != "ACCEPT":
                chains[chain] = []
        for rule in table.rules:
            chains.setdefault(rule.chain, []).append(canonical(rule.args))
        chains = {
            c: rules
            for c, rules in chains.items()
            if rules or c in table.chains or table.policies.get(c, "ACCEPT") != "ACCEPT"
        }
        if chains:
            out[name] = chains
    return out
