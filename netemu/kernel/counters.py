"""Live packet and byte counters of the iptables rules in one network
namespace, as `iptables-save -c` text: `[pkts:bytes] -A CHAIN ...` for rules,
`:CHAIN POLICY [pkts:bytes]` for built-in chains.

nft backend: `iptables-nft-save -c` run in the namespace. python-iptables
speaks libiptc, the legacy x_tables interface, and cannot see rules kept in
nf_tables.

legacy backend: the rule text comes from `iptables-legacy-save` and the
counters from python-iptables (libiptc), read by a thread inside the
namespace; the two are aligned by (table, chain, position). They are two
snapshots, so a rule set that changes in between is detected (a chain
appears or disappears, or its rule count differs), read once more, and
reported as CountersError if it changes again.

Owns: the libiptc handles it opens (and their sockets), freed before
returning; python-iptables' process-wide Table objects are left closed, so
any other user of `iptc` in this process must refresh() a table before use.
Must not touch: any rule, chain or counter. It only reads; a libiptc handle
is never committed.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sysconfig
import threading
from dataclasses import dataclass, field
from typing import Any

from netemu.kernel import netns
from netemu.kernel.iptables import Backend, IptablesError, KernelIptables


class CountersError(RuntimeError):
    pass


@dataclass(frozen=True)
class RuleCounter:
    """One rule's counters; `index` is its 1-based position in the chain
    (as `iptables -L --line-numbers` counts), `rule` its `-A CHAIN ...` line."""

    table: str
    chain: str
    index: int
    packets: int
    bytes: int
    rule: str


def read_counters(netns_name: str, backend: Backend) -> str:
    """The namespace's rules with their counters, in `iptables-save -c` format."""
    if backend == "nft":
        return _nft_save_counters(netns_name)
    return _legacy_counters(netns_name)


def rule_counters(netns_name: str, backend: Backend) -> list[RuleCounter]:
    """Every rule of the namespace with its counters, in save order."""
    return parse_counters(read_counters(netns_name, backend))


_COUNTED_RULE = re.compile(r"^\[(\d+):(\d+)\]\s+(-A\s+(\S+).*)$")


def parse_counters(text: str) -> list[RuleCounter]:
    """The rules of `iptables-save -c` text with their counters."""
    out: list[RuleCounter] = []
    table: str | None = None
    positions: dict[tuple[str, str], int] = {}
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("*"):
            table = line[1:].strip()
            continue
        match = _COUNTED_RULE.match(line)
        if match is None:
            if line.startswith("-A"):
                raise CountersError(f"line {line_no}: rule without counters: {line!r}")
            continue
        if table is None:
            raise CountersError(f"line {line_no}: rule outside of a *table section")
        chain = match.group(4)
        index = positions.get((table, chain), 0) + 1
        positions[(table, chain)] = index
        out.append(
            RuleCounter(
                table=table,
                chain=chain,
                index=index,
                packets=int(match.group(1)),
                bytes=int(match.group(2)),
                rule=match.group(3),
            )
        )
    return out


# ---------------------------------------------------------------- nft


def _nft_save_counters(netns_name: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", netns_name, "iptables-nft-save", "-c"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise IptablesError(f"iptables-nft-save -c failed: {done.stderr.strip()}")
    return done.stdout


# ---------------------------------------------------------------- legacy

# python-iptables keeps one Table object per table name for the whole process,
# whatever namespace it was read in, and its Chain objects in a shared cache:
# one reader at a time.
_IPTC_LOCK = threading.Lock()


@dataclass
class _ChainCounters:
    policy: tuple[int, int] | None  # built-in chains only
    rules: list[tuple[int, int]] = field(default_factory=list)


class _Mismatch(Exception):
    """The save text and libiptc's snapshot disagree (the rules changed in between)."""


def _legacy_counters(netns_name: str) -> str:
    iptc = _import_iptc()
    kernel = KernelIptables(netns_name, "legacy")
    problem = ""
    for _attempt in range(2):
        text = kernel.save()
        tables = [line[1:].strip() for line in text.splitlines() if line.startswith("*")]
        live = _read_live(iptc, netns_name, tables)
        try:
            return _merge(text, live)
        except _Mismatch as exc:
            problem = str(exc)
    raise CountersError(
        f"the legacy rules of {netns_name!r} changed while their counters were read, "
        f"twice in a row ({problem}); try again"
    )


def _read_live(
    iptc: Any, netns_name: str, tables: list[str]
) -> dict[str, dict[str, _ChainCounters]]:
    live: dict[str, dict[str, _ChainCounters]] = {}
    # Only the tables iptables-legacy-save listed: opening another one through
    # libiptc would load and create it in the namespace.
    with _IPTC_LOCK, netns.entered(netns_name):
        for name in tables:
            try:
                # Created here, inside the namespace: libiptc reads the table
                # through a socket opened in the calling thread's namespace.
                # autocommit=False: with it on, every get_policy() would
                # refresh the handle and free the entries being walked, and
                # freeing the handle would try to commit it.
                table = iptc.Table(name, autocommit=False)
                # The instance is cached per name and may hold an older
                # snapshot (or another namespace's): read the table afresh.
                table.refresh()
            except iptc.IPTCError as exc:
                raise CountersError(f"python-iptables cannot read table {name!r}: {exc}") from exc
            try:
                chains: dict[str, _ChainCounters] = {}
                for chain in table.chains:
                    _, policy_counters = table.get_policy(chain.name)
                    counters = _ChainCounters(
                        None if policy_counters is None else tuple(policy_counters)
                    )
                    # Raw entries rather than chain.rules: decoding every rule
                    # into Match/Target objects loads each extension and costs
                    # ~35x more, and only the counters are wanted here.
                    entry = table.first_rule(chain.name)
                    while entry:
                        counters.rules.append((entry.counters.pcnt, entry.counters.bcnt))
                        entry = table.next_rule(entry)
                    chains[chain.name] = counters
                live[name] = chains
            finally:
                # Frees the handle and closes its socket, which would otherwise
                # keep the namespace alive after it is removed.
                table.close()
    return live


def _merge(text: str, live: dict[str, dict[str, _ChainCounters]]) -> str:
    """The save text with libiptc's counters put on its chain and rule lines."""
    out: list[str] = []
    table: dict[str, _ChainCounters] = {}
    table_name = ""
    seen: dict[tuple[str, str], int] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            table_name = line[1:].strip()
            table = live.get(table_name, {})
            out.append(line)
        elif line.startswith(":"):
            chain, policy = line[1:].split()[:2]
            if chain not in table:
                raise _Mismatch(f"chain {table_name}/{chain} not seen by libiptc")
            seen.setdefault((table_name, chain), 0)
            policy_counters = table[chain].policy
            if policy != "-" and policy_counters is not None:
                packets, nbytes = policy_counters
                out.append(f":{chain} {policy} [{packets}:{nbytes}]")
            else:
                out.append(line)
        elif line.startswith("-A "):
            chain = line.split(maxsplit=2)[1]
            index = seen.get((table_name, chain), 0)
            rules = table[chain].rules if chain in table else []
            if index >= len(rules):
                raise _Mismatch(f"{table_name}/{chain} has fewer than {index + 1} rules in libiptc")
            seen[(table_name, chain)] = index + 1
            packets, nbytes = rules[index]
            out.append(f"[{packets}:{nbytes}] {line}")
        else:
            out.append(line)
    for name, chains in live.items():
        for chain, counters in chains.items():
            if (name, chain) not in seen:
                raise _Mismatch(f"chain {name}/{chain} not in iptables-legacy-save")
            if seen[(name, chain)] != len(counters.rules):
                raise _Mismatch(
                    f"{name}/{chain}: {seen[(name, chain)]} rules saved, "
                    f"{len(counters.rules)} in libiptc"
                )
    return "\n".join(out) + "\n"


def _xtables_libdir() -> str | None:
    """The distribution's directory of iptables extensions (libxt_*.so)."""
    arch = sysconfig.get_config_var("MULTIARCH")
    candidates = [f"/usr/lib/{arch}/xtables"] if arch else []
    candidates += [
        *sorted(glob.glob("/usr/lib/*/xtables")),
        "/usr/lib64/xtables",
        "/usr/lib/xtables",
    ]
    return next((d for d in candidates if os.path.isdir(d)), None)


def _import_iptc() -> Any:
    # Without XTABLES_LIBDIR, python-iptables runs `/sbin/ldconfig -N -v` when
    # imported and takes the first library directory that has an xtables/
    # subdirectory, /usr/local/lib ahead of the distribution's; extensions
    # from another iptables build than the libxtables it loaded can fail to
    # load. The distribution's directory (Debian: /usr/lib/x86_64-linux-gnu/
    # xtables) is the one iptables-legacy itself uses. A value already set is
    # kept.
    if "XTABLES_LIBDIR" not in os.environ:
        libdir = _xtables_libdir()
        if libdir is not None:
            os.environ["XTABLES_LIBDIR"] = libdir
    try:
        import iptc
    except Exception as exc:  # XTablesError, OSError: missing libip4tc/libxtables
        raise CountersError(
            f"python-iptables cannot be used here ({exc}); the legacy backend needs "
            "libip4tc and libxtables (Debian: iptables, libip4tc2, libxtables12)"
        ) from exc
    return iptc
