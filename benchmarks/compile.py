"""Compile and render kube-proxy's rules for N Services × 5 endpoints.

Run:  .venv/bin/python benchmarks/compile.py [--write]
--write replaces its section of benchmarks/RESULTS.md. Times are wall-clock
medians of 3 runs on one machine; compare them only within one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

from results import replace_section

from netemu.rules.input import EndpointInfo, ProxyConfig, ProxyInput, ServicePortInfo
from netemu.rules.iptables import compile_node

ENDPOINTS = 5


def make_input(services: int) -> ProxyInput:
    ports: list[ServicePortInfo] = []
    endpoints: dict[tuple[str, str, str, str], tuple[EndpointInfo, ...]] = {}
    for i in range(services):
        name = f"svc-{i}"
        ports.append(
            ServicePortInfo(
                namespace="bench",
                name=name,
                port_name="http",
                protocol="tcp",
                cluster_ip=f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}",
                port=80,
                node_port=30000 + i % 2768 if i % 4 == 0 else 0,
            )
        )
        endpoints[("bench", name, "http", "tcp")] = tuple(
            EndpointInfo(
                ip=f"10.{(i * ENDPOINTS + j) // 65536 + 128}."
                f"{(i * ENDPOINTS + j) // 256 % 256}.{(i * ENDPOINTS + j) % 256}",
                port=8080,
                ready=True,
                serving=True,
                terminating=False,
                node_name=f"node-{j % 3}",
            )
            for j in range(ENDPOINTS)
        )
    config = ProxyConfig(
        node_name="node-0",
        node_ips=("192.168.56.11",),
        local_ips=("192.168.56.11",),
        cluster_cidr="10.128.0.0/9",
    )
    return ProxyInput(config, tuple(ports), endpoints)


def measure(services: int, runs: int = 3) -> tuple[float, int]:
    data = make_input(services)
    times: list[float] = []
    lines = 0
    for _ in range(runs):
        start = time.perf_counter()
        text = compile_node(data).render()
        times.append(time.perf_counter() - start)
        lines = text.count("\n")
    return statistics.median(times), lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    rows = []
    for services in (1_000, 10_000):
        seconds, lines = measure(services)
        rows.append((services, seconds, lines))
        print(f"{services:>6} services × {ENDPOINTS} endpoints: {seconds:.3f} s, {lines} lines")
    ratio = rows[1][1] / rows[0][1]
    print(f"10,000 / 1,000 time ratio: {ratio:.1f}")
    if args.write:
        table = [
            "## compile (benchmarks/compile.py)",
            "",
            "Compile + render of one node's iptables-restore input; median of 3 runs.",
            "Target: 10,000 Services × 5 endpoints in ≤ 1.5 s.",
            "",
            "| services × endpoints | seconds | restore lines |",
            "|---|---|---|",
            *(f"| {s:,} × {ENDPOINTS} | {t:.3f} | {n:,} |" for s, t, n in rows),
            "",
            f"Ratio 10,000 / 1,000 in the same run: {ratio:.1f}.",
            "",
        ]
        replace_section(table[0], table)


if __name__ == "__main__":
    main()
