"""`netemu compile -f FILE` end to end (the real CLI: start-up, loading, validation,
control plane, compile, render) against `iptables-legacy-restore --test` of the
same rules.

Run (as root, for the namespace):  .venv/bin/python benchmarks/compile_cli.py [--write]
--write replaces this benchmark's section of benchmarks/RESULTS.md (and only that).

Input: what a user compiles a real cluster's rules from, a dump of its Services and
EndpointSlices (`kubectl get namespaces,services,endpointslices -A -o yaml|json`): a Lab
with three nodes, their Namespace, then N ClusterIP Services each with one EndpointSlice of 5 ready
endpoints. YAML: one document per object; JSON: one `kind: List` indented by 4 as
kubectl writes it. `netemu compile --node node-0` prints node-0's iptables-restore
input; `iptables-legacy-restore --test` parses that input and builds the tables
without committing them, in a network namespace made for the run and deleted after.
Wall-clock seconds, median of 3 interleaved rounds.

A second table has the input a user writes by hand: N Deployments of 5 replicas,
each behind a Service (YAML), which the control plane turns into 5 N pods and N
EndpointSlices (N up to 3,000: netemu runs at most 20,000 pods).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from results import ROOT, machine, replace_section

SECTION = "## compile CLI (benchmarks/compile_cli.py)"
SERVICES = (1_000, 10_000)
DEPLOYMENTS = (1_000, 3_000)
ENDPOINTS = 5
NODES = 3
NETEMU = ROOT / ".venv" / "bin" / "netemu"
NAMESPACE = f"nebench_compile_{os.getpid()}"


def objects(services: int) -> list[dict[str, Any]]:
    lab: dict[str, Any] = {
        "apiVersion": "netemu/v1alpha1",
        "kind": "Lab",
        "metadata": {"name": "bench"},
        "spec": {
            "podCIDR": "10.128.0.0/9",
            "dns": {"enabled": False},
            "nodes": [
                {"name": f"node-{n}", "underlayIP": f"192.168.56.{11 + n}"} for n in range(NODES)
            ],
        },
    }
    # The Services' namespace, as the dump lists it (netemu, as the API
    # server, refuses objects of a namespace that does not exist).
    out = [lab, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}]
    for i in range(services):
        name = f"svc-{i}"
        ip = 16 + i  # 10.96.0.16 and up: clear of the serviceCIDR's first addresses
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": "bench"},
                "spec": {
                    "clusterIP": f"10.{96 + ip // 65536}.{ip // 256 % 256}.{ip % 256}",
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                },
            }
        )
        endpoints = []
        for j in range(ENDPOINTS):
            k = i * ENDPOINTS + j
            endpoints.append(
                {
                    "addresses": [f"10.{128 + k // 65536}.{k // 256 % 256}.{k % 256}"],
                    "nodeName": f"node-{j % NODES}",
                    "conditions": {"ready": True},
                }
            )
        out.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-abcde",
                    "namespace": "bench",
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": endpoints,
            }
        )
    return out


def deployments(count: int) -> list[dict[str, Any]]:
    lab = objects(0)[0]
    # 5 × 3,000 pods fit neither the default /24 per node nor the kubelet's
    # default of 110 pods: explicit node podCIDRs and maxPods.
    for n, node in enumerate(lab["spec"]["nodes"]):
        node["podCIDR"] = f"10.{128 + 4 * n}.0.0/14"
        node["maxPods"] = 5_000
    out = [lab, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}]
    for i in range(count):
        app = {"app": f"app-{i}"}
        container = {
            "name": "web",
            "image": "registry.k8s.io/e2e-test-images/agnhost:2.52",
            "ports": [{"name": "http", "containerPort": 8080}],
        }
        out.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"app-{i}", "namespace": "bench"},
                "spec": {
                    "replicas": ENDPOINTS,
                    "selector": {"matchLabels": app},
                    "template": {"metadata": {"labels": app}, "spec": {"containers": [container]}},
                },
            }
        )
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"svc-{i}", "namespace": "bench"},
                "spec": {
                    "selector": app,
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                },
            }
        )
    return out


def write_yaml(path: Path, docs: list[dict[str, Any]]) -> Path:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    path.write_text(yaml.dump_all(docs, Dumper=dumper, sort_keys=False))
    return path


def write_inputs(directory: Path, services: int) -> dict[str, Path]:
    docs = objects(services)
    as_yaml = write_yaml(directory / f"services-{services}.yaml", docs)
    as_json = directory / f"services-{services}.json"
    as_json.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, indent=4))
    return {"YAML": as_yaml, "JSON": as_json}


def timed(command: list[str], stdin: Path | None = None) -> tuple[float, float, bytes]:
    """Wall-clock and CPU seconds (user + system, of the command and what it waited
    for) of one run, and its output. CPU time shows the work when other processes
    share the machine and stretch the wall clock."""
    with open(stdin or os.devnull, "rb") as source:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(command, stdin=source, capture_output=True, check=False)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.decode()[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu, done.stdout


def compile_command(path: Path) -> list[str]:
    return [str(NETEMU), "compile", "-f", str(path), "--node", "node-0"]


def restore_command() -> list[str]:
    return ["ip", "netns", "exec", NAMESPACE, "iptables-legacy-restore", "--test"]


def measure_deployments(directory: Path, runs: int) -> list[dict[str, Any]]:
    rows = []
    for count in DEPLOYMENTS:
        path = write_yaml(directory / f"deployments-{count}.yaml", deployments(count))
        rules = directory / f"deployment-rules-{count}.iptables"
        times: dict[str, list[float]] = {"YAML": [], "restore": []}
        cpu: dict[str, list[float]] = {"YAML": [], "restore": []}
        for _ in range(runs):
            seconds, used, out = timed(compile_command(path))
            times["YAML"].append(seconds)
            cpu["YAML"].append(used)
            rules.write_bytes(out)
            seconds, used, _ = timed(restore_command(), stdin=rules)
            times["restore"].append(seconds)
            cpu["restore"].append(used)
        medians = {kind: statistics.median(values) for kind, values in times.items()}
        cpu_medians = {kind: statistics.median(values) for kind, values in cpu.items()}
        rows.append(
            {
                "services": count,
                "rules": sum(line.startswith(b"-A ") for line in rules.read_bytes().splitlines()),
                "size": path.stat().st_size,
                "times": times,
                "medians": medians,
                "cpu": cpu_medians,
            }
        )
        print(
            f"{count:,} Deployments × {ENDPOINTS} replicas + Services: YAML "
            f"{medians['YAML']:.2f} s, restore --test {medians['restore']:.2f} s; "
            f"YAML / restore {medians['YAML'] / medians['restore']:.2f}",
            flush=True,
        )
    return rows


def measure(directory: Path, runs: int) -> list[dict[str, Any]]:
    rows = []
    for services in SERVICES:
        inputs = write_inputs(directory, services)
        rules = directory / f"rules-{services}.iptables"
        times: dict[str, list[float]] = {"YAML": [], "JSON": [], "restore": []}
        cpu: dict[str, list[float]] = {"YAML": [], "JSON": [], "restore": []}
        for _ in range(runs):
            outputs = []
            for kind, path in inputs.items():
                seconds, used, out = timed(compile_command(path))
                times[kind].append(seconds)
                cpu[kind].append(used)
                outputs.append(out)
            if outputs[0] != outputs[1]:
                raise SystemExit(f"{services} services: YAML and JSON compile differently")
            rules.write_bytes(outputs[0])
            seconds, used, _ = timed(restore_command(), stdin=rules)
            times["restore"].append(seconds)
            cpu["restore"].append(used)
        medians = {kind: statistics.median(values) for kind, values in times.items()}
        cpu_medians = {kind: statistics.median(values) for kind, values in cpu.items()}
        row = {
            "services": services,
            "rules": sum(line.startswith(b"-A ") for line in rules.read_bytes().splitlines()),
            "sizes": {kind: path.stat().st_size for kind, path in inputs.items()},
            "times": times,
            "medians": medians,
            "cpu": cpu_medians,
        }
        rows.append(row)
        print(
            f"{services:,} services × {ENDPOINTS}: YAML {medians['YAML']:.2f} s, "
            f"JSON {medians['JSON']:.2f} s, restore --test {medians['restore']:.2f} s; "
            f"YAML / restore {medians['YAML'] / medians['restore']:.2f}, "
            f"JSON / restore {medians['JSON'] / medians['restore']:.2f}; CPU: YAML / restore "
            f"{cpu_medians['YAML'] / cpu_medians['restore']:.2f}, JSON / restore "
            f"{cpu_medians['JSON'] / cpu_medians['restore']:.2f}",
            flush=True,
        )
    return rows


def deployment_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"N Deployments × {ENDPOINTS} replicas, each with a Service (YAML, one document per",
        "object): the control plane makes the pods and EndpointSlices.",
        "",
        "| deployments × replicas | rules | YAML file | netemu YAML | restore --test "
        "| YAML / restore | CPU: YAML / restore | rounds (netemu; restore) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        m, c = row["medians"], row["cpu"]
        rounds = "; ".join(
            ", ".join(f"{t:.2f}" for t in values) for values in row["times"].values()
        )
        lines.append(
            f"| {row['services']:,} × {ENDPOINTS} | {row['rules']:,} | {row['size'] / 1e6:.1f} MB "
            f"| {m['YAML']:.2f} | {m['restore']:.2f} | {m['YAML'] / m['restore']:.2f} "
            f"| {c['YAML'] / c['restore']:.2f} | {rounds} |"
        )
    lines.append("")
    return lines


def table(rows: list[dict[str, Any]], runs: int) -> list[str]:
    def mb(n: int) -> str:
        return f"{n / 1e6:.1f} MB"

    lines = [
        SECTION,
        "",
        f"`.venv/bin/python benchmarks/compile_cli.py --write`; {machine()}.",
        "`netemu compile -f FILE --node node-0` (the CLI, start-up included) of a Lab and N",
        "Services with one EndpointSlice of 5 endpoints each (a `kubectl get",
        "services,endpointslices -o yaml|json` dump: YAML one document per object, JSON one",
        "`kind: List`), against `iptables-legacy-restore --test` of the rules it prints, in",
        f"a throw-away network namespace. Seconds, median of {runs} interleaved rounds;",
        "CPU: the same ratios of CPU seconds (user + system), which other processes on",
        "the machine do not stretch.",
        "Target (10,000 Services): ≤ 3.5 × restore, goal ≤ 1.0 × (before: YAML 47 s, 31 ×).",
        "At 1,000 Services netemu's start-up (about 1 s of imports) outweighs the rest.",
        "",
        "| services × endpoints | rules | YAML file | JSON file | netemu YAML | netemu JSON "
        "| restore --test | YAML / restore | JSON / restore "
        "| CPU: YAML / restore | CPU: JSON / restore |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        m, c = row["medians"], row["cpu"]
        lines.append(
            f"| {row['services']:,} × {ENDPOINTS} | {row['rules']:,} | {mb(row['sizes']['YAML'])} "
            f"| {mb(row['sizes']['JSON'])} | {m['YAML']:.2f} | {m['JSON']:.2f} "
            f"| {m['restore']:.2f} | {m['YAML'] / m['restore']:.2f} "
            f"| {m['JSON'] / m['restore']:.2f} | {c['YAML'] / c['restore']:.2f} "
            f"| {c['JSON'] / c['restore']:.2f} |"
        )
    lines.append("")
    for row in rows:
        rounds = "; ".join(
            f"{kind} {', '.join(f'{t:.2f}' for t in values)}"
            for kind, values in row["times"].items()
        )
        lines.append(f"Rounds, {row['services']:,} services: {rounds}.")
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: iptables-legacy-restore runs in a network namespace of its own")
    machine()  # the commit measured, before anything else
    subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
    try:
        with tempfile.TemporaryDirectory(prefix="netemu-compile-cli-") as tmp:
            rows = measure(Path(tmp), args.runs)
            by_deployments = measure_deployments(Path(tmp), args.runs)
    finally:
        subprocess.run(["ip", "netns", "delete", NAMESPACE], check=True)
    if args.write:
        replace_section(SECTION, table(rows, args.runs) + deployment_table(by_deployments))


if __name__ == "__main__":
    main()
