"""`netemu compile -f DIR` of a lab whose pods come from one StatefulSet of N
replicas: under OrderedReady (the default) the control plane creates one pod
per round, as each waits for the one before to be Running and Ready, so it
runs N rounds of every controller over every object.

Run:  .venv/bin/python benchmarks/statefulset_offline.py [--before REF] [--write]
--before REF also runs the CLI of commit REF (its netemu/ tree, extracted to a
temporary directory and put first on PYTHONPATH) on the same inputs, in the
same interleaved rounds, for a before/after table from one run.
--write replaces this benchmark's section of benchmarks/RESULTS.md (and only that).

Input: controlplane/statefulset/lab.yaml's StatefulSet (a headless Service
and a normal one over its pods) with N replicas, on three nodes with a /22
podCIDR and maxPods 400 each (1,000 pods fit neither the default /24 nor the
kubelet's default of 110 pods per node). --before needs a commit that knows
a Lab node's maxPods. Wall-clock and
CPU seconds (user + system) of `netemu compile -f DIR --node node-1`, start-up
included, median of the rounds; the machine may be shared, which stretches
wall-clock time but hardly CPU time. Before timing, every version's output is
checked to be the same as the first's.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from results import ROOT, machine, replace_section

SECTION = "## StatefulSet offline (benchmarks/statefulset_offline.py)"
REPLICAS = (100, 500, 1_000)
POLICIES = ("OrderedReady", "Parallel")
NODES = 3
PYTHON = ROOT / ".venv" / "bin" / "python"


def lab(replicas: int, policy: str) -> list[dict[str, Any]]:
    """The statefulset example lab, scaled to `replicas` under `policy`."""
    docs = list(yaml.safe_load_all((ROOT / "controlplane/statefulset/lab.yaml").read_text()))
    for doc in docs:
        if doc["kind"] == "Lab":
            doc["metadata"]["name"] = "sts-bench"
            for n, node in enumerate(doc["spec"]["nodes"]):
                node["podCIDR"] = f"10.244.{4 * n}.0/22"
                node["maxPods"] = 400
        elif doc["kind"] == "StatefulSet":
            doc["spec"]["replicas"] = replicas
            doc["spec"]["podManagementPolicy"] = policy
    return docs


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, bytes]:
    """Wall-clock and CPU seconds of one run, and its output. `cwd` is not
    the checkout: `python -m` puts the working directory first on sys.path,
    ahead of PYTHONPATH, and the checkout's netemu would shadow the earlier
    commit's."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, check=False, env=env, cwd=cwd)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.decode()[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu, done.stdout


def extract(ref: str, into: Path) -> Path:
    """netemu/ of commit `ref`, under `into`."""
    into.mkdir()
    archive = into / "before.tar"
    subprocess.run(
        ["git", "-C", str(ROOT), "archive", "-o", str(archive), ref, "netemu"], check=True
    )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(
    directory: Path, versions: dict[str, dict[str, str]], counts: list[int], runs: int
) -> list[dict[str, Any]]:
    rows = []
    for policy in POLICIES:
        for replicas in counts:
            path = directory / f"sts-{policy}-{replicas}"
            path.mkdir()
            dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
            (path / "lab.yaml").write_text(
                yaml.dump_all(lab(replicas, policy), Dumper=dumper, sort_keys=False)
            )
            command = [str(PYTHON), "-m", "netemu", "compile", "-f", str(path), "--node", "node-1"]
            times: dict[str, list[float]] = {name: [] for name in versions}
            cpu: dict[str, list[float]] = {name: [] for name in versions}
            outputs: dict[str, bytes] = {}
            for _ in range(runs):
                for name, env in versions.items():
                    seconds, used, out = timed(command, env, directory)
                    times[name].append(seconds)
                    cpu[name].append(used)
                    outputs.setdefault(name, out)
            first = next(iter(outputs.values()))
            for name, out in outputs.items():
                if out != first:
                    raise SystemExit(f"{policy} × {replicas}: {name} compiles differently")
            medians = {n: statistics.median(v) for n, v in times.items()}
            cpu_medians = {n: statistics.median(v) for n, v in cpu.items()}
            rows.append(
                {
                    "policy": policy,
                    "replicas": replicas,
                    "times": times,
                    "medians": medians,
                    "cpu": cpu_medians,
                }
            )
            print(
                f"{policy} × {replicas:,}: "
                + ", ".join(
                    f"{n} {medians[n]:.2f} s (CPU {cpu_medians[n]:.2f} s)" for n in versions
                ),
                flush=True,
            )
    return rows


def table(
    rows: list[dict[str, Any]], versions: list[str], runs: int, before: str | None
) -> list[str]:
    lines = [
        SECTION,
        "",
        f"`.venv/bin/python benchmarks/statefulset_offline.py"
        f"{f' --before {before}' if before else ''} --write`; {machine()}.",
        "`netemu compile -f DIR --node node-1` (the CLI, start-up included) of the",
        "controlplane/statefulset lab with N replicas (three nodes, a /22 podCIDR and",
        "maxPods 400 each).",
        "Under OrderedReady the control plane runs a round of every controller per pod.",
        f"Seconds, median of {runs} interleaved rounds; CPU: CPU seconds (user + system),",
        "which other processes on the machine hardly stretch.",
        "",
        "| policy × replicas | "
        + " | ".join(f"{v} wall | {v} CPU" for v in versions)
        + " | rounds (wall) |",
        "|---|" + "---|---|" * len(versions) + "---|",
    ]
    for row in rows:
        cells = " | ".join(f"{row['medians'][v]:.2f} | {row['cpu'][v]:.2f}" for v in versions)
        rounds = "; ".join(
            f"{v} {', '.join(f'{t:.2f}' for t in row['times'][v])}" for v in versions
        )
        lines.append(f"| {row['policy']} × {row['replicas']:,} | {cells} | {rounds} |")
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", help="also measure this commit's netemu (a git ref)")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--replicas",
        default=",".join(str(n) for n in REPLICAS),
        help="comma-separated replica counts",
    )
    args = parser.parse_args()
    machine()  # the commit measured, before anything else
    with tempfile.TemporaryDirectory(prefix="netemu-sts-offline-") as tmp:
        versions: dict[str, dict[str, str]] = {}
        if args.before:
            old = extract(args.before, Path(tmp) / "before")
            versions[f"before ({args.before})"] = {**os.environ, "PYTHONPATH": str(old)}
        versions["now"] = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        inputs = Path(tmp) / "inputs"
        inputs.mkdir()
        check = [str(PYTHON), "-c", "import netemu; print(netemu.__file__)"]
        for name, env in versions.items():
            print(f"{name}: {timed(check, env, inputs)[2].decode().strip()}", flush=True)
        counts = [int(n) for n in args.replicas.split(",")]
        rows = measure(inputs, versions, counts, args.runs)
    if args.write:
        replace_section(SECTION, table(rows, list(versions), args.runs, args.before))


if __name__ == "__main__":
    main()
