"""kube-proxy's nftables mode, compiler only (netemu.rules.nftables.sync): a
full sync of one node at N Services × 5 endpoints (the transaction built and
rendered as `nft -f` input), and a partial sync after one endpoint of one
Service changed (from the full sync's state; the name plans of the unchanged
Services remembered from it, as in a running agent).

Run:  .venv/bin/python benchmarks/nft_compile.py [--write] [--runs 3]
--write replaces its section of benchmarks/RESULTS.md. Wall-clock medians on
one machine; compare them only within one run. Applying the transaction
(`nft -f`) is not measured here.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

from compile import make_input
from results import machine, replace_section

from netemu.rules.input import ProxyInput
from netemu.rules.nftables import NftSyncState, sync

SIZES = (1_000, 5_000, 10_000)
SECTION = "## nftables compile (benchmarks/nft_compile.py)"


def with_moved_endpoint(data: ProxyInput) -> tuple[ProxyInput, tuple[str, str]]:
    """`data` with the first endpoint of its last Service port on another address."""
    sp = data.service_ports[-1]
    key = (sp.namespace, sp.name, sp.port_name, sp.protocol)
    first, *rest = data.endpoints[key]
    moved = dataclasses.replace(first, ip="10.255.255.254")
    endpoints = {**data.endpoints, key: tuple(sorted((moved, *rest), key=lambda e: e.text))}
    return ProxyInput(data.config, data.service_ports, endpoints), (sp.namespace, sp.name)


def measure(services: int, runs: int) -> dict[str, float | int]:
    data = make_input(services)
    # compile.py's nodePorts repeat from Service 2,768 on; keep each one unique.
    ports = tuple(
        dataclasses.replace(sp, node_port=0) if sp.node_port and i >= 2768 else sp
        for i, sp in enumerate(data.service_ports)
    )
    data = ProxyInput(data.config, ports, data.endpoints)
    changed_data, changed = with_moved_endpoint(data)
    full_times, partial_times = [], []
    state: NftSyncState | None = None
    full_ops = partial_ops = lines = 0
    for _ in range(runs):
        start = time.perf_counter()
        result = sync(data, None, full=True, now=0.0)
        text = result.transaction.render()
        full_times.append(time.perf_counter() - start)
        state, full_ops, lines = result.state, len(result.transaction), text.count("\n")
    assert state is not None
    for _ in range(runs):
        start = time.perf_counter()
        partial = sync(changed_data, state, full=False, changed={changed}, now=1.0)
        partial.transaction.render()
        partial_times.append(time.perf_counter() - start)
        partial_ops = len(partial.transaction)
    return {
        "full": statistics.median(full_times),
        "partial": statistics.median(partial_times),
        "full_ops": full_ops,
        "partial_ops": partial_ops,
        "lines": lines,
        "rules": state.ruleset.rule_count(),
        "elements": state.ruleset.element_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    about = machine()
    rows = []
    for services in SIZES:
        m = measure(services, args.runs)
        rows.append(
            f"| {services:,} × 5 | {m['full']:.3f} | {m['full_ops']:,} | {m['rules']:,} | "
            f"{m['elements']:,} | {m['partial']:.3f} | {m['partial_ops']} |"
        )
        print(rows[-1], flush=True)
    load = os.getloadavg()[0]
    lines = [
        SECTION,
        "",
        f"`.venv/bin/python benchmarks/nft_compile.py --write --runs {args.runs}`; {about}; "
        f"load average {load:.1f} at the end.",
        "One node's IPv4 kube-proxy in nftables mode (netemu.rules.nftables.sync), "
        "compiler only; seconds, median of the runs. full: the first sync of a fresh node "
        "(transaction built and rendered); partial: one endpoint of one Service moved, "
        "synced from the full sync's state (the other Services' name plans remembered).",
        "",
        "| services × endpoints | full s | full operations | rules | elements | partial s "
        "| partial operations |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    if args.write:
        replace_section(SECTION, lines)
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
