"""Offline trace in nftables mode: read kube-proxy's table back and walk one
packet through it, for N Services × 5 endpoints.

Run:  .venv/bin/python benchmarks/offline_nft.py [--write]
--write replaces its section of benchmarks/RESULTS.md. The table is the
nftables compiler's dump (`netemu.rules.nftables.render`, what `trace
--offline` reads back in nftables mode); "parse" reads it into the model,
"walk" simulates a pod's packet to the last Service's ClusterIP (the
simulator's set up, its checks of every rule's names included). Times are
wall-clock medians of 3 runs on one machine; compare them only within one
run. No target is set for these: they say what an offline trace costs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from compile import ENDPOINTS, make_input
from results import commit, machine, replace_section

from netemu.rules.nftables import nftables_mode_iptables, render
from netemu.rules.nftmodel import parse_nft
from netemu.rules.nftsimulate import simulate_nft
from netemu.rules.simulate import Packet

SIZES = (100, 1_000, 10_000)


def measure(services: int, runs: int = 3) -> tuple[float, float, int, list[str]]:
    data = make_input(services)
    text = render(data)
    last = data.service_ports[-1]
    packet = Packet("10.128.0.77", last.cluster_ip, last.port)
    iptables = nftables_mode_iptables()
    parse_times: list[float] = []
    walk_times: list[float] = []
    endpoints: list[str] = []
    for _ in range(runs):
        start = time.perf_counter()
        table = parse_nft(text)
        parse_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = simulate_nft(table, list(data.config.local_ips), packet, iptables)
        walk_times.append(time.perf_counter() - start)
        endpoints = result.endpoints
    return statistics.median(parse_times), statistics.median(walk_times), len(text), endpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    commit()
    rows = []
    for services in SIZES:
        parse_s, walk_s, size, endpoints = measure(services)
        if len(endpoints) != ENDPOINTS:
            raise SystemExit(f"{services} services: the walk found {endpoints}")
        rows.append((services, parse_s, walk_s, size))
        print(f"{services:>6} services: parse {parse_s:.3f} s, walk {walk_s:.3f} s, {size:,} bytes")
    if args.write:
        table = [
            "## offline trace in nftables mode (benchmarks/offline_nft.py)",
            "",
            f"`.venv/bin/python benchmarks/offline_nft.py --write`; {machine()}.",
            "",
            "Reading kube-proxy's nftables dump back (parse) and walking one pod → ClusterIP",
            f"packet through it (walk), N Services × {ENDPOINTS} endpoints; wall-clock medians",
            "of 3 runs. No target: what `trace --offline` costs in nftables mode, besides",
            "compiling the table. Load average (1 min) when it ended: "
            f"{os.getloadavg()[0]:.1f} on this machine's CPUs, shared with other work.",
            "",
            "| services × endpoints | dump bytes | parse s | walk s |",
            "|---|---|---|---|",
            *(f"| {s:,} × {ENDPOINTS} | {n:,} | {p:.3f} | {w:.3f} |" for s, p, w, n in rows),
            "",
        ]
        replace_section(table[0], table)


if __name__ == "__main__":
    main()
