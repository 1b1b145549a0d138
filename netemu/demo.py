"""The main job of `./setup.sh demo`: bring the default lab up, send requests
from the external client through the NodePort Services on both nodes, show
who answered and which client address they saw, and trace one request hop
by hop.

Each step prints the command a user would type. The lab stays up afterwards
for exploring; `netemu down default` removes it.
"""

from __future__ import annotations

import json
import shlex
import sys

from rich.console import Console
from rich.table import Table

from netemu.cli import main as cli
from netemu.kernel.counters import read_counters
from netemu.lab import LiveLab, down, needs_root, running_labs

LAB_DIR = "controlplane/default"
LAB = "default"
CLIENT = "client"
REQUESTS_PER_TARGET = 3

# (Service, NodePort, what to look for)
NODEPORTS = [
    (
        "web-nodeport",
        30080,
        "externalTrafficPolicy Cluster: any node answers; the pod sees a node address (SNAT)",
    ),
    (
        "web-local",
        30081,
        "externalTrafficPolicy Local: only local pods answer; the pod sees the client's own IP",
    ),
]


def _run_cli(args: list[str]) -> int:
    print(f"\n$ netemu {shlex.join(args)}", flush=True)
    try:
        cli.main(args, prog_name="netemu", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def main() -> int:
    problem = needs_root("demo")
    if problem:
        print(problem, file=sys.stderr)
        return 1
    if LAB in running_labs():
        print(f"lab {LAB} is already up: taking it down first", flush=True)
        down(LAB)

    print("\n## Bring the default lab up: 2 nodes, 3 web pods, an external client", flush=True)
    if _run_cli(["up", "-f", LAB_DIR]) != 0:
        return 1
    for args in (["get", "pods", "-o", "wide"], ["get", "services"]):
        _run_cli(args)

    lab = LiveLab(LAB)
    info = lab.info()
    client_ip = info["clients"][CLIENT]["ip"]
    node_ips = {name: node["ip"] for name, node in info["nodes"].items()}
    out = Console(highlight=False)
    for service, port, meaning in NODEPORTS:
        print(f"\n## {service}: {meaning}", flush=True)
        table = Table(title=f"{CLIENT} ({client_ip}) → {service}")
        for column in ("request", "answered by", "on node", "client IP the pod saw", "SNAT"):
            table.add_column(column)
        for node, node_ip in node_ips.items():
            url = f"http://{node_ip}:{port}/"
            print(f"$ netemu exec {CLIENT} -- curl -s -m 2 {url}", flush=True)
            for _ in range(REQUESTS_PER_TARGET):
                done = lab.exec(CLIENT, ["curl", "-s", "-m", "2", url])
                if done.returncode != 0:
                    # curl's exit 28 is a timeout: the node dropped the packet.
                    outcome = (
                        "no answer (dropped)"
                        if done.returncode == 28
                        else f"curl exit {done.returncode}"
                    )
                    table.add_row(f"{node}:{port}", outcome, "", "", "")
                    continue
                print(f"  {done.stdout.strip()}", flush=True)
                reply = json.loads(done.stdout)
                snat = "no" if reply["clientIP"] == client_ip else "yes"
                table.add_row(
                    f"{node}:{port}", reply["pod"], reply["node"], reply["clientIP"], snat
                )
        out.print(table)

    first_node, first_ip = next(iter(node_ips.items()))
    print(
        f"\n## The rules on {first_node} that handled them, with the kernel's counters", flush=True
    )
    print(f"$ netemu rules {first_node} --counters   (rules of web-* with packets)", flush=True)
    netns_name, backend = lab.node_netns(first_node)
    for line in read_counters(netns_name, backend).splitlines():
        if "web-" in line and not line.startswith("[0:0]"):
            print(f"  {line}", flush=True)

    print(
        f"\n## Trace one request packet by packet: {CLIENT} → {first_node}:30080 (web-nodeport)",
        flush=True,
    )
    print(
        "Every hop it crosses, captured in its namespace; the DNAT and SNAT named by the "
        "kernel's own rule trace (TRACE) and conntrack; pcaps under captures/.",
        flush=True,
    )
    _run_cli(["trace", CLIENT, f"{first_node}:30080"])

    print(
        f"\nThe lab stays up. Try: netemu trace {CLIENT} {first_node}:30081 ; "
        f"netemu exec {CLIENT} -- curl -s http://{first_ip}:30080/ ; "
        f"netemu rules {first_node} --counters ; netemu scale deployment/web --replicas 5 ; "
        f"and netemu down {LAB} when done.",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
