"""Change → rules applied on every node in kube-proxy's nftables mode: one
endpoint change at N Services × 5 endpoints, partial against full syncs.

Run (as root):  .venv/bin/python benchmarks/nft_partial_sync.py [--write] [--runs 5]
                [--full-runs 3] [--services 5000]
--write replaces this benchmark's section of benchmarks/RESULTS.md (and only that).

Set-up as benchmarks/partial_sync.py's (the same objects: a Lab of two nodes
and N ClusterIP Services, each with one EndpointSlice of 5 ready endpoints),
but each node's kube-proxy is the nftables agent (netemu.node.nftproxy): a
bare network namespace synced once by its own agent (the first sync, as a
lab's bring-up does). Then, per run, one endpoint address of the last
Service's EndpointSlice changes through the API, and the clock runs until
every node's agent has applied it: the control plane to its fixed point,
then each agent's reconcile (read the state through the client, compile the
partial sync, one `nft -f` in the node's namespace, after a stale-chain
cleanup run when one is due), one node after the other as the lab's
supervisor does. Full runs: NftProxyAgent.force_sync (every chain and
element written, as after a failure or the hourly sync).

Every run's end state is checked: in each node's table the Service's chain
sends traffic to the new endpoint's chain and not to the old one's.
Wall-clock seconds, median of the runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from partial_sync import ENDPOINTS, NODES, cluster_objects, move_endpoint
from results import commit, machine, replace_section

from netemu.api.config import Lab
from netemu.api.core import EndpointSlice
from netemu.controlplane import ControlPlane, LocalClient, Store, apply_objects
from netemu.kernel import netns
from netemu.kernel.iptables import KernelIptables
from netemu.kernel.nftables import KernelNftables
from netemu.node.nftproxy import NftProxyAgent
from netemu.rules import names as n

PREFIX = "nebench_nftsync_"
SERVICES = 5_000
SECTION = "## nftables partial sync (benchmarks/nft_partial_sync.py)"
PARTIAL, FULL = "partial", "full"


@dataclass
class Result:
    times: dict[str, list[float]] = field(default_factory=dict)
    applies: dict[str, list[float]] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    first: float = 0.0

    def median(self, kind: str) -> float:
        return statistics.median(self.times[kind])


class Recording(KernelNftables):
    """The node's kernel; remembers the size of the last script and how long
    the `nft -f` runs took (the process and `ip netns exec` included)."""

    last_lines: int = 0
    apply_seconds: float = 0.0

    def apply(self, script: str) -> None:
        self.last_lines = script.count("\n")
        start = time.perf_counter()
        super().apply(script)
        self.apply_seconds += time.perf_counter() - start


@contextmanager
def namespaces() -> Iterator[list[str]]:
    names = [f"{PREFIX}{i}" for i in range(NODES)]
    with ExitStack() as stack:
        for name in names:
            netns.create(name)
            stack.callback(netns.remove, name)
        yield names


def service_chain(service: str) -> str:
    return n.NFT_SERVICE_PREFIX + n.nft_service_base("bench", service, "tcp", "http")


def endpoint_chain(service: str, ip: str) -> str:
    return n.NFT_ENDPOINT_PREFIX + n.nft_endpoint_base("bench", service, "tcp", "http", ip, 8080)


def check(kernels: list[Recording], service: str, new: str, old: str) -> None:
    for kernel in kernels:
        command = ["ip", "netns", "exec", kernel.netns, "nft", "list", "chain", "ip"]
        listed = subprocess.run(
            [*command, "kube-proxy", service_chain(service)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if endpoint_chain(service, new) not in listed or endpoint_chain(service, old) in listed:
            raise RuntimeError(f"{kernel.netns}: the change is not applied")


def measure(services: int, runs: int, full_runs: int, result: Result) -> None:
    objs = cluster_objects(services)
    lab = next(o for o in objs if isinstance(o, Lab))
    client = LocalClient(Store())
    apply_objects(client, objs)
    plane = ControlPlane(client)
    plane.run_to_fixed_point()
    last = f"svc-{services - 1}"
    original = client.get(EndpointSlice, "bench", f"{last}-abcde").endpoints[0].addresses[0]
    with namespaces() as names:
        kernels = [Recording(name) for name in names]
        agents = [
            NftProxyAgent(
                client=client,
                node=f"node-{i}",
                nftables=kernel,
                iptables=KernelIptables(kernel.netns, "nft"),
                lab=lab,
                proxy_config=None,
                fresh_node=True,
            )
            for i, kernel in enumerate(kernels)
        ]
        start = time.perf_counter()
        for agent in agents:
            agent.reconcile()
        result.first = time.perf_counter() - start

        address = original
        for run, kind in enumerate([PARTIAL] * runs + [FULL] * full_runs):
            old, address = address, f"10.255.{run // 256}.{run % 256 + 1}"
            for kernel in kernels:
                kernel.apply_seconds = 0.0
            start = time.perf_counter()
            move_endpoint(client, last, address)
            plane.run_to_fixed_point()
            for agent in agents:
                if kind == FULL:
                    agent.force_sync()
                else:
                    agent.reconcile()
            result.times.setdefault(kind, []).append(time.perf_counter() - start)
            applied = sum(kernel.apply_seconds for kernel in kernels)
            result.applies.setdefault(kind, []).append(applied)
            result.lines[kind] = kernels[0].last_lines
            check(kernels, last, address, old)
            print(f"{kind}: {result.times[kind][-1]:.3f} s", flush=True)


def table(result: Result, services: int, runs: int, full_runs: int) -> list[str]:
    rows = [
        f"| {kind} | {result.lines.get(kind, 0):,} | {result.median(kind):.3f} "
        f"| {statistics.median(result.applies[kind]):.3f} "
        f"| {', '.join(f'{t:.2f}' for t in result.times[kind])} |"
        for kind in (PARTIAL, FULL)
        if kind in result.times
    ]
    return [
        SECTION,
        "",
        f"`.venv/bin/python benchmarks/nft_partial_sync.py --write --runs {runs} "
        f"--full-runs {full_runs} --services {services}`; {machine()}; "
        f"load average {os.getloadavg()[0]:.1f} at the end.",
        f"One endpoint of one Service changes at {services:,} Services × {ENDPOINTS} "
        f"endpoints ({services * ENDPOINTS:,}), kube-proxy in nftables mode; seconds",
        "from the EndpointSlice update through the API until both nodes' agents have",
        "applied their transaction (control plane, then each node: read the state,",
        "compile, `nft -f` in its namespace), median of the runs. Lines: node-0's last",
        "`nft -f` script. nft -f: the part of that spent in the nft processes (both",
        "nodes, median). Goal: ≤ 1 s.",
        "",
        "| sync | script lines | seconds | nft -f | runs |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"First sync of both nodes (not a change; into the fresh namespaces): "
        f"{result.first:.2f} s.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--runs", type=int, default=5, help="runs of partial syncs")
    parser.add_argument("--full-runs", type=int, default=3, help="runs of full syncs")
    parser.add_argument("--services", type=int, default=SERVICES)
    args = parser.parse_args()
    commit()
    left = [name for name in netns.list_names() if name.startswith(PREFIX)]
    if left:
        raise SystemExit(f"left over from an earlier run, remove first: {', '.join(left)}")
    result = Result()
    measure(args.services, args.runs, args.full_runs, result)
    lines = table(result, args.services, args.runs, args.full_runs)
    for line in lines[2:]:
        print(line)
    if args.write:
        replace_section(SECTION, lines)


if __name__ == "__main__":
    main()
