"""Live traces (`netemu trace`, `LiveLab.trace`) in running labs: each
traced flow's hops, NAT translations, deciding rules and pcaps, checked
against what the lab is known to do.

Labs (each up once for the module, only when a test needs it):
controlplane/default (VXLAN), a host-gw copy of it, controlplane/loadbalancer
(externalTrafficPolicy Local without a local endpoint) and
controlplane/protocols (UDP). The flows whose endpoint the kernel picks at
random (1/3 per connection) are traced again, a bounded number of times,
until the kernel picks the endpoint a test is about; every attempt must be
internally consistent. Each flow is traced once for the module and shared
by the tests that look at it from different sides (hops, pcaps, the
offline tracer's prediction).

Pcaps go to a temporary directory; every lab is taken down afterwards.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from live_helpers import (
    CONTROLPLANE,
    REPO,
    host_gw_copy,
    lab_name,
    pods_with,
    processes_in_lab,
    route_source,
    running_lab,
)
from live_helpers import trace_chains as live_trace_chains
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet
from scapy.utils import rdpcap

from netemu.cli import main
from netemu.lab import LiveLab
from netemu.net.plan import VXLAN_PORT, switch_port
from netemu.rules.spec import canonical
from netemu.trace.report import Hop, RuleRef, TraceReport

NETEMU = REPO / ".venv" / "bin" / "netemu"
CLIENT_IP = "192.168.56.20"
VXLAN_VNI = 1
# Tries until the kernel picks a wanted endpoint among 3 equally likely
# ones (at worst 1/3 per connection): missing it 30 times in a row has
# probability (2/3)**30 < 1e-5.
TRIES = 30
DROP_TIMEOUT = 0.5  # how long a dropped flow's sender waits
MONITOR_TOOLS = ("xtables-monitor", "conntrack")
TSHARK_MISSING = "tshark is missing (./setup.sh installs it)"

REQUEST, REPLY = "request", "reply"
SWITCH = "underlay switch"
VETH = "veth*"  # a pod's host-side veth, whatever its generated name

Step = tuple[str, str | None, str]  # (site, interface, action)


# -- the labs --------------------------------------------------------------------------


@dataclass(frozen=True)
class TracedLab:
    """A running lab, the manifests it came from (for the offline tracer)
    and where its traces write pcaps."""

    lab: LiveLab
    manifests: Path
    captures: Path

    @property
    def info(self) -> dict[str, Any]:
        return self.lab.info()

    def trace(self, frm: str, to: str, proto: str = "tcp", timeout: float = 1.0) -> TraceReport:
        return self.lab.trace(frm, to, proto=proto, captures=self.captures, timeout=timeout)

    def node_ip(self, node: str) -> str:
        return str(self.info["nodes"][node]["ip"])

    def node_netns(self, node: str) -> str:
        return str(self.info["nodes"][node]["netns"])

    def port(self, kind: str, name: str) -> str:
        """The underlay switch's port towards a node ("n") or a client ("c")."""
        names = list(self.info["nodes" if kind == "n" else "clients"])
        return switch_port(kind, names.index(name), name)

    def pod(self, app: str, node: str) -> tuple[str, str]:
        """(namespace/name, IP) of the first pod labelled app=`app` on `node`."""
        pods = pods_with(self.lab.state(), app, node)
        assert pods, f"no pod app={app} on {node} in lab {self.lab.name}"
        meta = pods[0]["metadata"]
        return f"{meta.get('namespace', 'default')}/{meta['name']}", str(pods[0]["status"]["podIP"])

    def pod_at(self, ip: str) -> tuple[str, str]:
        """(namespace/name, node) of the pod with address `ip`."""
        found = [(k, p) for k, p in self.info["pods"].items() if p["ip"] == ip]
        assert len(found) == 1, f"{len(found)} pods have IP {ip} in lab {self.lab.name}"
        return found[0][0], str(found[0][1]["node"])


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("captures")


def _lab(manifests: Path, short: str, captures: Path) -> Iterator[TracedLab]:
    with running_lab([manifests], lab_name(short)) as lab:
        yield TracedLab(lab, manifests, captures)


@pytest.fixture(scope="module")
def default(captures: Path) -> Iterator[TracedLab]:
    yield from _lab(CONTROLPLANE / "default", "trace", captures)


@pytest.fixture(scope="module")
def hostgw(captures: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedLab]:
    yield from _lab(host_gw_copy(tmp_path_factory.mktemp("hostgw")), "trace-hg", captures)


@pytest.fixture(scope="module")
def loadbalancer(captures: Path) -> Iterator[TracedLab]:
    yield from _lab(CONTROLPLANE / "loadbalancer", "trace-lb", captures)


@pytest.fixture(scope="module")
def protocols(captures: Path) -> Iterator[TracedLab]:
    yield from _lab(CONTROLPLANE / "protocols", "trace-pr", captures)


# -- reading a report ------------------------------------------------------------------


def steps(report: TraceReport, leg: str = REQUEST) -> list[Step]:
    """The leg's hops as (site, interface, action), veth names generalised."""
    return [
        (h.site, VETH if (h.interface or "").startswith("veth") else h.interface, h.action)
        for h in report.hops
        if h.leg == leg
    ]


def actions(report: TraceReport, leg: str = REQUEST) -> list[str]:
    return [h.action for h in report.hops if h.leg == leg]


def hops_with(report: TraceReport, action: str, leg: str = REQUEST) -> list[Hop]:
    return [h for h in report.hops if h.leg == leg and h.action == action]


def the_hop(report: TraceReport, action: str, leg: str = REQUEST) -> Hop:
    found = hops_with(report, action, leg)
    assert len(found) == 1, f"expected one {leg} {action} hop, got {len(found)}:\n{show(report)}"
    return found[0]


def assert_in_order(got: Sequence[str], wanted: Sequence[str], report: TraceReport) -> None:
    """`wanted` occurs in `got` in this order (other items may come between)."""
    rest = iter(got)
    missing = [w for w in wanted if not any(g == w for g in rest)]
    assert not missing, f"{list(wanted)} not in this order in {list(got)}:\n{show(report)}"


def show(report: TraceReport) -> str:
    """The report's hops, one per line, for assertion messages."""
    lines = [report.summary()]
    for h in report.hops:
        rule = f" [{h.rule.table} {h.rule.rule}]" if h.rule else ""
        tunnel = f" tunnel={h.tunnel}" if h.tunnel else ""
        lines.append(
            f"  {h.leg:7} {h.site} {h.interface or '-'} {h.direction or '-'} {h.action} "
            f"{h.packet.summary()}{tunnel}{rule} pcap={h.pcap}"
        )
    return "\n".join(lines)


def endpoint_ip(report: TraceReport) -> str:
    assert len(report.endpoints) == 1, show(report)
    return report.endpoints[0].rsplit(":", 1)[0]


def service_chain_rules(report: TraceReport) -> list[RuleRef]:
    return [r for r in report.rules if r.chain.startswith(("KUBE-SVC-", "KUBE-SVL-"))]


def assert_dnat_hop(report: TraceReport, node: str) -> Hop:
    """One DNAT hop on `node`, to the endpoint, decided by the KUBE-SEP DNAT rule."""
    (endpoint,) = report.endpoints
    hop = the_hop(report, "DNAT")
    assert hop.node == node and hop.interface is None, show(report)
    assert hop.translated == endpoint, show(report)
    assert hop.packet.dst == endpoint_ip(report), show(report)
    assert hop.rule is not None and hop.rule.table == "nat", show(report)
    assert hop.rule.chain.startswith("KUBE-SEP-") and hop.rule.target == "DNAT", show(report)
    assert f"--to-destination {endpoint}" in hop.rule.rule, show(report)
    assert hop.rule in report.rules, "the DNAT hop's rule is not among the traced rules"
    return hop


def assert_masquerade_hop(report: TraceReport, node: str) -> Hop:
    hop = the_hop(report, "Masquerade")
    assert hop.node == node, show(report)
    assert hop.rule is not None, show(report)
    assert (hop.rule.table, hop.rule.chain, hop.rule.target) == (
        "nat",
        "KUBE-POSTROUTING",
        "MASQUERADE",
    ), show(report)
    assert hop.rule in report.rules, show(report)
    assert hop.translated is not None
    assert hop.translated.rsplit(":", 1)[0] == report.seen_client, show(report)
    return hop


def assert_delivered_dnat(report: TraceReport) -> None:
    """What every delivered, DNATed flow must satisfy, whichever endpoint
    the kernel chose."""
    where = show(report)
    assert report.outcome == "delivered", where
    assert report.verdict == "DNAT", where
    assert report.prediction is not None
    assert report.prediction["verdict"] == "DNAT", where
    assert len(report.endpoints) == 1, where
    assert report.endpoints[0] in report.prediction["endpoints"], where
    # The prediction's flag says whether any path masquerades (the hairpin
    # one does); test_live_trace_agrees_with_offline_trace compares per path.
    assert report.prediction["masquerade"] or not report.masquerade, where
    assert report.answer.outcome == "answered", where
    reply = report.answer.reply
    assert reply is not None, where
    assert reply["podIP"] == endpoint_ip(report), where
    assert reply["clientIP"] == report.seen_client, where
    assert report.delivered_to is not None
    assert report.delivered_to.startswith(f"{reply['pod']} on {reply['node']}"), where
    assert actions(report)[-1] == "Delivered", where
    assert actions(report, REPLY)[-1] == "Delivered", where
    assert report.rules_source == "TRACE", where
    assert report.conntrack and report.conntrack[0]["node"] == report.to_dict()["node"], where
    # The chain the kernel's TRACE went through picked exactly this endpoint.
    assert any(f"-> {report.endpoints[0]}" in r.rule for r in service_chain_rules(report)), where


def collect(
    lab: TracedLab,
    frm: str,
    to: str,
    wanted: dict[str, Callable[[TraceReport], bool]],
    proto: str = "tcp",
) -> dict[str, TraceReport]:
    """Trace FROM → TO until each of `wanted` has matched one report
    (at most TRIES times); every attempt must be a consistent DNAT."""
    found: dict[str, TraceReport] = {}
    endpoints: list[str] = []
    for _ in range(TRIES):
        report = lab.trace(frm, to, proto)
        assert_delivered_dnat(report)
        endpoints += report.endpoints
        for name, matches in wanted.items():
            if name not in found and matches(report):
                found[name] = report
        if len(found) == len(wanted):
            return found
    missing = sorted(set(wanted) - set(found))
    raise AssertionError(
        f"{frm} → {to}: no trace matched {missing} in {TRIES} tries; endpoints: {endpoints}"
    )


# -- pcaps -----------------------------------------------------------------------------


def ip_layers(packet: Packet) -> list[Any]:
    """Every IPv4 header of a frame, outer first (VXLAN frames have two)."""
    layers = []
    index = 1
    while (layer := packet.getlayer(IP, nb=index)) is not None:
        layers.append(layer)
        index += 1
    return layers


def pcap_file(report: TraceReport, name: str) -> Path:
    assert report.pcaps is not None
    return Path(report.pcaps["directory"], name)


def hop_pcap(report: TraceReport, hop: Hop) -> list[Packet]:
    assert hop.pcap is not None, f"hop without a pcap: {hop}"
    return list(rdpcap(str(pcap_file(report, hop.pcap))))


def addresses_in(packets: Sequence[Packet]) -> set[tuple[str, str]]:
    """(src, dst) of every IP header, inner headers of tunnelled frames included."""
    return {(layer.src, layer.dst) for p in packets for layer in ip_layers(p)}


def check_pcaps(report: TraceReport) -> None:
    """The report's pcaps parse with Scapy, each capture point's file holds
    its frames of the flow, merged.pcapng holds them all, and every hop that
    names a pcap is in it with the hop's addresses (and tunnel)."""
    pcaps = report.pcaps
    assert pcaps is not None, "a trace with pcap=True wrote no pcaps"
    directory = Path(pcaps["directory"])
    assert directory.is_dir() and (directory / "trace.json").is_file()
    points = [Path(p) for p in pcaps["points"]]
    assert points, "no capture point saw the flow"
    counts = {}
    for point in points:
        assert point.parent == directory, point
        counts[point.name] = len(rdpcap(str(point)))
        assert counts[point.name] > 0, f"{point.name}: no frames"
    merged = rdpcap(pcaps["merged"])
    assert len(merged) == sum(counts.values()), (
        f"merged.pcapng has {len(merged)} frames, the capture points {counts}"
    )
    for hop in report.hops:
        if hop.interface is None:
            assert hop.pcap is None, hop
            continue
        assert hop.pcap in counts, f"hop {hop.site} {hop.interface}: pcap {hop.pcap} not written"
        seen = addresses_in(hop_pcap(report, hop))
        assert (hop.packet.src, hop.packet.dst) in seen, (
            f"{hop.pcap}: no frame {hop.packet.src} → {hop.packet.dst}; has {sorted(seen)}"
        )
        if hop.tunnel is not None:
            assert (hop.tunnel["src"], hop.tunnel["dst"]) in seen, (hop.pcap, sorted(seen))


def vxlan_frames(packets: Sequence[Packet]) -> list[Packet]:
    """Frames whose outer UDP goes to the VXLAN port (Scapy also dissects
    other ports, e.g. a masqueraded source port 4790, as VXLAN)."""
    return [
        p for p in packets if p.haslayer(VXLAN) and p.haslayer(UDP) and p[UDP].dport == VXLAN_PORT
    ]


def tshark(path: Path, *fields: str) -> list[list[str]]:
    """`tshark -r path` must exit 0 and list every frame; returns the rows
    of `-T fields` for `fields`."""
    tool = shutil.which("tshark")
    assert tool is not None
    # tshark decodes VXLAN on 4789 only; the lab's overlay uses flannel's port.
    argv = [tool, "-r", str(path), "-d", f"udp.port=={VXLAN_PORT},vxlan", "-T", "fields"]
    for field in ("frame.number", *fields):
        argv += ["-e", field]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, f"tshark -r {path}: exit {done.returncode}: {done.stderr}"
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    frames = len(rdpcap(str(path)))
    assert [int(r[0]) for r in rows] == list(range(1, frames + 1)), (
        f"tshark listed {len(rows)} frames of {path.name}, Scapy reads {frames}"
    )
    return [r[1:] for r in rows]


# -- the traced flows (each traced once for the module) --------------------------------


def _cross_node(source_node: str) -> Callable[[TraceReport], bool]:
    return lambda r: (
        r.delivered_to is not None and not r.delivered_to.endswith(f" on {source_node}")
    )


@pytest.fixture(scope="module")
def web_from_pod(default: TracedLab) -> dict[str, TraceReport]:
    """The node-2 web pod → Service web: once to a pod on node-1 ("cross"),
    once to itself ("self", hairpin)."""
    key, ip = default.pod("web", "node-2")
    return collect(
        default,
        key,
        "web",
        {"cross": _cross_node("node-2"), "self": lambda r: endpoint_ip(r) == ip},
    )


@pytest.fixture(scope="module")
def web_cross(web_from_pod: dict[str, TraceReport]) -> TraceReport:
    return web_from_pod["cross"]


@pytest.fixture(scope="module")
def web_hairpin(web_from_pod: dict[str, TraceReport]) -> TraceReport:
    return web_from_pod["self"]


@pytest.fixture(scope="module")
def nodeport_cross(default: TracedLab) -> TraceReport:
    """client → node-1:30080 (web-nodeport, ETP Cluster), backend on node-2."""
    return collect(default, "client", "node-1:30080", {"cross": _cross_node("node-1")})["cross"]


@pytest.fixture(scope="module")
def nodeport_local(default: TracedLab) -> TraceReport:
    """client → node-2:30081 (web-local, ETP Local): node-2 has one web pod."""
    return default.trace("client", "node-2:30081")


@pytest.fixture(scope="module")
def empty_service(default: TracedLab) -> TraceReport:
    key, _ = default.pod("web", "node-2")
    return default.trace(key, "empty")


@pytest.fixture(scope="module")
def udp_dns(protocols: TracedLab) -> TraceReport:
    key, _ = protocols.pod("dns", "node-1")
    return protocols.trace(key, "dns", proto="udp")


@pytest.fixture(scope="module")
def hostgw_web_cross(hostgw: TracedLab) -> TraceReport:
    key, _ = hostgw.pod("web", "node-2")
    return collect(hostgw, key, "web", {"cross": _cross_node("node-2")})["cross"]


@pytest.fixture(scope="module")
def hostgw_nodeport_cross(hostgw: TracedLab) -> TraceReport:
    return collect(hostgw, "client", "node-1:30080", {"cross": _cross_node("node-1")})["cross"]


@pytest.fixture(scope="module")
def local_drop(loadbalancer: TracedLab) -> TraceReport:
    """allowed → node-2:31082 (shop-local, ETP Local; both shop pods on node-1)."""
    return loadbalancer.trace("allowed", "node-2:31082", timeout=DROP_TIMEOUT)


# -- 1. pod → ClusterIP, endpoint on the other node (VXLAN) ----------------------------


def test_pod_to_cluster_ip_on_other_node_crosses_vxlan(
    default: TracedLab, web_cross: TraceReport
) -> None:
    report = web_cross
    key, ip = default.pod("web", "node-2")
    dst_key, dst_node = default.pod_at(endpoint_ip(report))
    assert dst_node == "node-1"
    node1, node2 = default.node_ip("node-1"), default.node_ip("node-2")

    assert steps(report) == [
        (f"pod {key}", "eth0", "Forwarded"),
        ("node node-2", VETH, "Forwarded"),
        ("node node-2", None, "DNAT"),
        ("node node-2", "cni0", "Forwarded"),
        ("node node-2", "flannel.1", "Routed"),
        ("node node-2", "eth0", "Encapsulated"),
        (SWITCH, default.port("n", "node-2"), "Forwarded"),
        (SWITCH, default.port("n", "node-1"), "Forwarded"),
        ("node node-1", "eth0", "Forwarded"),
        ("node node-1", "flannel.1", "Decapsulated"),
        ("node node-1", "cni0", "Routed"),
        ("node node-1", VETH, "Forwarded"),
        (f"pod {dst_key}", "eth0", "Delivered"),
    ], show(report)
    assert_dnat_hop(report, "node-2")
    assert not report.masquerade and not hops_with(report, "Masquerade"), show(report)
    assert report.seen_client == ip

    encapsulated = the_hop(report, "Encapsulated")
    assert encapsulated.tunnel is not None
    assert encapsulated.tunnel["kind"] == "vxlan"
    assert (encapsulated.tunnel["src"], encapsulated.tunnel["dst"]) == (node2, node1)
    assert encapsulated.tunnel["dport"] == VXLAN_PORT
    assert encapsulated.tunnel["vni"] == VXLAN_VNI
    # The inner packet crosses the underlay with pod addresses.
    assert (encapsulated.packet.src, encapsulated.packet.dst) == (ip, endpoint_ip(report))
    decapsulated = the_hop(report, "Decapsulated")
    assert (decapsulated.node, decapsulated.interface) == ("node-1", "flannel.1")
    assert decapsulated.tunnel is None

    # The reply comes back through the tunnel and is un-DNATed on node-2.
    assert_in_order(
        actions(report, REPLY), ["Encapsulated", "Decapsulated", "Un-DNAT", "Delivered"], report
    )
    un_dnat = the_hop(report, "Un-DNAT", REPLY)
    assert un_dnat.node == "node-2"
    assert un_dnat.translated == f"{report.flow.dst}:{report.flow.dport}"
    assert not hops_with(report, "Un-SNAT", REPLY), show(report)

    check_pcaps(report)
    cluster_ip = report.flow.dst
    first = hop_pcap(report, report.hops[0])
    assert (ip, cluster_ip) in addresses_in(first), "no ClusterIP packet in the source's pcap"
    delivered = hop_pcap(report, hops_with(report, "Delivered")[0])
    assert (ip, endpoint_ip(report)) in addresses_in(delivered)
    assert cluster_ip not in {a for pair in addresses_in(delivered) for a in pair}, (
        "the destination pod saw the ClusterIP: DNAT did not happen before it"
    )
    outer = [
        p
        for p in vxlan_frames(hop_pcap(report, encapsulated))
        if (p[IP].src, p[IP].dst) == (node2, node1)
    ]
    assert outer, "no VXLAN frame node-2 → node-1 in node-2's eth0 pcap"
    assert all(p[UDP].dport == VXLAN_PORT and p[VXLAN].vni == VXLAN_VNI for p in outer)
    assert any(p[VXLAN][IP].dst == endpoint_ip(report) for p in outer)


def interface_address(netns_name: str, device: str) -> str:
    done = subprocess.run(
        ["ip", "-n", netns_name, "-4", "-o", "addr", "show", "dev", device],
        capture_output=True,
        text=True,
        check=True,
    )
    (line,) = done.stdout.splitlines()
    fields = line.split()
    return fields[fields.index("inet") + 1].split("/")[0]


# -- 2. hairpin ------------------------------------------------------------------------


def test_pod_to_own_service_hairpin_is_masqueraded(
    default: TracedLab, web_hairpin: TraceReport
) -> None:
    report = web_hairpin
    key, ip = default.pod("web", "node-2")
    assert report.endpoints == [f"{ip}:8080"]
    assert report.masquerade and report.prediction is not None
    assert report.prediction["masquerade"]
    # MASQUERADE takes the address of the way back to the pod: cni0's.
    cni0 = interface_address(default.node_netns("node-2"), "cni0")
    assert cni0 == route_source(default.node_netns("node-2"), ip)
    assert cni0.startswith("10.244.") and cni0.endswith(".1"), cni0
    assert report.seen_client == cni0
    assert report.answer.reply is not None and report.answer.reply["clientIP"] == cni0
    assert report.answer.reply["pod"] == key.split("/", 1)[1]
    assert report.delivered_to == f"{key.split('/', 1)[1]} on node-2"

    request = steps(report)
    assert request[0] == (f"pod {key}", "eth0", "Forwarded"), show(report)
    assert request[-1] == (f"pod {key}", "eth0", "Delivered"), show(report)
    assert_in_order(actions(report), ["DNAT", "Masquerade", "Delivered"], report)
    assert all(h.node == "node-2" for h in report.hops), show(report)
    assert not any(h.tunnel for h in report.hops), show(report)
    assert_dnat_hop(report, "node-2")
    masq = assert_masquerade_hop(report, "node-2")
    assert masq.packet.src == cni0 and masq.packet.dst == ip
    # The hairpin SEP rule marks the pod's own packets for masquerade.
    assert any(
        r.chain.startswith("KUBE-SEP-") and f"-s {ip}/32" in r.rule and r.target == "KUBE-MARK-MASQ"
        for r in report.rules
    ), show(report)
    assert_in_order(actions(report, REPLY), ["Un-SNAT", "Un-DNAT", "Delivered"], report)

    check_pcaps(report)
    pod_pcap = hop_pcap(report, report.hops[0])
    seen = addresses_in(pod_pcap)
    # The pod's own eth0 shows both ends of the hairpin: its request to the
    # ClusterIP leaving, and the masqueraded request arriving.
    assert (ip, report.flow.dst) in seen and (cni0, ip) in seen, sorted(seen)


# -- 3. NodePort, externalTrafficPolicy Cluster ----------------------------------------


def test_nodeport_cluster_policy_masquerades_and_crosses_vxlan(
    default: TracedLab, nodeport_cross: TraceReport
) -> None:
    report = nodeport_cross
    dst_key, dst_node = default.pod_at(endpoint_ip(report))
    assert dst_node == "node-2"
    node1, node2 = default.node_ip("node-1"), default.node_ip("node-2")
    assert (report.flow.dst, report.flow.dport) == (node1, 30080)
    assert report.flow.service == "default/web-nodeport"

    assert steps(report) == [
        ("client client", "eth0", "Forwarded"),
        (SWITCH, default.port("c", "client"), "Forwarded"),
        (SWITCH, default.port("n", "node-1"), "Forwarded"),
        ("node node-1", "eth0", "Forwarded"),
        ("node node-1", None, "DNAT"),
        ("node node-1", None, "Masquerade"),
        ("node node-1", "flannel.1", "Routed"),
        ("node node-1", "eth0", "Encapsulated"),
        (SWITCH, default.port("n", "node-1"), "Forwarded"),
        (SWITCH, default.port("n", "node-2"), "Forwarded"),
        ("node node-2", "eth0", "Forwarded"),
        ("node node-2", "flannel.1", "Decapsulated"),
        ("node node-2", "cni0", "Routed"),
        ("node node-2", VETH, "Forwarded"),
        (f"pod {dst_key}", "eth0", "Delivered"),
    ], show(report)
    assert_dnat_hop(report, "node-1")
    assert report.masquerade
    # The backend sees node-1's address towards it, not the client's.
    masq_ip = route_source(default.node_netns("node-1"), endpoint_ip(report))
    assert report.seen_client == masq_ip != CLIENT_IP
    assert report.answer.reply is not None
    assert report.answer.reply["clientIP"] == report.seen_client
    masq = assert_masquerade_hop(report, "node-1")
    assert masq.packet.dst == endpoint_ip(report)
    assert any(
        r.chain.startswith("KUBE-EXT-") and r.target == "KUBE-MARK-MASQ" for r in report.rules
    ), "ETP Cluster: the KUBE-EXT chain's masquerade mark is not among the traced rules"

    encapsulated = the_hop(report, "Encapsulated")
    assert encapsulated.tunnel is not None
    assert (encapsulated.tunnel["src"], encapsulated.tunnel["dst"]) == (node1, node2)
    assert (encapsulated.tunnel["dport"], encapsulated.tunnel["vni"]) == (VXLAN_PORT, VXLAN_VNI)
    assert (encapsulated.packet.src, encapsulated.packet.dst) == (masq_ip, endpoint_ip(report))
    assert the_hop(report, "Decapsulated").node == "node-2"
    assert_in_order(
        actions(report, REPLY),
        ["Encapsulated", "Decapsulated", "Un-SNAT", "Un-DNAT", "Delivered"],
        report,
    )
    assert the_hop(report, "Un-DNAT", REPLY).translated == f"{node1}:30080"
    assert the_hop(report, "Un-SNAT", REPLY).translated == f"{CLIENT_IP}:{report.sport}"
    assert steps(report, REPLY)[-1] == ("client client", "eth0", "Delivered")

    check_pcaps(report)
    client = addresses_in(hop_pcap(report, report.hops[0]))
    assert (CLIENT_IP, node1) in client and (node1, CLIENT_IP) in client, sorted(client)
    backend = addresses_in(hop_pcap(report, hops_with(report, "Delivered")[0]))
    assert (masq_ip, endpoint_ip(report)) in backend, sorted(backend)
    assert CLIENT_IP not in {a for pair in backend for a in pair}, sorted(backend)
    outer = vxlan_frames(hop_pcap(report, encapsulated))
    assert {(p[IP].src, p[IP].dst) for p in outer} >= {(node1, node2), (node2, node1)}, (
        "node-1's eth0 pcap lacks the tunnelled request or reply"
    )


# -- 4. NodePort, externalTrafficPolicy Local ------------------------------------------


def test_nodeport_local_policy_keeps_client_address(
    default: TracedLab, nodeport_local: TraceReport
) -> None:
    report = nodeport_local
    assert_delivered_dnat(report)
    dst_key, dst_ip = default.pod("web", "node-2")
    assert report.endpoints == [f"{dst_ip}:8080"]
    assert report.seen_client == CLIENT_IP
    assert not report.masquerade and not hops_with(report, "Masquerade")
    assert not hops_with(report, "SNAT")
    assert steps(report) == [
        ("client client", "eth0", "Forwarded"),
        (SWITCH, default.port("c", "client"), "Forwarded"),
        (SWITCH, default.port("n", "node-2"), "Forwarded"),
        ("node node-2", "eth0", "Forwarded"),
        ("node node-2", None, "DNAT"),
        ("node node-2", "cni0", "Routed"),
        ("node node-2", VETH, "Forwarded"),
        (f"pod {dst_key}", "eth0", "Delivered"),
    ], show(report)
    assert_dnat_hop(report, "node-2")
    # ETP Local: the node-local service chain, no masquerade mark.
    (local_chain,) = service_chain_rules(report)
    assert local_chain.chain.startswith("KUBE-SVL-"), show(report)
    assert not any(r.target == "KUBE-MARK-MASQ" for r in report.rules), show(report)
    assert the_hop(report, "Un-DNAT", REPLY).translated == f"{default.node_ip('node-2')}:30081"
    check_pcaps(report)
    pod = addresses_in(hop_pcap(report, hops_with(report, "Delivered")[0]))
    assert (CLIENT_IP, dst_ip) in pod, sorted(pod)


def test_nodeport_local_policy_without_local_endpoint_drops(
    loadbalancer: TracedLab, local_drop: TraceReport
) -> None:
    report = local_drop
    assert report.prediction is not None and report.prediction["verdict"] == "DROP"
    assert report.answer.outcome == "timeout", report.answer
    # What the kernel did, independently of the report's reading of it:
    # the TRACE ended in the DROP rule, and nothing came back.
    (drop,) = [r for r in report.rules if r.target == "DROP"]
    assert (drop.table, drop.chain) == ("filter", "KUBE-EXTERNAL-SERVICES")
    assert "has no local endpoints" in drop.rule
    assert not [h for h in report.hops if h.leg == REPLY], show(report)
    check_pcaps(report)
    node2 = loadbalancer.node_ip("node-2")
    last = [h for h in report.hops if h.interface is not None][-1]
    assert (last.node, last.interface, last.direction) == ("node-2", "eth0", "in")
    assert (CLIENT_IP, node2) in addresses_in(hop_pcap(report, last))

    # What the report must say about it.
    assert report.outcome == "dropped", show(report)
    assert report.verdict == "DROP", show(report)
    assert report.endpoints == [] and not report.masquerade
    assert report.delivered_to is None and report.seen_client is None, show(report)
    assert steps(report) == [
        ("client allowed", "eth0", "Forwarded"),
        (SWITCH, loadbalancer.port("c", "allowed"), "Forwarded"),
        (SWITCH, loadbalancer.port("n", "node-2"), "Forwarded"),
        ("node node-2", "eth0", "Forwarded"),
        ("node node-2", None, "Dropped"),
    ], show(report)
    dropped = the_hop(report, "Dropped")
    assert dropped.node == "node-2" and dropped.rule == drop, show(report)
    assert dropped.component == "netfilter"


# -- 5. a Service without endpoints ----------------------------------------------------


def test_service_without_endpoints_is_rejected(
    default: TracedLab, empty_service: TraceReport
) -> None:
    report = empty_service
    key, ip = default.pod("web", "node-2")
    where = show(report)
    assert report.outcome == "refused", where
    assert report.verdict == "REJECT", where
    assert report.prediction is not None and report.prediction["verdict"] == "REJECT"
    assert report.endpoints == [] and not report.masquerade, where
    assert report.answer.outcome == "refused", report.answer
    assert report.delivered_to is None, where

    rejected = the_hop(report, "Rejected")
    assert rejected.node == "node-2", where
    assert rejected.rule is not None
    assert (rejected.rule.table, rejected.rule.chain, rejected.rule.target) == (
        "filter",
        "KUBE-SERVICES",
        "REJECT",
    ), where
    assert "default/empty:http has no endpoints" in rejected.rule.rule
    assert rejected.rule in report.rules
    assert actions(report)[-1] == "Rejected", where
    assert steps(report)[0] == (f"pod {key}", "eth0", "Forwarded"), where

    # The ICMP destination-unreachable comes back to the pod, quoting the request.
    unreachable = [h for h in report.hops if h.leg == REPLY and h.packet.icmp_type == 3]
    assert unreachable, where
    assert all(h.packet.dst == ip for h in unreachable)
    quoted = unreachable[0].packet.quoted
    assert quoted is not None
    assert (quoted.dst, quoted.dport) == (report.flow.dst, report.flow.dport)
    assert steps(report, REPLY)[-1] == (f"pod {key}", "eth0", "Delivered"), where

    check_pcaps(report)
    pod_frames = hop_pcap(report, report.hops[0])
    icmp = [p for p in pod_frames if p.haslayer(ICMP) and p[ICMP].type == 3]
    assert icmp and icmp[0][IP].dst == ip, "no ICMP unreachable in the source pod's pcap"


# -- 6. UDP ----------------------------------------------------------------------------


def test_udp_service_is_dnated(protocols: TracedLab, udp_dns: TraceReport) -> None:
    report = udp_dns
    assert report.flow.proto == "udp"
    assert_delivered_dnat(report)
    assert report.endpoints[0].endswith(":5353")
    hop = assert_dnat_hop(report, "node-1")
    assert hop.packet.proto == "udp" and hop.rule is not None and "-p udp" in hop.rule.rule
    # controlplane/protocols sets masqueradeAll: every Service packet is masqueraded.
    assert report.masquerade
    assert_masquerade_hop(report, "node-1")
    assert all(h.packet.proto == "udp" for h in report.hops), show(report)
    _, dst_node = protocols.pod_at(endpoint_ip(report))
    if dst_node != "node-1":
        assert hops_with(report, "Encapsulated"), show(report)
    check_pcaps(report)
    delivered = hop_pcap(report, hops_with(report, "Delivered")[0])
    assert any(
        p.haslayer(UDP) and p[IP].dst == endpoint_ip(report) and p[UDP].dport == 5353
        for p in delivered
    )


# -- 7. host-gw ------------------------------------------------------------------------


def assert_no_tunnel(report: TraceReport) -> None:
    assert not hops_with(report, "Encapsulated") and not hops_with(report, "Decapsulated")
    assert not hops_with(report, "Encapsulated", REPLY)
    assert not hops_with(report, "Decapsulated", REPLY)
    assert all(h.tunnel is None for h in report.hops), show(report)
    assert not any(h.interface == "flannel.1" for h in report.hops), show(report)
    for point in report.pcaps["points"] if report.pcaps else []:
        assert not vxlan_frames(list(rdpcap(point))), f"{point}: VXLAN frame in a host-gw lab"


def test_host_gw_pod_to_cluster_ip_crosses_underlay_unencapsulated(
    hostgw: TracedLab, hostgw_web_cross: TraceReport
) -> None:
    report = hostgw_web_cross
    key, ip = hostgw.pod("web", "node-2")
    dst_key, _ = hostgw.pod_at(endpoint_ip(report))
    assert steps(report) == [
        (f"pod {key}", "eth0", "Forwarded"),
        ("node node-2", VETH, "Forwarded"),
        ("node node-2", None, "DNAT"),
        ("node node-2", "cni0", "Forwarded"),
        ("node node-2", "eth0", "Routed"),
        (SWITCH, hostgw.port("n", "node-2"), "Forwarded"),
        (SWITCH, hostgw.port("n", "node-1"), "Forwarded"),
        ("node node-1", "eth0", "Forwarded"),
        ("node node-1", "cni0", "Routed"),
        ("node node-1", VETH, "Forwarded"),
        (f"pod {dst_key}", "eth0", "Delivered"),
    ], show(report)
    assert_dnat_hop(report, "node-2")
    assert_no_tunnel(report)
    underlay = [h for h in report.hops if h.site == SWITCH]
    assert {(h.leg, h.packet.src, h.packet.dst) for h in underlay} == {
        (REQUEST, ip, endpoint_ip(report)),
        (REPLY, endpoint_ip(report), ip),
    }, show(report)
    check_pcaps(report)
    on_wire = addresses_in(hop_pcap(report, underlay[0]))
    assert (ip, endpoint_ip(report)) in on_wire, sorted(on_wire)


def test_host_gw_nodeport_crosses_underlay_unencapsulated(
    hostgw: TracedLab, hostgw_nodeport_cross: TraceReport
) -> None:
    report = hostgw_nodeport_cross
    dst_key, _ = hostgw.pod_at(endpoint_ip(report))
    node1 = hostgw.node_ip("node-1")
    assert steps(report) == [
        ("client client", "eth0", "Forwarded"),
        (SWITCH, hostgw.port("c", "client"), "Forwarded"),
        (SWITCH, hostgw.port("n", "node-1"), "Forwarded"),
        ("node node-1", "eth0", "Forwarded"),
        ("node node-1", None, "DNAT"),
        ("node node-1", None, "Masquerade"),
        ("node node-1", "eth0", "Routed"),
        (SWITCH, hostgw.port("n", "node-1"), "Forwarded"),
        (SWITCH, hostgw.port("n", "node-2"), "Forwarded"),
        ("node node-2", "eth0", "Forwarded"),
        ("node node-2", "cni0", "Routed"),
        ("node node-2", VETH, "Forwarded"),
        (f"pod {dst_key}", "eth0", "Delivered"),
    ], show(report)
    assert_dnat_hop(report, "node-1")
    assert_masquerade_hop(report, "node-1")
    assert_no_tunnel(report)
    # Without an overlay, node-1 reaches the pod through eth0: its
    # underlay address is what MASQUERADE writes and the backend sees.
    assert (
        report.seen_client
        == node1
        == route_source(hostgw.node_netns("node-1"), endpoint_ip(report))
    )
    to_node2 = [
        h
        for h in report.hops
        if h.site == SWITCH and h.interface == hostgw.port("n", "node-2") and h.leg == REQUEST
    ]
    assert [(h.packet.src, h.packet.dst) for h in to_node2] == [(node1, endpoint_ip(report))]
    check_pcaps(report)
    on_wire = addresses_in(hop_pcap(report, to_node2[0]))
    assert (node1, endpoint_ip(report)) in on_wire, sorted(on_wire)


# -- 8. the live trace agrees with the offline tracer ----------------------------------


# (lab fixture, report fixture)
AGREEING = [
    ("default", "web_cross"),
    ("default", "web_hairpin"),
    ("default", "nodeport_cross"),
    ("default", "nodeport_local"),
    ("default", "empty_service"),
    ("hostgw", "hostgw_nodeport_cross"),
    ("protocols", "udp_dns"),
    ("loadbalancer", "local_drop"),
]


def offline(lab: TracedLab, report: TraceReport) -> dict[str, Any]:
    """`netemu trace --offline -f <manifests> FROM TO -o json` for the report's flow."""
    flow = report.flow
    to = f"{flow.dst}:{flow.dport}"
    args = ["trace", "--offline", "-f", str(lab.manifests), flow.source.name, to]
    result = CliRunner().invoke(main, [*args, "--proto", flow.proto, "-o", "json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def _args(rule: str) -> str:
    """`-A CHAIN args` → `args`."""
    words = rule.split(" ", 2)
    assert words[0] == "-A" and len(words) == 3, rule
    return words[2]


@pytest.mark.parametrize(("lab_fixture", "report_fixture"), AGREEING)
def test_live_trace_agrees_with_offline_trace(
    request: pytest.FixtureRequest, lab_fixture: str, report_fixture: str
) -> None:
    lab: TracedLab = request.getfixturevalue(lab_fixture)
    report: TraceReport = request.getfixturevalue(report_fixture)
    live = report.to_dict()
    expected = offline(lab, report)
    where = f"{report.flow.describe()}\nlive: {report.summary()}"
    for key in ("node", "localOrigin", "verdict", "service"):
        assert live[key] == expected[key], f"{key}: live {live[key]!r}, offline {expected[key]!r}"
    # The offline top-level flag says whether any path masquerades (for
    # Service web only the hairpin one does): the live flag is compared with
    # the flag of the path to the live endpoint below. The live report's own
    # prediction (the simulator on the entry node's live rules) equals the
    # offline one (the simulator on the compiled rules) as a whole.
    assert report.prediction == {
        key: expected[key] for key in ("verdict", "endpoints", "masquerade")
    }, where
    assert live["packet"]["dst"] == expected["packet"]["dst"]
    assert live["packet"]["dport"] == expected["packet"]["dport"]
    assert set(report.endpoints) <= set(expected["endpoints"]), where

    endpoint = report.endpoints[0] if report.endpoints else None
    (path,) = [
        p
        for p in expected["paths"]
        if p["endpoint"] == endpoint and p["verdict"] == live["verdict"]
    ]
    assert path["masquerade"] == report.masquerade, where
    # Both list every evaluation: with masqueradeAll a hairpin packet runs
    # KUBE-MARK-MASQ's MARK rule twice (from KUBE-SVC-* and KUBE-SEP-*).
    offline_rules = [RuleRef(r["table"], r["chain"], r["rule"]) for r in path["rules"]]
    # The live rules are the kernel's TRACE of the packet as iptables-save
    # prints them; the offline ones are the compiler's text in kube-proxy's
    # argument order. Found: the texts differ in formatting only -- option
    # order (`-p tcp -m comment ... -m tcp --dport` vs `-m comment ... -m tcp
    # -p tcp --dport`), quoting of one-word comments, `--or-mark 0x00004000`
    # vs `--set-xmark 0x4000/0x4000`, `--xor-mark` vs `--set-xmark X/0x0`,
    # the probability's decimals. So assert the strongest equality that
    # holds: the same rules in the same order, compared in netemu's
    # canonical form (netemu.rules.spec.canonical, which normalises exactly
    # those differences), hence the same (table, chain, target) sequence.
    assert [(r.table, r.chain, r.target) for r in report.rules] == [
        (r.table, r.chain, r.target) for r in offline_rules
    ], (
        f"{where}\nlive rules:\n"
        + "\n".join(f"  {r.table} {r.rule}" for r in report.rules)
        + "\noffline path:\n"
        + "\n".join(f"  {r.table} {r.rule}" for r in offline_rules)
    )
    for got, want in zip(report.rules, offline_rules, strict=True):
        assert canonical(_args(got.rule)) == canonical(_args(want.rule)), (
            f"{where}\nlive:    {got.rule}\noffline: {want.rule}"
        )


# -- pcaps read by tshark --------------------------------------------------------------


TSHARK_EVERY_POINT = ("web_cross", "empty_service")


# TCP analysis marks that a single clean connection must not earn.
TCP_TROUBLE = (
    "tcp.analysis.retransmission || tcp.analysis.fast_retransmission"
    " || tcp.analysis.spurious_retransmission || tcp.analysis.duplicate_ack"
)


def test_merged_pcapng_keeps_each_capture_point_apart(
    nodeport_cross: TraceReport, tmp_path: Path
) -> None:
    """client → node-1:30080 → VXLAN → the pod on node-2: in merged.pcapng
    tshark names every frame's capture point `<namespace>/<interface>`, with
    the frame's direction and its hop's role, and the frames of each capture
    point, taken out of the merged file on their own, are one clean TCP
    connection (no retransmission, no duplicate ACK); the copies of one
    packet share a packet id.

    The whole merged file is not checked for those marks: Wireshark 4.0's
    TCP analysis (Debian 12's tshark) follows a connection by addresses and
    ports alone, so the copy of a segment seen at the next capture point is
    marked a retransmission whatever the interface says."""
    if shutil.which("tshark") is None:
        pytest.skip(TSHARK_MISSING)
    report = nodeport_cross
    assert report.pcaps is not None
    merged = Path(report.pcaps["merged"])
    assert merged.name == "merged.pcapng"
    fields = (
        "frame.interface_id",
        "frame.interface_name",
        "frame.interface_description",
        "frame.packet_flags_direction",
        "frame.packet_id",
    )
    rows = [dict(zip(fields, row, strict=True)) for row in tshark(merged, *fields)]
    assert [row["frame.interface_name"] for row in rows] == [
        f"{f.netns}/{f.interface}" for f in report.frames
    ]
    assert [int(row["frame.packet_flags_direction"], 16) for row in rows] == [
        1 if f.direction == "in" else 2 for f in report.frames
    ]
    # Every hop's capture point is there, described by the hop's place.
    described = {row["frame.interface_name"]: row["frame.interface_description"] for row in rows}
    for hop in report.hops:
        if hop.interface is not None:
            assert described[f"{hop.netns}/{hop.interface}"].startswith(hop.site), hop
    # The copies of one packet share its packet id: each packet of the flow
    # crossed the client's eth0 once, whatever NAT and VXLAN made of it.
    client = f"{report.flow.source.netns}/eth0"
    at_client = [
        int(row["frame.packet_id"]) for row in rows if row["frame.interface_name"] == client
    ]
    assert sorted(at_client) == list(range(1, len(at_client) + 1))
    assert {int(row["frame.packet_id"]) for row in rows} == set(at_client)
    ids = sorted({int(row["frame.interface_id"]) for row in rows})
    assert ids == list(range(len(described))), "one interface id per capture point"
    # The flow crossed the client, the underlay switch, both nodes' uplinks,
    # both VXLAN devices and the pod: several capture points per packet.
    assert len(ids) >= 7, sorted(described)

    tool = shutil.which("tshark")
    assert tool is not None

    def alone(interface_id: int) -> tuple[set[str], list[str]]:
        """One capture point's frames cut out of the merged file: the
        interface names they carry, and the frames tshark marks."""
        cut = tmp_path / f"if{interface_id}.pcapng"
        select = f"frame.interface_id == {interface_id}"
        subprocess.run(
            [tool, "-r", str(merged), "-Y", select, "-w", str(cut)],
            capture_output=True,
            timeout=30,
            check=True,
        )
        names = {row[0] for row in tshark(cut, "frame.interface_name")}
        marked = subprocess.run(
            [tool, "-r", str(cut), "-Y", TCP_TROUBLE],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.splitlines()
        return names, marked

    with ThreadPoolExecutor() as pool:
        slices = dict(zip(ids, pool.map(alone, ids), strict=True))
    assert all(len(names) == 1 for names, _ in slices.values()), slices
    assert all(not marked for _, marked in slices.values()), slices


@pytest.mark.parametrize(
    "report_fixture",
    [
        "web_cross",
        "web_hairpin",
        "nodeport_cross",
        "nodeport_local",
        "empty_service",
        "udp_dns",
        "hostgw_web_cross",
        "hostgw_nodeport_cross",
        "local_drop",
    ],
)
def test_tshark_reads_the_pcaps(request: pytest.FixtureRequest, report_fixture: str) -> None:
    if shutil.which("tshark") is None:
        pytest.skip(TSHARK_MISSING)
    report: TraceReport = request.getfixturevalue(report_fixture)
    assert report.pcaps is not None
    # Every capture point's file for the flows that cross every kind of
    # capture point (pod, veth, bridge, VXLAN device, uplink, underlay
    # switch; an ICMP error): all pcaps come from the same writer, and each
    # tshark run costs ~0.2 s of CPU. merged.pcapng for every flow.
    if report_fixture in TSHARK_EVERY_POINT:
        with ThreadPoolExecutor() as pool:
            list(pool.map(tshark, [Path(p) for p in report.pcaps["points"]]))
    fields = ("ip.src", "ip.dst", "udp.dstport", "vxlan.vni", "icmp.type")
    merged = tshark(Path(report.pcaps["merged"]), *fields)
    rows = [dict(zip(fields, row, strict=True)) for row in merged]
    # tshark decodes what the tracer reported: every hop's packet is in the
    # merged capture (inner addresses of VXLAN frames included).
    pairs = {
        (src, dst)
        for row in rows
        for src, dst in zip(row["ip.src"].split(","), row["ip.dst"].split(","), strict=True)
    }
    for hop in report.hops:
        if hop.interface is not None:
            assert (hop.packet.src, hop.packet.dst) in pairs, (hop, sorted(pairs))
    # VXLAN frames: those whose outer UDP goes to the lab's port (tshark also
    # dissects a masqueraded inner port 4790 as VXLAN-GPE: not a tunnel).
    vxlan = [row for row in rows if row["udp.dstport"].split(",")[0] == str(VXLAN_PORT)]
    assert all(row["vxlan.vni"].split(",")[0] == str(VXLAN_VNI) for row in vxlan), vxlan
    tunnelled = [h for h in report.hops if h.tunnel is not None]
    assert bool(tunnelled) == bool(vxlan), "tshark and the report disagree about VXLAN"
    if report.verdict == "REJECT":
        assert any("3" in row["icmp.type"].split(",") for row in rows), "no ICMP type 3 (tshark)"


# -- 9. the tracer leaves nothing behind -----------------------------------------------


def trace_chains(lab: TracedLab) -> dict[str, list[str]]:
    return live_trace_chains(lab.lab, "nft")


def monitor_processes(lab: TracedLab) -> list[str]:
    return processes_in_lab(lab.lab, MONITOR_TOOLS)


def assert_clean(lab: TracedLab) -> None:
    chains = trace_chains(lab)
    assert not any(chains.values()), f"TRACE rules left behind: {chains}"
    assert not monitor_processes(lab), monitor_processes(lab)


def test_trace_leaves_no_rules_or_monitors(default: TracedLab) -> None:
    report = default.trace("client", "node-1:30080")
    assert report.outcome == "delivered"
    assert_clean(default)


def test_failed_trace_leaves_no_rules_or_monitors(
    default: TracedLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    during: dict[str, Any] = {}

    def failing_send(*args: object, **kwargs: object) -> None:
        # What the tracer had set up when it was about to send: proves the
        # checks afterwards look at the right things.
        during["chains"] = trace_chains(default)
        during["monitors"] = monitor_processes(default)
        raise RuntimeError("send failed (injected by the test)")

    monkeypatch.setattr("netemu.trace.live.send", failing_send)
    with pytest.raises(RuntimeError, match="injected by the test"):
        default.trace("client", "node-1:30080")
    assert all(during["chains"].values()), f"no TRACE rules while tracing: {during['chains']}"
    nodes = len(default.info["nodes"])
    assert len(during["monitors"]) == 2 * nodes, during["monitors"]
    assert_clean(default)


# -- 10. the CLI -----------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(NETEMU), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"netemu {' '.join(args)}: {done.returncode}\n{done.stderr}"
    return done


def test_cli_trace_json(default: TracedLab, tmp_path: Path) -> None:
    done = run_cli(
        "trace", "--lab", default.lab.name, "client", "node-1:30080", "-o", "json",
        "--captures", str(tmp_path),
    )  # fmt: skip
    data = json.loads(done.stdout)
    shared = ("node", "packet", "localOrigin", "verdict", "endpoints", "masquerade", "rules")
    for key in (*shared, "hops", "pcaps", "outcome", "summary"):
        assert key in data, f"no {key!r} in the JSON report: {sorted(data)}"
    assert data["node"] == "node-1" and data["localOrigin"] is False
    assert data["packet"]["src"] == CLIENT_IP
    assert (data["packet"]["dst"], data["packet"]["dport"]) == (default.node_ip("node-1"), 30080)
    assert data["verdict"] == "DNAT" and data["masquerade"] is True
    assert len(data["endpoints"]) == 1 and data["outcome"] == "delivered"
    assert all(set(r) == {"table", "chain", "rule"} for r in data["rules"])
    assert data["hops"] and {h["leg"] for h in data["hops"]} == {REQUEST, REPLY}
    directory = Path(data["pcaps"]["directory"])
    assert directory.parent == tmp_path / default.lab.name
    assert Path(data["pcaps"]["merged"]).is_file()
    assert all(Path(p).is_file() for p in data["pcaps"]["points"])
    assert json.loads((directory / "trace.json").read_text())["id"] == data["id"]
    # The keys the offline tracer's JSON has too, with the same shapes.
    args = ["--offline", "-f", str(default.manifests), "client", "node-1:30080", "-o", "json"]
    result = CliRunner().invoke(main, ["trace", *args])
    assert result.exit_code == 0, result.output
    offline_data = json.loads(result.output)
    for key in shared:
        assert type(data[key]) is type(offline_data[key]), key
    for key in ("src", "dst", "dport", "proto"):
        assert data["packet"][key] == offline_data["packet"][key], key
    assert set(data["endpoints"]) <= set(offline_data["endpoints"])


def test_cli_trace_text(default: TracedLab, tmp_path: Path) -> None:
    done = run_cli(
        "trace", "--lab", default.lab.name, "client", "node-1:30080",
        "--captures", str(tmp_path),
    )  # fmt: skip
    # The first line is the whole summary (not wrapped, whatever the width).
    first = done.stdout.splitlines()[0]
    summary = re.compile(
        rf"client {re.escape(CLIENT_IP)}:\d+ → {re.escape(default.node_ip('node-1'))}:30080"
        r" ⇒ DNAT 10\.244\.\d+\.\d+:8080 \(KUBE-SVC-\w+/KUBE-SEP-\w+\)"
        # node-1's flannel.1 or cni0 address, as the endpoint is remote or local
        r" ⇒ SNAT (10\.244\.0\.[01])( ⇒ VXLAN \S+ → \S+)?"
        r" ⇒ delivered to web-\S+ on node-\d \(seen client \1\)"
    )
    assert summary.fullmatch(first), done.stdout


# -- flows a node sends itself ---------------------------------------------------------


def test_node_icmp_to_pod_leaves_with_the_address_its_route_picks(default: TracedLab) -> None:
    """node-1 pings the pod on node-2: the route to node-2's pod CIDR goes
    through flannel.1, so the echo leaves with flannel.1's address (the pod
    CIDR's network address), not the node's underlay IP."""
    pod, pod_ip = default.pod("web", "node-2")
    report = default.trace("node-1", pod.split("/")[1], proto="icmp")
    vtep = route_source(default.node_netns("node-1"), pod_ip)
    assert vtep != default.node_ip("node-1")
    assert report.flow.source.ip == vtep
    assert (report.outcome, report.verdict) == ("delivered", "NONE"), report.summary()
    request = [h for h in report.hops if h.leg == REQUEST]
    assert request[0].action == "Forwarded"
    assert request[0].interface == "flannel.1" and request[0].packet.src == vtep
    (encap,) = [h for h in request if h.action == "Encapsulated"]
    assert encap.tunnel is not None and encap.tunnel["dst"] == default.node_ip("node-2")
    assert request[-1].action == "Delivered" and request[-1].packet.icmp_type == 8
    reply = [h for h in report.hops if h.leg == REPLY]
    assert reply[-1].action == "Delivered" and reply[-1].packet.icmp_type == 0
    assert reply[-1].node == "node-1" and reply[-1].packet.dst == vtep
    assert [c["original"]["proto"] for c in report.conntrack] == ["icmp", "icmp"]


def test_node_to_cluster_ip_reply_is_un_dnated_for_the_local_socket(default: TracedLab) -> None:
    """node-2 → ClusterIP web, answered by its own pod: the reply reaches
    node-2's stack still from the endpoint, and conntrack translates it
    back to the ClusterIP in INPUT, after the last capture point."""
    local_pod, local_ip = default.pod("web", "node-2")
    for _ in range(TRIES):
        report = default.trace("node-2", "web")
        assert report.verdict == "DNAT", report.summary()
        if report.endpoints[0].startswith(f"{local_ip}:"):
            break
    else:
        pytest.fail(f"no trace of node-2 → web reached {local_pod} in {TRIES} tries")
    assert report.flow.local_origin and report.masquerade
    request = [h.action for h in report.hops if h.leg == REQUEST]
    assert request[:2] == ["DNAT", "Masquerade"]  # both in node-2's OUTPUT path
    reply = [h for h in report.hops if h.leg == REPLY]
    assert [h.action for h in reply][-3:] == ["Un-SNAT", "Delivered", "Un-DNAT"]
    assert reply[-1].translated == f"{report.flow.dst}:{report.flow.dport}"
    assert reply[-1].packet.dst == report.flow.source.ip
