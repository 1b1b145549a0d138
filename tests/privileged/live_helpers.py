"""Shared helpers for the live-lab tests (tests/privileged/test_live_*.py).

A live lab is brought up with `running_lab`, which always takes it down
again (also when the test body or the bring-up fails). Lab names carry the
test process's pid, so test runs of several engineers never collide with
each other or with a lab someone brought up by hand.

Everything here reads the lab (its info file, its state, its namespaces)
or sends real packets from inside its namespaces; nothing changes a lab.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netemu.kernel import netns
from netemu.kernel.probe import ProbeResult, http_get, udp_request
from netemu.lab import LiveLab, down, up
from netemu.net.plan import check_lab_name

REPO = Path(__file__).resolve().parents[2]
CONTROLPLANE = REPO / "controlplane"

# How many requests make missing one of k equally likely endpoints by chance
# negligible: k * (1 - 1/k) ** 60 is below 1e-5 for every k up to 5.
SPREAD_REQUESTS = 60


def lab_name(short: str) -> str:
    """A lab name unique to this test process: `t<pid>-<short>`."""
    return check_lab_name(f"t{os.getpid() % 10000}-{short}")


def lab_prefix(name: str) -> str:
    return f"netemu_{name}_"


@contextmanager
def running_lab(paths: Sequence[str | Path], name: str) -> Iterator[LiveLab]:
    """Lab `name` up from `paths` for the body; always down afterwards."""
    try:
        yield up([str(p) for p in paths], name)
    finally:
        down(name)


def host_gw_copy(directory: Path) -> Path:
    """controlplane/default copied to `directory`, with `overlay: host-gw`."""
    target = directory / "default-host-gw"
    shutil.copytree(CONTROLPLANE / "default", target)
    lab_yaml = target / "lab.yaml"
    text = lab_yaml.read_text()
    assert "overlay: vxlan" in text, "controlplane/default/lab.yaml no longer sets overlay: vxlan"
    lab_yaml.write_text(text.replace("overlay: vxlan", "overlay: host-gw"))
    return target


def mode_copy(lab: str | Path, directory: Path, mode: str) -> Path:
    """controlplane/<lab> copied to `directory`, its kube-proxy in `mode`
    ("iptables" or "nftables"): the Lab's spec.proxyMode and, where the lab
    has one, the KubeProxyConfiguration's mode. The original directory for
    "iptables" when it already says so (nothing to copy)."""
    import yaml  # only the labs copied here need it

    source = CONTROLPLANE / lab if isinstance(lab, str) else lab
    target = directory / f"{source.name}-{mode}"
    if target.exists():
        return target
    shutil.copytree(source, target)
    for path in sorted(target.glob("*.yaml")):
        documents = list(yaml.safe_load_all(path.read_text()))
        changed = False
        for doc in documents:
            if isinstance(doc, dict) and doc.get("kind") == "Lab":
                doc.setdefault("spec", {})["proxyMode"] = mode
                changed = True
            elif isinstance(doc, dict) and doc.get("kind") == "KubeProxyConfiguration":
                doc["mode"] = mode
                changed = True
        if changed:
            path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return target


# -- the lab's state ---------------------------------------------------------


def service(
    state: dict[str, list[dict[str, Any]]], name: str, namespace: str = "default"
) -> dict[str, Any]:
    for svc in state["services"]:
        meta = svc["metadata"]
        if meta["name"] == name and meta.get("namespace", "default") == namespace:
            return svc
    raise AssertionError(f"no Service {namespace}/{name} in the lab's state")


def cluster_ip(
    state: dict[str, list[dict[str, Any]]], name: str, namespace: str = "default"
) -> str:
    ip = service(state, name, namespace)["spec"].get("clusterIP")
    assert ip and ip != "None", f"Service {namespace}/{name} has no ClusterIP"
    return str(ip)


def service_port(
    state: dict[str, list[dict[str, Any]]], name: str, proto: str, namespace: str = "default"
) -> dict[str, Any]:
    """The Service's port entry for protocol `proto` (tcp/udp)."""
    ports: list[dict[str, Any]] = [
        p
        for p in service(state, name, namespace)["spec"]["ports"]
        if p.get("protocol", "TCP").lower() == proto
    ]
    assert len(ports) == 1, f"Service {namespace}/{name}: expected one {proto} port, got {ports}"
    return ports[0]


def pods_with(
    state: dict[str, list[dict[str, Any]]], app: str, node: str | None = None
) -> list[dict[str, Any]]:
    """Pods labelled app=`app` (on `node` if given), not being deleted, by name."""
    found = [
        pod
        for pod in state["pods"]
        if pod["metadata"].get("labels", {}).get("app") == app
        and not pod["metadata"].get("deletionTimestamp")
        and (node is None or pod["spec"].get("nodeName") == node)
    ]
    return sorted(found, key=lambda pod: str(pod["metadata"]["name"]))


def endpoint_ips(
    state: dict[str, list[dict[str, Any]]], name: str, namespace: str = "default"
) -> set[str]:
    """Ready endpoint addresses of a Service's EndpointSlices."""
    ips: set[str] = set()
    for eps in state["endpointslices"]:
        meta = eps["metadata"]
        if (
            meta.get("namespace", "default") == namespace
            and meta.get("labels", {}).get("kubernetes.io/service-name") == name
        ):
            for endpoint in eps.get("endpoints") or []:
                if endpoint.get("conditions", {}).get("ready", True):
                    ips.update(endpoint["addresses"])
    return ips


# -- a namespace's own addresses and routes ----------------------------------


def _ip(netns_name: str, *args: str) -> str:
    done = subprocess.run(
        ["ip", "-n", netns_name, "-o", *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"ip -n {netns_name} {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout


def addresses(netns_name: str) -> set[str]:
    """Every IPv4 address on an interface of the namespace, loopback excluded."""
    found = set()
    for line in _ip(netns_name, "-4", "addr", "show").splitlines():
        fields = line.split()
        address = fields[fields.index("inet") + 1].split("/")[0]
        if not ipaddress.ip_address(address).is_loopback:
            found.add(address)
    return found


def route_source(netns_name: str, destination: str) -> str:
    """The source address the namespace's routing picks to reach `destination`
    (what MASQUERADE writes into packets it sends that way)."""
    fields = _ip(netns_name, "route", "get", destination).split()
    assert "src" in fields, f"ip route get {destination} in {netns_name} names no src: {fields}"
    return fields[fields.index("src") + 1]


# -- probes ------------------------------------------------------------------


def probe(netns_name: str, host: str, port: int, proto: str, timeout: float = 2.0) -> ProbeResult:
    if proto == "tcp":
        return http_get(netns_name, host, port, timeout=timeout)
    if proto == "udp":
        return udp_request(netns_name, host, port, timeout=timeout)
    raise ValueError(f"no live probe for protocol {proto!r}")


@dataclass(frozen=True)
class Answer:
    """One answered request: which pod answered, and whom it saw as client."""

    pod: str
    pod_ip: str
    client_ip: str
    local: tuple[str, int]


def answer_of(result: ProbeResult, what: str) -> Answer:
    assert result.outcome == "answered", f"{what}: {result.outcome} ({result.detail})"
    reply = result.reply
    assert reply is not None, f"{what}: the answer is not the test server's JSON: {result.body!r}"
    assert result.local is not None
    return Answer(str(reply["pod"]), str(reply["podIP"]), str(reply["clientIP"]), result.local)


def answers(
    netns_name: str,
    host: str,
    port: int,
    proto: str = "tcp",
    count: int = SPREAD_REQUESTS,
    timeout: float = 2.0,
) -> list[Answer]:
    """`count` requests, each on a new connection (or a new UDP socket), all
    of which must be answered."""
    return [
        answer_of(
            probe(netns_name, host, port, proto, timeout),
            f"request {i + 1}/{count} to {host}:{port}/{proto}",
        )
        for i in range(count)
    ]


def trace_chains(lab: LiveLab, backend: str) -> dict[str, list[str]]:
    """Per node, the raw table's lines that name a NETEMU-TRACE chain."""
    from netemu.trace.scope import CHAIN_PREFIX

    found: dict[str, list[str]] = {}
    for node, info in lab.info()["nodes"].items():
        done = subprocess.run(
            ["ip", "netns", "exec", info["netns"], f"iptables-{backend}-save", "-t", "raw"],
            capture_output=True,
            text=True,
            check=True,
        )
        found[node] = [line for line in done.stdout.splitlines() if CHAIN_PREFIX in line]
    return found


def processes_in_lab(lab: LiveLab, commands: Sequence[str]) -> list[str]:
    """The processes named `commands` running in any of the lab's namespaces."""
    prefix = lab_prefix(lab.name)
    found = []
    for name in netns.list_names():
        if not name.startswith(prefix):
            continue
        for pid in netns.pids(name):
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm in commands:
                found.append(f"{comm} (pid {pid}) in {name}")
    return found


def netemu_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real `netemu` command (this Python's), its exit code left to the caller."""
    return subprocess.run(
        [sys.executable, "-m", "netemu", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- the IPv6 labs' two web pods (test_live_ipv6.py, test_live_dualstack.py) ---------


def v6(ip: str) -> bool:
    return ipaddress.ip_address(ip).version == 6


def web_pods(lab: LiveLab) -> list[dict[str, Any]]:
    """The lab's two `app: web` pods, node-1's first."""
    pods = [p for p in lab.state()["pods"] if p["metadata"].get("labels", {}).get("app") == "web"]
    assert len(pods) == 2
    return sorted(pods, key=lambda p: str(p["spec"]["nodeName"]))


def pod_netns(lab: LiveLab, pod: dict[str, Any]) -> str:
    return str(lab.info()["pods"][f"default/{pod['metadata']['name']}"]["netns"])


def client_netns(lab: LiveLab) -> str:
    return str(lab.info()["clients"]["client"]["netns"])


def client_host(result: ProbeResult) -> str:
    """The address the answering pod saw the connection come from."""
    assert result.reply is not None, result.body
    return str(ipaddress.ip_address(result.reply["clientIP"]))


def answered_by(results: list[ProbeResult]) -> set[str]:
    return {str(answer_of(r, "request").pod) for r in results}
