"""Applying and reading iptables rule sets inside a network namespace.

Rules are always applied in one batch through iptables-restore (never rule
by rule); `noflush` keeps chains netemu does not own, as kube-proxy does.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from netemu.kernel.journal import run_dir
from netemu.rules.model import ParseError, RuleSet, parse_restore

Backend = Literal["nft", "legacy"]
Family = Literal["IPv4", "IPv6"]


class IptablesError(RuntimeError):
    pass


class Iptables(Protocol):
    def restore(self, text: str, *, noflush: bool = True) -> None: ...

    def save(self) -> str: ...


def node_lock_file(lab: str, netns: str) -> Path:
    """The xtables lock of one node namespace of a lab, in the lab's run
    directory (removed with it). A real node has its own /run/xtables.lock,
    which iptables-restore holds while it writes (the legacy backend for
    the whole restore); with the host's one lock, every node's kube-proxy
    and kubelet waited for every other node's restores."""
    return run_dir(lab) / f"xtables-{netns}.lock"


@dataclass
class KernelIptables:
    """iptables-restore / iptables-save of one backend, run in namespace
    `netns`; ip6tables-restore / ip6tables-save for the IPv6 family (kube-proxy's
    IPv6 proxier). `lock_file`: the xtables lock its restores take
    (XTABLES_LOCKFILE; see node_lock_file); None takes the host's,
    /run/xtables.lock."""

    netns: str
    backend: Backend = "nft"
    family: Family = field(default="IPv4", kw_only=True)
    lock_file: Path | None = field(default=None, kw_only=True)

    @property
    def _tool(self) -> str:
        return "ip6tables" if self.family == "IPv6" else "iptables"

    def _command(self, action: str) -> list[str]:
        # iptables-nft-restore / ip6tables-legacy-save, ...: the backend is explicit.
        return ["ip", "netns", "exec", self.netns, f"{self._tool}-{self.backend}-{action}"]

    def restore(self, text: str, *, noflush: bool = True) -> None:
        cmd = [*self._command("restore"), "--counters"]
        if noflush:
            cmd.append("--noflush")
        env = None
        if self.lock_file is not None:
            env = {**os.environ, "XTABLES_LOCKFILE": str(self.lock_file)}
        done = subprocess.run(cmd, input=text, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0:
            raise IptablesError(f"{self._tool}-restore failed: {done.stderr.strip()}")

    def save(self) -> str:
        done = subprocess.run(self._command("save"), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise IptablesError(f"{self._tool}-save failed: {done.stderr.strip()}")
        return done.stdout


@dataclass
class FakeIptables:
    """Behaves like iptables-restore: parses the whole input first and applies
    nothing if any line is bad; a declared user chain is flushed; `-X` deletes."""

    ruleset: RuleSet = field(default_factory=RuleSet)
    last_transaction: str | None = None

    def restore(self, text: str, *, noflush: bool = True) -> None:
        try:
            incoming = parse_restore(text, inserts=True)
        except ParseError as exc:
            raise IptablesError(f"iptables-restore failed: {exc}") from exc
        result = parse_restore(self.ruleset.render()) if self.ruleset.tables else RuleSet()
        for name, table in incoming.tables.items():
            current = result.table(name)
            if not noflush:
                current.chains.clear()
                current.rules.clear()
            for chain in table.chains:
                current.rules = [r for r in current.rules if r.chain != chain]
                if chain not in current.chains:
                    current.chains.append(chain)
            current.policies.update(table.policies)
            for rule in table.rules:
                if not current.has_chain(rule.chain):
                    raise IptablesError(f"iptables-restore failed: no chain {rule.chain!r}")
                current.rules.append(rule)
            for rule in table.inserts:  # `-I chain 1`: before the chain's first rule
                if not current.has_chain(rule.chain):
                    raise IptablesError(f"iptables-restore failed: no chain {rule.chain!r}")
                current.rules.insert(
                    next((i for i, r in enumerate(current.rules) if r.chain == rule.chain), 0),
                    rule,
                )
            for chain in table.deletions:
                if any(r.chain == chain for r in current.rules):
                    raise IptablesError(f"iptables-restore failed: chain {chain!r} not empty")
                # The kernel refuses to delete a chain a rule still jumps to
                # (EBUSY, "Too many links" from iptables-legacy-restore).
                if any(_jumps_to(r.args, chain) for r in current.rules):
                    raise IptablesError(
                        f"iptables-restore failed: chain {chain!r} is still referenced"
                    )
                current.chains = [c for c in current.chains if c != chain]
        self.ruleset = result
        self.last_transaction = text

    def save(self) -> str:
        return self.ruleset.render()


def _jumps_to(args: str, chain: str) -> bool:
    """Whether rule arguments jump (-j) or go (-g) to `chain`."""
    tokens = args.split()
    return any(
        tok in ("-j", "--jump", "-g", "--goto") and nxt == chain
        for tok, nxt in itertools.pairwise(tokens)
    )
