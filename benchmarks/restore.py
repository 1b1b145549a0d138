"""iptables-restore of large compiled rule sets into a namespace, nft against legacy.

Run (as root):  .venv/bin/python benchmarks/restore.py [--write]
--write replaces this benchmark's section of benchmarks/RESULTS.md (and only
that). For N Services × 5 endpoints (benchmarks/compile.py's input) one
node's rules are compiled once; then, in a fresh namespace with kube-proxy's
nfacct objects, `KernelIptables(netns, backend).restore(text, noflush=True)`
is timed twice: the first restore into the empty namespace (`compile_node`,
what a fresh node gets, with the jumps from the built-in chains) and a
re-sync of the same rules after it (`compile_sync`, what kube-proxy writes
on a later sync: its own chains, each declared, so flushed and written
again; restoring `compile_node`'s text twice would append the built-in
chains' jump rules a second time). For comparison, the first restore is
also timed with noflush=False (no `--noflush`) in another fresh namespace.
Every restore is checked against iptables-save in the last run. Times are
wall-clock medians of 3 runs (new namespaces each run; `ip netns exec`
start-up included), both backends in every round, so compare them only
within one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from compile import ENDPOINTS, make_input
from results import commit, machine, replace_section

from netemu.kernel import netns, nfacct
from netemu.kernel.iptables import Backend, KernelIptables
from netemu.rules.iptables import (
    NFACCT_INVALID_DROPPED,
    NFACCT_LOCALHOST_NODEPORTS,
    compile_node,
    compile_sync,
)

PREFIX = "nebench_restore_"
BACKENDS: tuple[Backend, ...] = ("nft", "legacy")
SERVICES = (1_000, 5_000)
SECTION = "## restore (benchmarks/restore.py)"
FIRST, RESYNC, FLUSH = "first", "re-sync", "first without --noflush"


@dataclass
class Row:
    services: int
    first: str  # compile_node's restore input
    resync: str  # compile_sync's
    times: dict[tuple[Backend, str], list[float]] = field(default_factory=dict)

    @property
    def rules(self) -> int:
        return count_rules(self.first)

    def add(self, backend: Backend, kind: str, seconds: float) -> None:
        self.times.setdefault((backend, kind), []).append(seconds)

    def median(self, backend: Backend, kind: str) -> float:
        return statistics.median(self.times[(backend, kind)])

    def ratio(self, kind: str) -> float:
        return self.median("nft", kind) / self.median("legacy", kind)


def count_rules(text: str) -> int:
    return sum(line.startswith("-A ") for line in text.splitlines())


@contextmanager
def namespace(name: str) -> Iterator[str]:
    netns.create(name)
    try:
        nfacct.ensure(name, (NFACCT_LOCALHOST_NODEPORTS, NFACCT_INVALID_DROPPED))
        yield name
    finally:
        netns.remove(name)


def timed_restore(kernel: KernelIptables, text: str, noflush: bool) -> float:
    start = time.perf_counter()
    kernel.restore(text, noflush=noflush)
    return time.perf_counter() - start


def check(kernel: KernelIptables, row: Row) -> None:
    saved = count_rules(kernel.save())
    if saved != row.rules:
        raise RuntimeError(f"{kernel.backend}: {saved} rules saved, {row.rules} compiled")


def run_once(row: Row, backend: Backend, run: int, last: bool) -> None:
    name = f"{PREFIX}{backend}_{row.services}_{run}"
    with namespace(name) as ns:
        kernel = KernelIptables(ns, backend)
        row.add(backend, FIRST, timed_restore(kernel, row.first, noflush=True))
        row.add(backend, RESYNC, timed_restore(kernel, row.resync, noflush=True))
        if last:
            check(kernel, row)
    with namespace(name + "_flush") as ns:
        kernel = KernelIptables(ns, backend)
        row.add(backend, FLUSH, timed_restore(kernel, row.first, noflush=False))
        if last:
            check(kernel, row)


def measure(services: int, runs: int) -> Row:
    data = make_input(services)
    row = Row(services, compile_node(data).render(), compile_sync(data).render())
    for run in range(runs):
        for backend in BACKENDS:
            run_once(row, backend, run, last=run == runs - 1)
    return row


def summary(row: Row) -> str:
    parts = [
        f"{kind}: nft {row.median('nft', kind):.3f} s, legacy {row.median('legacy', kind):.3f} s"
        f" (nft/legacy {row.ratio(kind):.1f})"
        for kind in (FIRST, RESYNC, FLUSH)
    ]
    return f"{row.services:,} services × {ENDPOINTS}: " + "; ".join(parts)


def table(rows: list[Row], runs: int) -> list[str]:
    def s(row: Row, backend: Backend, kind: str) -> str:
        return f"{row.median(backend, kind):.3f}"

    def lines(text: str) -> str:
        return f"{text.count(chr(10)):,}"

    return [
        SECTION,
        "",
        f"`.venv/bin/python benchmarks/restore.py --write`; {machine()}.",
        "`iptables-{nft,legacy}-restore --noflush` (`KernelIptables.restore(text,",
        "noflush=True)`, `ip netns exec` included) of one node's compiled rules into a",
        "fresh namespace with the nfacct objects (first: `compile_node`), then a",
        "re-sync of the same rules (`compile_sync`: kube-proxy's own chains, declared,",
        "so flushed and rewritten). Last columns: the first restore without",
        f"`--noflush`, in another fresh namespace. Seconds, median of {runs} runs;",
        "ratios are nft / legacy.",
        "",
        "| services × endpoints | rules | lines first / re-sync "
        "| nft first | legacy first | nft / legacy "
        "| nft re-sync | legacy re-sync | nft / legacy "
        "| nft first, no --noflush | legacy first, no --noflush | nft / legacy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {r.services:,} × {ENDPOINTS} | {r.rules:,} "
            f"| {lines(r.first)} / {lines(r.resync)} "
            f"| {s(r, 'nft', FIRST)} | {s(r, 'legacy', FIRST)} | {r.ratio(FIRST):.1f} "
            f"| {s(r, 'nft', RESYNC)} | {s(r, 'legacy', RESYNC)} | {r.ratio(RESYNC):.1f} "
            f"| {s(r, 'nft', FLUSH)} | {s(r, 'legacy', FLUSH)} | {r.ratio(FLUSH):.1f} |"
            for r in rows
        ),
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    commit()
    left = [n for n in netns.list_names() if n.startswith(PREFIX)]
    if left:
        raise SystemExit(f"left over from an earlier run, remove first: {', '.join(left)}")
    rows = []
    for services in SERVICES:
        row = measure(services, args.runs)
        rows.append(row)
        print(summary(row), flush=True)
    if args.write:
        replace_section(SECTION, table(rows, args.runs))


if __name__ == "__main__":
    main()
