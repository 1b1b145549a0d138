"""The guided tour: a walk through Kubernetes service networking with the
default lab, each step a command a user types and its real output.

`python -m netemu.tour --write docs/tour.md` (as root) brings the default
lab up, runs every step's command exactly as shown (through bash, so a
`| grep` in the text is what ran), writes the page, and takes the lab down.
Outputs are real, so they change from run to run (ports, which pod
answered, trace ids); the prose only states what every run shows.

Owns: the lab it brings up (taken down at the end, also on error) and the
page it writes. Commands run the installed `netemu` next to this Python.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from netemu.lab import LiveLab, down, needs_root, running_labs

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Step:
    title: str
    text: str  # markdown before the commands
    commands: tuple[str, ...]
    after: str = ""  # markdown after the output
    # Checks on the output that every run must pass (the tour's own test).
    expect: tuple[str, ...] = ()


@dataclass
class Context:
    """Facts read from the lab as the tour goes, used in later commands."""

    lab: str
    values: dict[str, str] = field(default_factory=dict)

    def flag(self) -> str:
        return "" if self.lab == "default" else f" --lab {self.lab}"


def steps(ctx: Context) -> list[Callable[[Context], Step]]:
    lab = ctx.flag()
    return [
        lambda c: Step(
            "Bring the lab up",
            "The default lab (`controlplane/default/`): two nodes, an external client, a "
            "Deployment `web` of three pods serving on port 8080, and four Services. "
            "Every node, pod and the client is a network namespace on this machine; "
            "nothing is attached to the machine's own network.",
            (
                "netemu up -f controlplane/default"
                + ("" if c.lab == "default" else f" --name {c.lab}"),
                f"netemu get pods -o wide{lab}",
            ),
            expect=(r"is up in", r"Running"),
        ),
        lambda c: Step(
            "Services and the ClusterIP",
            "A Service gets a virtual IP from the service CIDR (10.96.0.0/12). No interface "
            "has it: it exists only in kube-proxy's rules, which rewrite packets sent to it. "
            "Its EndpointSlice lists the pods behind it.",
            (
                f"netemu get services{lab}",
                f"netemu get endpointslices{lab}",
                f"netemu exec{lab} {c.values['pod1']} -- curl -s http://{c.values['web_ip']}/",
            ),
            "The answer names the pod that served it and the client address it saw.",
            expect=(r"web\s+ClusterIP", r'"pod": "web-'),
        ),
        lambda c: Step(
            "Finding a Service by name: cluster DNS",
            "Every pod's resolv.conf points at the cluster DNS Service (`kube-system/kube-dns`, "
            "10.96.0.10), with the search path that lets a short name work. The DNS server "
            "runs as a pod behind that Service, so the query itself is DNATed by kube-proxy "
            "like any Service traffic; it answers from the control plane's state.",
            (
                f"netemu exec{lab} {c.values['pod1']} -- cat /etc/resolv.conf",
                f"netemu exec{lab} {c.values['pod1']} -- getent hosts web",
                f"netemu exec{lab} {c.values['pod1']} -- curl -s http://web/hostname",
            ),
            expect=(r"nameserver 10\.96\.0\.10", r"ndots:5", re.escape(c.values["web_ip"])),
        ),
        lambda c: Step(
            "kube-proxy's chains",
            "On every node kube-proxy (iptables mode) programs the nat table: `KUBE-SERVICES` "
            "matches the ClusterIP and port and jumps to the Service's `KUBE-SVC-` chain, "
            "which picks an endpoint's `KUBE-SEP-` chain at random, which DNATs to the pod. "
            "`netemu rules` shows the live rules (`iptables-save` inside the node); "
            "`rules/default/node-1.iptables` is what the compiler produced for the same "
            "node, the file a reviewer reads.",
            (
                f"netemu rules node-1{lab} | grep 'default/web:http'",
                "grep 'default/web:http' rules/default/node-1.iptables",
            ),
            "The probabilities are kube-proxy's: with n endpoints left the rule matches "
            "1/n of what reaches it (0.333…, then 0.5, then the last takes the rest), so "
            "each pod gets a third. The `-s <pod>/32 ... KUBE-MARK-MASQ` rule in each "
            "`KUBE-SEP-` chain marks a pod reaching itself through the Service (hairpin) for "
            "masquerade. The compiled file has the same rules in kube-proxy's own argument "
            "order; `iptables-save` prints them normalised (`/32`, `0x4000/0x4000`, the "
            "probability's digits).",
            expect=(r"KUBE-SVC-", r"--probability 0\.33333333349", r"-j DNAT"),
        ),
        lambda c: Step(
            "Load balancing across endpoints",
            "Sixty new connections to the ClusterIP, counted by the pod that answered:",
            (
                f"for i in $(seq 60); do netemu exec{lab} {c.values['pod1']} -- curl -s "
                f"http://{c.values['web_ip']}/hostname; echo; done | sort | uniq -c",
            ),
            "Every connection is a new conntrack entry and meets the random rules afresh; "
            "packets of one connection always go to the same pod.",
            expect=(r"\d+ web-",),
        ),
        lambda c: Step(
            "NodePort and the SNAT it causes",
            "`web-nodeport` (externalTrafficPolicy Cluster) answers on port 30080 of every "
            "node. The node that receives the request may send it to a pod on another node, "
            "so it masquerades it: the pod sees a node address, not the client's.",
            (
                f"netemu exec{lab} client -- curl -s http://{c.values['node1_ip']}:30080/",
                f"netemu trace{lab} client node-1:30080 --no-pcap | sed -n 1p",
            ),
            expect=(r'"clientIP": "10\.244\.', r"⇒ DNAT .* ⇒ SNAT"),
        ),
        lambda c: Step(
            "externalTrafficPolicy Local and the preserved client IP",
            "`web-local` (port 30081) only sends traffic to pods on the node it arrived at, "
            "so no SNAT is needed and the pod sees the client's own address. A node with "
            "no local pod would drop the packet (the filter rule `... has no local "
            "endpoints -j DROP`).",
            (
                f"netemu exec{lab} client -- curl -s http://{c.values['node2_ip']}:30081/",
                f"netemu trace{lab} client node-2:30081 --no-pcap | sed -n 1p",
            ),
            expect=(rf'"clientIP": "{re.escape(c.values["client_ip"])}"', r"KUBE-SVL-"),
        ),
        lambda c: Step(
            "The overlay and its encapsulation",
            "Pods on different nodes talk over VXLAN (flannel's layout: `flannel.1`, VNI 1, "
            "UDP 8472). A trace from the client to node-1's NodePort, repeated until the "
            "chosen pod is on node-2, shows the packet DNATed and masqueraded on node-1, "
            "encapsulated between the nodes' underlay addresses, decapsulated on node-2 "
            "and delivered:",
            (
                f"for i in $(seq 30); do netemu trace{lab} client node-1:30080 "
                f"> {c.values['trace_file']}; "
                f"grep -q 'on node-2' {c.values['trace_file']} && break; done; "
                f"grep -E '⇒|request|verdict|pcaps' {c.values['trace_file']}",
            ),
            "Each hop is a capture point (an AF_PACKET socket in that namespace); the "
            "`netfilter` hops name the rule the kernel's own rule trace (TRACE) reported; "
            "`conntrack` gives the translated tuples.",
            expect=(r"Encapsulated", r"Decapsulated", r"vni 1", r"on node-2"),
        ),
        lambda c: Step(
            "The lab as a picture",
            "`netemu graph` draws the lab with Graphviz: nodes with their pods, veths, `cni0`, "
            "`flannel.1` and `eth0`, the VXLAN tunnel, the underlay switch, the client and the "
            "Services with their endpoints. `netemu trace --svg` draws a trace's path on it, "
            "each edge numbered as the hop table numbers it, NAT hops as notes on the node.",
            (
                f"netemu graph{lab} -o /tmp/{c.lab}-lab.svg",
                f"netemu trace{lab} client node-2:30081 --no-pcap --svg /tmp/{c.lab}-trace.svg "
                "| sed -n 1p",
            ),
            expect=(r"lab\.svg", r"⇒ DNAT"),
        ),
        lambda c: Step(
            "Opening the trace's pcaps",
            "Every trace writes one pcap per capture point and `merged.pcapng` with the "
            "whole flow in time order. tshark (or Wireshark) reads them (told that UDP 8472, "
            "flannel's port, is VXLAN: tshark decodes only 4789 by itself); the VXLAN frames "
            "show the inner, already translated packet:",
            (
                "cd $(sed -n 's/^pcaps: \\(.*\\)\\/ (merged.*/\\1/p' "
                f"{c.values['trace_file']}) && ls "
                "&& tshark -r merged.pcapng -d udp.port==8472,vxlan -T fields -e ip.src -e ip.dst "
                "-e tcp.srcport -e tcp.dstport -e vxlan.vni 2>/dev/null | sed -n 1,12p",
            ),
            "The same packet appears once per capture point it crossed, first as the client "
            "sent it, then translated, then inside VXLAN (outer and inner addresses). In "
            "Wireshark, open `merged.pcapng` and add columns for `ip.src` and `ip.dst`: the "
            "destination turns from the NodePort address into the pod's as the packet "
            "crosses node-1.",
            expect=(r"merged\.pcapng", r"30080"),
        ),
        lambda c: Step(
            "Scaling and watching the rules change",
            "Scale `web` to five replicas: the controllers create pods, the EndpointSlice "
            "grows, and kube-proxy rewrites `KUBE-SVC-` with five endpoints.",
            (
                f"netemu scale{lab} deployment/web --replicas 5",
                f"netemu rules node-1{lab} | grep -E '^-A KUBE-SVC-.*default/web:http ->'",
                f"netemu scale{lab} deployment/web --replicas 3",
            ),
            "The probabilities are now 1/5, 1/4, 1/3 and 1/2 of what is left.",
            expect=(r"0\.20000000019", r"0\.25000000000"),
        ),
        lambda c: Step(
            "Take it down",
            "Everything the lab created is recorded before it is created, so this removes "
            "exactly that, even after a crash:",
            (f"netemu down {c.lab}",),
            expect=(r"is down",),
        ),
    ]


def _run(command: str) -> tuple[int, str]:
    env_path = f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": env_path, "LANG": "C.UTF-8", "COLUMNS": "200"},
        timeout=300,
    )
    return done.returncode, (done.stdout + done.stderr).rstrip()


def _learn(ctx: Context) -> None:
    """Addresses and names the later steps use, read from the live lab."""
    lab = LiveLab(ctx.lab)
    info = lab.info()
    state = lab.state()
    ctx.values["node1_ip"] = info["nodes"]["node-1"]["ip"]
    ctx.values["node2_ip"] = info["nodes"]["node-2"]["ip"]
    ctx.values["client_ip"] = info["clients"]["client"]["ip"]
    pods = sorted(k for k, p in info["pods"].items() if p["node"] == "node-1")
    ctx.values["pod1"] = pods[0].split("/", 1)[1]
    (web,) = [s for s in state["services"] if s["metadata"]["name"] == "web"]
    ctx.values["web_ip"] = web["spec"]["clusterIP"]


class TourError(RuntimeError):
    pass


def run_tour(lab: str = "default") -> str:
    """Run every step; the page as markdown. Raises TourError naming the
    step whose command failed or whose output lacks what it must show."""
    if lab in running_labs():
        raise TourError(f"lab {lab} is already up; take it down first: netemu down {lab}")
    ctx = Context(lab)
    ctx.values["trace_file"] = f"/tmp/{lab}-trace.txt"
    out = [
        "# A guided tour of Kubernetes service networking",
        "",
        "Each step is a command and its real output, recorded by "
        "`python -m netemu.tour --write docs/tour.md` "
        f"({time.strftime('%Y-%m-%d')}); run them yourself after `./setup.sh demo` or "
        "`netemu up -f controlplane/default` (as root). Ports, trace ids and which pod "
        "answers change from run to run.",
        "",
    ]
    try:
        for number, make in enumerate(steps(ctx), start=1):
            if number == 2:
                _learn(ctx)
            step = make(ctx)
            out += [f"## {number}. {step.title}", "", step.text, ""]
            outputs = []
            for command in step.commands:
                code, output = _run(command)
                shown = re.sub(r"\s+$", "", output, flags=re.MULTILINE)
                out += ["```", f"$ {command}", shown, "```", ""]
                outputs.append(output)
                if code != 0:
                    raise TourError(
                        f"step {number} ({step.title}): `{command}` exited {code}:\n{output}"
                    )
            for pattern in step.expect:
                if not re.search(pattern, "\n".join(outputs)):
                    raise TourError(f"step {number} ({step.title}): output lacks /{pattern}/")
            if step.after:
                out += [step.after, ""]
    finally:
        if lab in running_labs():
            down(lab)
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="FILE", help="write the page here (else print it)")
    parser.add_argument("--lab", default="default", help="lab name (default: default)")
    args = parser.parse_args()
    problem = needs_root("tour")
    if problem:
        print(problem, file=sys.stderr)
        return 1
    try:
        page = run_tour(args.lab)
    except TourError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.write:
        Path(args.write).write_text(page)
        print(f"wrote {args.write}")
    else:
        print(page, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
