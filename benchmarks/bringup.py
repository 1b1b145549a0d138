"""Bring a live lab up until ready, against a plain `ip` script doing the network part.

Run (as root):  .venv/bin/python benchmarks/bringup.py [--write]
--write replaces this benchmark's section of benchmarks/RESULTS.md (and only
that). Each measurement is followed by its teardown, and starts once the
machine is idle (CPU < 10 % busy over 0.25 s, waiting at most 10 s); times
are wall-clock medians of 3 runs, the three kinds interleaved in every
round, so compare them only within one run.

Labs: controlplane/default (2 nodes, 3 pods, 1 external client) and two
generated ones, 2 nodes × 10 pods and 3 nodes × 100 pods (a Deployment of
20 or 300 replicas with containerPort 8080 and one ClusterIP Service).

- "library": wall time of `netemu.lab.up(paths, name)`, which starts the
  supervisor process and returns once every pod's servers listen and every
  node's rules are applied.
- "CLI": wall time of `.venv/bin/netemu up -f DIR --name NAME`, Python
  start-up of the CLI included (`python -m netemu.cli` would do nothing:
  netemu/cli.py has no `__main__` block).
- "supervisor": the supervisor's own "lab X ready in N s" log line.
- "plain": wall time of `benchmarks/bringup_plain.sh up`: the same
  namespaces, veths, addresses, routes, bridges, VXLAN devices and
  FDB/neighbour entries, one `ip` command per action (no rules, no servers).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from results import ROOT, commit, machine, replace_section

from netemu.kernel import netns
from netemu.kernel.journal import LOG, run_dir
from netemu.lab import down, running_labs, up
from netemu.net.plan import lab_prefix

PLAIN = Path(__file__).with_name("bringup_plain.sh")
NETEMU_CLI = Path(sys.executable).with_name("netemu")
PLAIN_PREFIX = "nebench_plain_"
LAB_PREFIX = "nebench-"
READY_RE = re.compile(r"^lab \S+ ready in ([0-9.]+) s$", re.MULTILINE)
SECTION = "## bringup (benchmarks/bringup.py)"


@dataclass(frozen=True)
class Size:
    label: str
    lab: str  # the netemu lab name
    nodes: int
    pods: int
    clients: int
    path: Path  # the lab directory


@dataclass
class Row:
    size: Size
    times: dict[str, list[float]] = field(default_factory=dict)

    def add(self, kind: str, seconds: float) -> None:
        self.times.setdefault(kind, []).append(seconds)

    def median(self, kind: str) -> float:
        return statistics.median(self.times[kind])


def lab_objects(nodes: int, pods: int) -> list[dict[str, Any]]:
    """A Lab with `nodes` nodes, a Deployment of `pods` replicas, a ClusterIP Service."""
    labels = {"app": "web"}
    return [
        {
            "apiVersion": "netemu/v1alpha1",
            "kind": "Lab",
            "metadata": {"name": "bench"},
            "spec": {
                "underlayCIDR": "192.168.56.0/24",
                "overlay": "vxlan",
                "nodes": [
                    {"name": f"node-{i + 1}", "underlayIP": f"192.168.56.{11 + i}"}
                    for i in range(nodes)
                ],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": labels},
            "spec": {
                "replicas": pods,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "image": "registry.k8s.io/e2e-test-images/agnhost:2.52",
                                "ports": [{"name": "http", "containerPort": 8080}],
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
    ]


def write_lab(directory: Path, nodes: int, pods: int) -> Path:
    directory.mkdir(parents=True)
    (directory / "lab.yaml").write_text(yaml.safe_dump_all(lab_objects(nodes, pods)))
    return directory


def sizes(tmp: Path) -> list[Size]:
    return [
        Size("default lab", f"{LAB_PREFIX}default", 2, 3, 1, ROOT / "controlplane" / "default"),
        Size("2 nodes × 10 pods", f"{LAB_PREFIX}2x10", 2, 20, 0, write_lab(tmp / "2x10", 2, 20)),
        Size(
            "3 nodes × 100 pods",
            f"{LAB_PREFIX}3x100",
            3,
            300,
            0,
            write_lab(tmp / "3x100", 3, 100 * 3),
        ),
    ]


def ours() -> list[str]:
    """Namespaces this benchmark creates (netemu's for its labs, the script's)."""
    prefixes = (lab_prefix(LAB_PREFIX), PLAIN_PREFIX)
    return [n for n in netns.list_names() if n.startswith(prefixes)]


def lab_netns(name: str) -> list[str]:
    return [n for n in netns.list_names() if n.startswith(lab_prefix(name))]


def expected_netns(size: Size) -> int:
    return 1 + size.nodes + size.clients + size.pods


def cpu_busy(window: float) -> float:
    """The fraction of CPU time not idle over `window` seconds (/proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # idle + iowait

    total, idle = sample()
    time.sleep(window)
    total2, idle2 = sample()
    return 1 - (idle2 - idle) / max(total2 - total, 1)


def settle(limit: float = 10.0) -> None:
    """Wait (up to `limit` s) for the machine to be idle: the kernel frees a
    deleted namespace asynchronously, and other work would skew the next run."""
    deadline = time.monotonic() + limit
    while cpu_busy(0.25) > 0.1 and time.monotonic() < deadline:
        pass


def timed(action: Callable[[], object]) -> float:
    settle()
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def check_count(what: str, found: int, size: Size) -> None:
    if found != expected_netns(size):
        raise RuntimeError(
            f"{what} {size.label}: {found} namespaces, expected {expected_netns(size)}"
        )


def supervisor_ready(name: str) -> float:
    found = READY_RE.search((run_dir(name) / LOG).read_text())
    if found is None:
        raise RuntimeError(f"lab {name}: no 'ready in' line in its supervisor log")
    return float(found.group(1))


def run_library(size: Size, row: Row) -> None:
    try:
        row.add("library", timed(lambda: up([str(size.path)], size.lab)))
        row.add("supervisor", supervisor_ready(size.lab))
        check_count("netemu", len(lab_netns(size.lab)), size)
    finally:
        row.add("netemu down", timed(lambda: down(size.lab)))


def run_cli(size: Size, row: Row) -> None:
    argv = [str(NETEMU_CLI), "up", "-f", str(size.path), "--name", size.lab]
    try:
        row.add("CLI", timed(lambda: subprocess.run(argv, check=True, capture_output=True)))
        check_count("netemu CLI", len(lab_netns(size.lab)), size)
    finally:
        down(size.lab)


def plain(*args: object) -> None:
    subprocess.run(["bash", str(PLAIN), *map(str, args)], check=True)


def run_plain(size: Size, row: Row) -> None:
    try:
        row.add("plain", timed(lambda: plain("up", PLAIN_PREFIX, *plain_args(size))))
        check_count("plain", sum(n.startswith(PLAIN_PREFIX) for n in netns.list_names()), size)
    finally:
        row.add("plain down", timed(lambda: plain("down", PLAIN_PREFIX)))


def plain_args(size: Size) -> tuple[int, int, int]:
    return size.nodes, size.pods, size.clients


def measure(runs: int) -> list[Row]:
    left = ours() + [lab for lab in running_labs() if lab.startswith(LAB_PREFIX)]
    if left:
        raise SystemExit(f"left over from an earlier run, remove first: {', '.join(left)}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="nebench-") as tmp:
        try:
            for size in sizes(Path(tmp)):
                row = Row(size)
                rows.append(row)
                for _ in range(runs):
                    run_library(size, row)
                    run_cli(size, row)
                    run_plain(size, row)
                print(summary(row), flush=True)
        finally:
            for lab in running_labs():
                if lab.startswith(LAB_PREFIX):
                    down(lab)
            plain("down", PLAIN_PREFIX)
    left = ours()
    if left:
        raise SystemExit(f"namespaces left behind: {', '.join(left)}")
    return rows


def summary(row: Row) -> str:
    return (
        f"{row.size.label}: library {row.median('library'):.3f} s, "
        f"CLI {row.median('CLI'):.3f} s, supervisor {row.median('supervisor'):.3f} s, "
        f"plain {row.median('plain'):.3f} s; library/plain "
        f"{row.median('library') / row.median('plain'):.2f}, CLI/plain "
        f"{row.median('CLI') / row.median('plain'):.2f}\n  every run: "
        + "; ".join(f"{k} {' '.join(f'{v:.3f}' for v in vs)}" for k, vs in row.times.items())
    )


def round_ratios(row: Row) -> list[float]:
    pairs = zip(row.times["library"], row.times["plain"], strict=True)
    return [netemu_s / plain_s for netemu_s, plain_s in pairs]


def table(rows: list[Row], runs: int) -> list[str]:
    def s(row: Row, kind: str) -> str:
        return f"{row.median(kind):.3f}"

    def ratio(row: Row, kind: str) -> str:
        return f"{row.median(kind) / row.median('plain'):.2f}"

    return [
        SECTION,
        "",
        f"`.venv/bin/python benchmarks/bringup.py --write`; {machine()}.",
        f"Seconds until ready, median of {runs} runs, each followed by its teardown.",
        "library: `netemu.lab.up()` (supervisor start-up included); CLI: `netemu up`",
        "(CLI start-up included); supervisor: its `ready in N s` log line; plain:",
        "`benchmarks/bringup_plain.sh up` (the same namespaces, links, addresses,",
        "routes, bridges, VXLAN devices and FDB/neighbour entries with one `ip`",
        "command per action; no rules, no servers). Ratios are netemu / plain.",
        "Targets: default lab ready in ≤ 3 s; 300 pods in ≤ 1.0× the plain script.",
        "",
        "| lab | namespaces | library | CLI | supervisor | plain "
        "| library / plain | CLI / plain | netemu down | plain down |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {r.size.label} | {expected_netns(r.size)} | {s(r, 'library')} | {s(r, 'CLI')} "
            f"| {s(r, 'supervisor')} | {s(r, 'plain')} | {ratio(r, 'library')} "
            f"| {ratio(r, 'CLI')} | {s(r, 'netemu down')} | {s(r, 'plain down')} |"
            for r in rows
        ),
        "",
        "library / plain of each round: "
        + "; ".join(
            f"{r.size.label} {', '.join(f'{ratio:.2f}' for ratio in round_ratios(r))}" for r in rows
        )
        + ".",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    commit()
    rows = measure(args.runs)
    if args.write:
        replace_section(SECTION, table(rows, args.runs))


if __name__ == "__main__":
    main()
