"""The main job of `./setup.sh demo`: the default lab, offline.

Shows each command before running it, as a user would type it: the computed
pods and Services, kube-proxy's rules for node-1, and a packet from the
external client traced through the NodePort Services.
"""

from __future__ import annotations

import shlex
import sys

from netemu.cli import main as cli

LAB = "controlplane/default"

STEPS: list[tuple[str, list[str]]] = [
    ("Check the lab's manifests", ["validate", "-f", LAB]),
    ("Pods the control plane scheduled", ["get", "pods", "-f", LAB, "-o", "wide"]),
    ("Services with their ClusterIPs and NodePorts", ["get", "services", "-f", LAB]),
    (
        "client → node-1:30080 (web-nodeport, externalTrafficPolicy Cluster): DNAT and SNAT",
        [
            "trace",
            "--offline",
            "-f",
            LAB,
            "--node",
            "node-1",
            "--src",
            "192.168.56.20",
            "--dst",
            "192.168.56.11",
            "--dport",
            "30080",
        ],
    ),
    (
        "client → node-1:30081 (web-local, externalTrafficPolicy Local): client IP kept",
        [
            "trace",
            "--offline",
            "-f",
            LAB,
            "--node",
            "node-1",
            "--src",
            "192.168.56.20",
            "--dst",
            "192.168.56.11",
            "--dport",
            "30081",
        ],
    ),
    (
        "a web pod → its own Service's ClusterIP: hairpin masquerade on the path to itself",
        [
            "trace",
            "--offline",
            "-f",
            LAB,
            "--node",
            "node-1",
            "-o",
            "text",
            "--src",
            "{web_pod_ip}",
            "--dst",
            "{web_ip}",
            "--dport",
            "80",
        ],
    ),
]


def main() -> int:
    from netemu.pipeline import load_cluster

    state = load_cluster([LAB])
    web = next(s for s in state.services if s.metadata.name == "web")
    pod = next(
        p
        for p in state.pods
        if p.spec.node_name == "node-1" and p.metadata.labels.get("app") == "web"
    )
    values = {"web_ip": web.spec.cluster_ip or "", "web_pod_ip": pod.status.pod_ip or ""}
    for title, args in STEPS:
        args = [a.format(**values) for a in args]
        print(f"\n## {title}\n$ netemu {shlex.join(args)}", flush=True)
        try:
            cli.main(args, prog_name="netemu", standalone_mode=False)
        except SystemExit as exc:
            if exc.code:
                return int(exc.code)
    print(f"\nRules for every node: netemu compile -f {LAB} --node node-1 (see rules/default/).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
