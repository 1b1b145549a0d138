"""Change → rules applied on every node: one endpoint change at N Services × 5
endpoints, kube-proxy's iptables mode, full against partial syncs, both
iptables backends; and kube-proxy's nftables mode.

Run (as root):  .venv/bin/python benchmarks/partial_sync.py [--write] [--runs 5] [--full-runs 3]
                [--full-backends nft,legacy]
--write replaces this benchmark's section of benchmarks/RESULTS.md (and only that).
A full sync with iptables-nft-restore --noflush takes minutes per node at
5,000 Services (benchmarks/RESULTS.md, restore); `--full-backends legacy`
leaves it out and says so in the table.

Set-up, per backend: the control plane (an in-process store) holds a Lab of two
nodes and N ClusterIP Services, each with one EndpointSlice of 5 ready endpoints
(benchmarks/compile_cli.py's objects); each node is a bare network namespace
with kube-proxy's nfacct objects, synced once by its own ProxyAgent (the first
sync, as a lab's bring-up does), after which the objects alive are frozen out
of the cyclic collector's sight as the lab's supervisor does once it is up
(netemu.heap.freeze_bring_up). Then, per run, one endpoint address of the
last Service's EndpointSlice changes through the API, and the clock runs
until every node's agent has applied it: the control plane to its fixed
point, then every agent's reconcile (read the state through the client,
compile, `iptables-restore --noflush` in the node's namespace), all nodes
at once as the lab's supervisor runs them (netemu.node.proxy.reconcile_nodes;
full syncs, which only the periodic check forces, one node after the other),
each node with its own xtables lock as in a lab.
Kinds:

- first change: the first partial sync after the bring-up, one run of its own,
  not in partial's median (it once cost twice what later ones did);
- partial: the agent's normal sync (only the changed Service's chains written).
  At 25,000 endpoints kube-proxy is in large-cluster mode and reads the
  kernel's rules for stale chains at most once per syncPeriod, so these runs
  do not;
- partial + cleanup: the same, in the run where that once-per-syncPeriod
  cleanup is due (iptables-save of the node, and `-X` of the old endpoint's chain);
- full: a full sync (ProxyAgent.force_sync: every chain written, as before
  partial syncs and as kube-proxy's hourly or after-failure syncs).

With kube-proxy's nftables mode too (NftProxyAgent, netemu.node.nftproxy):
the same change, partial syncs only, each node's sync one `nft -f`
transaction.

Every run's end state is checked: in each node's iptables-save the Service's
chain jumps to the new endpoint's chain and not to the old one's.
Wall-clock seconds, median of the runs.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from compile_cli import objects
from results import commit, machine, replace_section

from netemu.api.config import Lab
from netemu.api.core import EndpointSlice
from netemu.api.validate import load_and_validate
from netemu.controlplane import ControlPlane, LocalClient, Store, apply_objects
from netemu.heap import freeze_bring_up
from netemu.kernel import netns, nfacct
from netemu.kernel.iptables import Backend, KernelIptables
from netemu.kernel.nftables import KernelNftables
from netemu.node.nftproxy import NftProxyAgent
from netemu.node.proxy import ProxyAgent, reconcile_nodes
from netemu.rules import names as n
from netemu.rules import nftables
from netemu.rules.inputcache import ProxyInputCache
from netemu.rules.iptables import (
    LARGE_CLUSTER_ENDPOINTS,
    NFACCT_INVALID_DROPPED,
    NFACCT_LOCALHOST_NODEPORTS,
)
from netemu.rules.model import parse_restore

PREFIX = "nebench_partial_"
BACKENDS: tuple[Backend, ...] = ("nft", "legacy")
SERVICES = 5_000
ENDPOINTS = 5
NODES = 2
SECTION = "## partial sync (benchmarks/partial_sync.py)"
FIRST, PARTIAL, CLEANUP, FULL = "first change", "partial", "partial + cleanup", "full"
KINDS = (FIRST, PARTIAL, CLEANUP, FULL)


@dataclass
class Result:
    # Keyed by (iptables backend, or "nftables" for nftables mode; kind).
    times: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    restores: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    plane: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # CPU seconds of the change: this process's and its children's (the
    # restores), user + system; other load on the machine stretches it little.
    cpu: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    first: dict[str, float] = field(default_factory=dict)
    # nftables mode: node-0's last sync transaction, per kind
    nft_lines: dict[str, int] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)  # restore input lines per kind

    def add(self, backend: str, kind: str, seconds: float) -> None:
        self.times.setdefault((backend, kind), []).append(seconds)

    def median(self, backend: str, kind: str) -> float:
        return statistics.median(self.times[(backend, kind)])

    def ran(self, backend: str, kind: str) -> bool:
        return (backend, kind) in self.times

    def restore_median(self, backend: str, kind: str) -> float:
        return statistics.median(self.restores[(backend, kind)])

    def plane_median(self, backend: str, kind: str) -> float:
        return statistics.median(self.plane[(backend, kind)])

    def cpu_median(self, backend: str, kind: str) -> float:
        return statistics.median(self.cpu[(backend, kind)])


class Recording(KernelIptables):
    """The node's kernel; remembers the size of the last restore input and
    how long the restores took (iptables-restore's process, `ip netns exec`
    included)."""

    last_lines: int = 0
    restore_seconds: float = 0.0

    def restore(self, text: str, *, noflush: bool = True) -> None:
        self.last_lines = text.count("\n")
        start = time.perf_counter()
        super().restore(text, noflush=noflush)
        self.restore_seconds += time.perf_counter() - start


def cluster_objects(services: int) -> list[Any]:
    docs = objects(services)
    lab = docs[0]
    lab["spec"]["nodes"] = lab["spec"]["nodes"][:NODES]
    for doc in docs[1:]:
        if doc["kind"] == "EndpointSlice":
            for j, endpoint in enumerate(doc["endpoints"]):
                endpoint["nodeName"] = f"node-{j % NODES}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cluster.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        return [item.obj for item in load_and_validate([str(path)], create_namespaces=True)]


@contextmanager
def namespaces(backend: str) -> Iterator[list[str]]:
    names = [f"{PREFIX}{backend}_{i}" for i in range(NODES)]
    with ExitStack() as stack:
        for name in names:
            netns.create(name)
            stack.callback(netns.remove, name)
            nfacct.ensure(name, (NFACCT_LOCALHOST_NODEPORTS, NFACCT_INVALID_DROPPED))
        yield names


def move_endpoint(client: LocalClient, name: str, address: str) -> None:
    """The first endpoint of Service `name`'s slice gets `address`."""
    eps = client.get(EndpointSlice, "bench", f"{name}-abcde")
    first = eps.endpoints[0].model_copy(update={"addresses": [address]})
    client.update(eps.model_copy(update={"endpoints": [first, *eps.endpoints[1:]]}))


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads) and of
    its children that have ended (the restores)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def check(kernels: list[Recording], service: str, new: str, old: str) -> None:
    """Each node's Service chain of `service` sends traffic to the new
    endpoint and not to the old one (whose chain, unused, may stay until the
    next cleanup in large-cluster mode)."""
    name = f"bench/{service}:http"
    svc_chain = n.SVC_PREFIX + n.port_proto_hash(name, "tcp")
    for kernel in kernels:
        nat = parse_restore(kernel.save()).tables["nat"]
        targets = {r.args.split()[-1] for r in nat.chain_rules(svc_chain)}
        if n.endpoint_chain(name, "tcp", f"{new}:8080") not in targets or (
            n.endpoint_chain(name, "tcp", f"{old}:8080") in targets
        ):
            raise RuntimeError(f"{kernel.netns}: the change is not applied")


def settled_cluster(services: int) -> tuple[LocalClient, Lab, ControlPlane, str, str]:
    """The benchmark's control plane at its fixed point: its client, Lab and
    control plane, the last Service's name and its first endpoint address."""
    objs = cluster_objects(services)
    lab = next(o for o in objs if isinstance(o, Lab))
    client = LocalClient(Store())
    apply_objects(client, objs)
    plane = ControlPlane(client)
    plane.run_to_fixed_point()
    last = f"svc-{services - 1}"
    address = client.get(EndpointSlice, "bench", f"{last}-abcde").endpoints[0].addresses[0]
    return client, lab, plane, last, address


def measure(backend: Backend, services: int, runs: int, full_runs: int, result: Result) -> None:
    client, lab, plane, last, original = settled_cluster(services)
    with namespaces(backend) as names, tempfile.TemporaryDirectory() as locks:
        # Each node its own xtables lock, as a lab's (netemu.kernel.iptables.node_lock_file).
        kernels = [
            Recording(name, backend, lock_file=Path(locks) / f"{name}.lock") for name in names
        ]
        input_cache = ProxyInputCache()  # one for all nodes, as the lab's supervisor
        agents = [
            ProxyAgent(
                client=client,
                node=f"node-{i}",
                iptables=kernel,
                lab=lab,
                proxy_config=None,
                fresh_node=True,
                input_cache=input_cache,
            )
            for i, kernel in enumerate(kernels)
        ]
        start = time.perf_counter()
        reconcile_nodes(agents)
        result.first[backend] = time.perf_counter() - start
        freeze_bring_up()  # as the supervisor once the lab is up

        address = original
        plan = [FIRST] + [PARTIAL] * runs + [CLEANUP] * runs + [FULL] * full_runs
        for n, kind in enumerate(plan):
            old, address = address, f"10.255.{n // 256}.{n % 256 + 1}"
            if kind == CLEANUP:
                for agent in agents:
                    agent.last_cleanup = float("-inf")  # a syncPeriod has gone by
            for kernel in kernels:
                kernel.restore_seconds = 0.0
            start, cpu = time.perf_counter(), cpu_seconds()
            move_endpoint(client, last, address)
            plane.run_to_fixed_point()
            result.plane.setdefault((backend, kind), []).append(time.perf_counter() - start)
            if kind == FULL:
                for agent in agents:
                    agent.force_sync()
            else:
                reconcile_nodes(agents)
            result.add(backend, kind, time.perf_counter() - start)
            result.cpu.setdefault((backend, kind), []).append(cpu_seconds() - cpu)
            # Partial syncs restore on both nodes at once: the change waits
            # for the slower one. Full syncs run one node after the other.
            seconds = [kernel.restore_seconds for kernel in kernels]
            restored = sum(seconds) if kind == FULL else max(seconds)
            result.restores.setdefault((backend, kind), []).append(restored)
            result.lines[kind] = kernels[0].last_lines
            check(kernels, last, address, old)
            print(f"{backend} {kind}: {result.times[(backend, kind)][-1]:.3f} s", flush=True)


class RecordingNft(KernelNftables):
    """The node's nftables; remembers the last transaction's size and how
    long the `nft -f` runs took (`ip netns exec` included)."""

    last_lines: int = 0
    apply_seconds: float = 0.0

    def apply(self, script: str) -> None:
        self.last_lines = script.count("\n")
        start = time.perf_counter()
        super().apply(script)
        self.apply_seconds += time.perf_counter() - start


def check_nftables(kernels: list[RecordingNft], service: str, new: str, old: str) -> None:
    """Each node's kube-proxy table sends `service`'s traffic to the new
    endpoint's chain and no longer to the old one's."""

    def goto(address: str) -> re.Pattern[str]:
        chain = rf"endpoint-\w+-bench/{service}/tcp/http__{re.escape(address)}/8080"
        return re.compile(rf"goto {chain}\b")

    for kernel in kernels:
        listed = kernel.list_table("ip", nftables.TABLE)
        if not goto(new).search(listed) or goto(old).search(listed):
            raise RuntimeError(f"{kernel.netns}: the change is not applied")


def measure_nftables(services: int, runs: int, result: Result) -> None:
    """As `measure`, for kube-proxy's nftables mode (NftProxyAgent): each
    sync one `nft -f` transaction per node."""
    client, lab, plane, last, address = settled_cluster(services)
    mode = "nftables"
    with namespaces("nftables") as names, tempfile.TemporaryDirectory() as locks:
        kernels = [RecordingNft(name) for name in names]
        input_cache = ProxyInputCache()
        agents = [
            NftProxyAgent(
                client=client,
                node=f"node-{i}",
                nftables=kernel,
                iptables=KernelIptables(
                    kernel.netns, "nft", lock_file=Path(locks) / f"{kernel.netns}.lock"
                ),
                lab=lab,
                proxy_config=None,
                fresh_node=True,
                input_cache=input_cache,
            )
            for i, kernel in enumerate(kernels)
        ]
        start = time.perf_counter()
        reconcile_nodes(agents)
        result.first[mode] = time.perf_counter() - start
        freeze_bring_up()  # as the supervisor once the lab is up
        for n, kind in enumerate([FIRST] + [PARTIAL] * runs):
            old, address = address, f"10.254.{n // 256}.{n % 256 + 1}"
            for kernel in kernels:
                kernel.apply_seconds = 0.0
            start, cpu = time.perf_counter(), cpu_seconds()
            move_endpoint(client, last, address)
            plane.run_to_fixed_point()
            result.plane.setdefault((mode, kind), []).append(time.perf_counter() - start)
            reconcile_nodes(agents)
            result.add(mode, kind, time.perf_counter() - start)
            result.cpu.setdefault((mode, kind), []).append(cpu_seconds() - cpu)
            seconds = max(kernel.apply_seconds for kernel in kernels)
            result.restores.setdefault((mode, kind), []).append(seconds)
            result.nft_lines[kind] = kernels[0].last_lines
            check_nftables(kernels, last, address, old)
            print(f"nftables {kind}: {result.times[(mode, kind)][-1]:.3f} s", flush=True)


def table(
    result: Result, services: int, runs: int, full_runs: int, full_backends: str
) -> list[str]:
    def cell(backend: Backend, kind: str) -> str:
        return f"{result.median(backend, kind):.3f}" if result.ran(backend, kind) else "not run"

    def restores(backend: Backend, kind: str) -> str:
        if not result.ran(backend, kind):
            return "not run"
        return f"{result.restore_median(backend, kind):.3f}"

    def plane(backend: Backend, kind: str) -> str:
        if not result.ran(backend, kind):
            return "not run"
        return f"{result.plane_median(backend, kind):.3f}"

    def cpu(backend: Backend, kind: str) -> str:
        return f"{result.cpu_median(backend, kind):.3f}" if result.ran(backend, kind) else "not run"

    def rounds(backend: Backend, kind: str) -> str:
        return ", ".join(f"{t:.2f}" for t in result.times.get((backend, kind), []))

    def ratio(kind: str) -> str:
        if not (result.ran("nft", kind) and result.ran("legacy", kind)):
            return ""
        return f"{result.median('nft', kind) / result.median('legacy', kind):.1f}"

    rows = [
        f"| {kind} | {result.lines.get(kind, 0):,} | {cell('nft', kind)} | {cell('legacy', kind)} "
        f"| {cpu('nft', kind)} | {cpu('legacy', kind)} "
        f"| {ratio(kind)} | {plane('nft', kind)} | {plane('legacy', kind)} "
        f"| {restores('nft', kind)} | {restores('legacy', kind)} "
        f"| {rounds('nft', kind)} | {rounds('legacy', kind)} |"
        for kind in KINDS
    ]
    full_over_partial = "; ".join(
        f"{b} {result.median(b, FULL) / result.median(b, PARTIAL):.0f} ×"
        for b in BACKENDS
        if result.ran(b, FULL)
    )
    mode = ": large-cluster mode" if services * ENDPOINTS > LARGE_CLUSTER_ENDPOINTS else ""
    return [
        SECTION,
        "",
        f"`.venv/bin/python benchmarks/partial_sync.py --write --runs {runs} "
        f"--full-runs {full_runs} --full-backends {full_backends}`; {machine()}; "
        f"load average {os.getloadavg()[0]:.1f} at the end.",
        f"One endpoint of one Service changes at {services:,} Services × {ENDPOINTS} "
        f"endpoints ({services * ENDPOINTS:,}{mode}); seconds from the",
        "EndpointSlice update through the API until both nodes' agents have restored",
        "their rules (control plane, then both nodes at once, each: read the state,",
        "compile, `iptables-restore --noflush` in its namespace; full syncs one node",
        "after the other), median of the runs (partial:",
        f"{runs}, full: {full_runs}). Lines: node-0's restore input. Goal: ≤ 1 s on both",
        "backends. first change: the first partial sync after the bring-up, one run,",
        "not in partial's median. partial + cleanup: the run in which large-cluster mode's",
        "once-per-syncPeriod iptables-save and stale-chain deletion falls.",
        "CPU: the change's CPU seconds, this process's and its children's (the",
        "restores), user + system (median): less stretched by other load on the",
        "machine than the wall-clock seconds.",
        "control plane: the API update and the controllers' fixed point (median).",
        "restore: the slower node's iptables-restore process (median; for full syncs",
        "the sum of both); the rest is netemu's Python in the agents: reading the",
        "state through the client, converting the changed Services and",
        "EndpointSlices (one cache for all nodes), diffing with the last sync's",
        "input, and compiling every Service port (kube-proxy computes the",
        "unchanged Services' chains too, to count them and to know which are in",
        "use; each agent reuses the last sync's rules of a Service port whose port",
        "and endpoints did not change).",
        "",
        "| sync | restore lines | nft | legacy | nft CPU | legacy CPU | nft / legacy "
        "| nft: control plane "
        "| legacy: control plane | nft: restore | legacy: restore | nft, runs | legacy, runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *(
            [
                "Full syncs not run on nft: one node's iptables-nft-restore --noflush of",
                "every chain took over 11 minutes in an earlier attempt on this loaded",
                "machine (unloaded: the restore section's re-sync, about 2 minutes).",
                "",
            ]
            if not result.ran("nft", FULL)
            else []
        ),
        f"Full / partial: {full_over_partial}. "
        f"First sync of both nodes (not a change; restore without --noflush into the "
        f"fresh namespaces): nft {result.first['nft']:.2f} s, "
        f"legacy {result.first['legacy']:.2f} s.",
        "",
        *nftables_lines(result, runs),
    ]


def nftables_lines(result: Result, runs: int) -> list[str]:
    if not result.ran("nftables", PARTIAL):
        return []

    def row(kind: str) -> str:
        times = result.times[("nftables", kind)]
        return (
            f"| {kind} | {result.nft_lines[kind]:,} | {result.median('nftables', kind):.3f} "
            f"| {result.cpu_median('nftables', kind):.3f} "
            f"| {result.plane_median('nftables', kind):.3f} "
            f"| {result.restore_median('nftables', kind):.3f} "
            f"| {', '.join(f'{t:.2f}' for t in times)} |"
        )

    return [
        "kube-proxy's nftables mode (NftProxyAgent; `--no-nftables` leaves it out), the",
        "same change: both nodes at once, each one `nft -f` transaction (lines: node-0's",
        "last one). nft -f: the slower node's `nft -f` process (median). first change:",
        "the first partial sync after the bring-up, one run, not in partial's median.",
        "",
        "| sync | nft -f lines | seconds | CPU | control plane | nft -f | runs |",
        "|---|---|---|---|---|---|---|",
        row(FIRST),
        row(PARTIAL),
        "",
        f"First sync of both nodes (the whole table, one `nft -f` each, both at once): "
        f"{result.first['nftables']:.2f} s ({runs} partial runs).",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--runs", type=int, default=5, help="runs of each partial kind")
    parser.add_argument("--full-runs", type=int, default=3, help="runs of full syncs")
    parser.add_argument("--services", type=int, default=SERVICES)
    parser.add_argument(
        "--full-backends", default="nft,legacy", help="backends whose full syncs are timed"
    )
    parser.add_argument(
        "--no-nftables", action="store_true", help="leave kube-proxy's nftables mode out"
    )
    args = parser.parse_args()
    full_backends = set(args.full_backends.split(",")) - {""}
    commit()
    left = [n for n in netns.list_names() if n.startswith(PREFIX)]
    if left:
        raise SystemExit(f"left over from an earlier run, remove first: {', '.join(left)}")
    result = Result()
    for backend in BACKENDS:
        full_runs = args.full_runs if backend in full_backends else 0
        measure(backend, args.services, args.runs, full_runs, result)
    if not args.no_nftables:
        measure_nftables(args.services, args.runs, result)
    lines = table(result, args.services, args.runs, args.full_runs, args.full_backends)
    for line in lines[2:]:
        print(line)
    if args.write:
        replace_section(SECTION, lines)


if __name__ == "__main__":
    main()
