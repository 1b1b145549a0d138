"""The lab picture (netemu.net.graph) and `netemu graph`, without a lab:
the DOT source for the default lab's plan (every node, pod, veth, client and
Service with its address, pods inside their node's cluster, VXLAN tunnels
only with the vxlan overlay), a recorded trace's path drawn on the lab it
ran in, and the offline CLI. Rendering needs Graphviz's `dot`; those tests
skip with the reason when it is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from test_trace_report import recorded, report

from netemu.api.core import EndpointSlice, Node, Pod, Service
from netemu.cli import main
from netemu.controlplane.state import ClusterState
from netemu.net.graph import (
    REPLY_COLOR,
    REQUEST_COLOR,
    client_interface_id,
    host_network_pod_id,
    lab_graph,
    netfilter_note_id,
    node_interface_id,
    pod_interface_id,
    service_id,
    stack_id,
    switch_id,
)
from netemu.net.plan import host_veth, plan_lab
from netemu.pipeline import lab_name, load_cluster
from netemu.trace.packets import IpPacket
from netemu.trace.report import Hop
from netemu.trace.topology import Topology

ROOT = Path(__file__).parents[2]
DEFAULT = ROOT / "controlplane" / "default"
DOT_MISSING = "Graphviz's dot is missing (./setup.sh installs it)"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason=DOT_MISSING)
SVG = "{http://www.w3.org/2000/svg}"


# -- reading DOT back ---------------------------------------------------------------
#
# The graphviz library writes one statement per line, so a line-based reader
# is enough to check what the source says: which nodes exist with which
# attributes, which clusters hold them, and the edges.

_ATTR = re.compile(r'([\w]+)=("(?:[^"\\]|\\.)*"|[^\s\]]+)')
_ID = r'"(?:[^"\\]|\\.)*"|[\w.]+'
_NODE = re.compile(rf"^\s*({_ID}) \[(.*)\]$")
_EDGE = re.compile(rf"^\s*({_ID}) -> ({_ID})(?: \[(.*)\])?$")
_SUBGRAPH = re.compile(rf"^\s*subgraph(?: ({_ID}))? \{{$")


def _unquote(text: str) -> str:
    return text[1:-1].replace('\\"', '"') if text.startswith('"') else text


def _attrs(text: str | None) -> dict[str, str]:
    return {k: _unquote(v) for k, v in _ATTR.findall(text or "")}


@dataclass
class Dot:
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    clusters: dict[str, list[str]] = field(default_factory=dict)  # node -> enclosing clusters
    cluster_attrs: dict[str, dict[str, str]] = field(default_factory=dict)
    edges: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def in_cluster(self, node: str, cluster: str) -> bool:
        return cluster in self.clusters[node]

    def lit(self) -> dict[str, str]:
        """Highlighted node → its colour."""
        return {n: a["color"] for n, a in self.nodes.items() if "hop" in a.get("class", "")}


def parse(source: str) -> Dot:
    dot = Dot()
    stack: list[str] = []
    for line in source.splitlines()[1:]:
        if m := _SUBGRAPH.match(line):
            stack.append(_unquote(m.group(1) or ""))
        elif line.strip() == "}":
            if stack:
                stack.pop()
        elif m := _EDGE.match(line):
            dot.edges.append((_unquote(m.group(1)), _unquote(m.group(2)), _attrs(m.group(3))))
        elif m := _NODE.match(line):
            name = _unquote(m.group(1))
            if name in ("graph", "node", "edge"):
                continue
            dot.nodes.setdefault(name, {}).update(_attrs(m.group(2)))
            clusters = [c for c in stack if c.startswith("cluster")]
            if "label" in dot.nodes[name] or name not in dot.clusters:
                dot.clusters[name] = clusters
        elif stack and stack[-1].startswith("cluster") and "=" in line:
            dot.cluster_attrs.setdefault(stack[-1], {}).update(_attrs(line))
    return dot


# -- the labs -----------------------------------------------------------------------


def offline(paths: list[str]) -> tuple[Topology, ClusterState]:
    state = load_cluster(paths)
    assert state.lab is not None
    plan = plan_lab(state, lab_name(state.lab, paths))
    return Topology.from_plan(plan, state, state.lab.spec.iptables_backend), state


def host_gw_copy(directory: Path) -> Path:
    """controlplane/default with `overlay: host-gw` (as live_helpers.host_gw_copy)."""
    target = directory / "default-host-gw"
    shutil.copytree(DEFAULT, target)
    lab_yaml = target / "lab.yaml"
    text = lab_yaml.read_text()
    assert "overlay: vxlan" in text
    lab_yaml.write_text(text.replace("overlay: vxlan", "overlay: host-gw"))
    return target


def recorded_lab() -> tuple[Topology, ClusterState]:
    raw = recorded()["state"]
    state = ClusterState(
        nodes=tuple(Node.model_validate(o) for o in raw["nodes"]),
        services=tuple(Service.model_validate(o) for o in raw["services"]),
        pods=tuple(Pod.model_validate(o) for o in raw["pods"]),
        endpoint_slices=tuple(EndpointSlice.model_validate(o) for o in raw["endpointslices"]),
    )
    return Topology.from_info(recorded()["info"]), state


def test_default_lab_shows_everything_with_its_address() -> None:
    topology, state = offline([str(DEFAULT)])
    source = lab_graph(topology, state)
    dot = parse(source)
    labels = {n: a.get("label", "") for n, a in dot.nodes.items()}
    cluster_labels = {c: a.get("label", "") for c, a in dot.cluster_attrs.items()}

    assert set(topology.nodes) == {"node-1", "node-2"}
    for name, node in topology.nodes.items():
        assert cluster_labels[f"cluster/node/{name}"].split("\\n")[:2] == [name, node.ip]
        cidr = state.node(name).spec.pod_cidr
        assert f"pods {cidr}" in cluster_labels[f"cluster/node/{name}"]
        assert labels[node_interface_id(name, "eth0")] == f"eth0\\n{node.ip}"
        assert labels[node_interface_id(name, "cni0")] == f"cni0\\n{node.addresses[1]}"
        assert labels[node_interface_id(name, "flannel.1")] == f"flannel.1\\n{node.addresses[2]}"
        assert stack_id(name) in labels
    assert len(topology.pods) == 3
    for key, pod in topology.pods.items():
        assert cluster_labels[f"cluster/pod/{key}"] == pod.name
        assert labels[pod_interface_id(key)] == f"eth0\\n{pod.ip}"
        assert labels[node_interface_id(pod.node, host_veth(*key.split("/")))] == pod.host_veth
    (client,) = topology.clients.values()
    assert labels[client_interface_id("client")] == f"eth0\\n{client.ip}"
    assert cluster_labels["cluster/client/client"] == "client\\nexternal client"
    assert {switch_id(p) for p in ("br0", "n0-node-1", "n1-node-2", "c0-client")} <= set(labels)
    assert "192.168.56.0/24" in cluster_labels["cluster/underlay"]

    services = {s.metadata.name or "": s for s in state.services}
    assert set(services) == {"web", "web-nodeport", "web-local", "empty"}
    for svc_name, svc in services.items():
        lines = labels[service_id("default", svc_name)].split("\\n")
        assert lines[0] == svc_name
        assert f"ClusterIP {svc.spec.cluster_ip}" in lines
        assert dot.in_cluster(service_id("default", svc_name), "cluster/services")
    assert "80:30080/TCP → 8080" in labels[service_id("default", "web-nodeport")]
    assert "ETP Cluster" in labels[service_id("default", "web-nodeport")]
    assert "ETP Local" in labels[service_id("default", "web-local")]
    assert "NodePort" not in labels[service_id("default", "web")]
    # Nothing is highlighted without a path.
    assert dot.lit() == {}
    assert "path/" not in source


def test_pods_and_their_veths_are_inside_their_nodes_cluster() -> None:
    topology, state = offline([str(DEFAULT)])
    dot = parse(lab_graph(topology, state))
    for key, pod in topology.pods.items():
        eth0 = pod_interface_id(key)
        assert dot.clusters[eth0] == [f"cluster/node/{pod.node}", f"cluster/pod/{key}"]
        veth = node_interface_id(pod.node, pod.host_veth or "")
        assert dot.clusters[veth] == [f"cluster/node/{pod.node}"]
        links = {(a, b) for a, b, _ in dot.edges}
        assert (eth0, veth) in links and (veth, node_interface_id(pod.node, "cni0")) in links
    for name in topology.nodes:
        for interface in ("eth0", "cni0", "flannel.1", "stack"):
            assert dot.clusters[f"node/{name}/{interface}"] == [f"cluster/node/{name}"]
    for port in ("br0", "n0-node-1", "n1-node-2", "c0-client"):
        assert dot.clusters[switch_id(port)] == ["cluster/underlay"]
    assert dot.clusters[client_interface_id("client")] == ["cluster/client/client"]


def test_services_point_at_their_endpoint_pods() -> None:
    topology, state = offline([str(DEFAULT)])
    dot = parse(lab_graph(topology, state))
    targets: dict[str, set[str]] = {}
    for a, b, attrs in dot.edges:
        if a.startswith("service/"):
            assert attrs["style"] == "dotted"
            assert attrs["lhead"] == "cluster/" + b.removesuffix("/eth0")
            targets.setdefault(a, set()).add(b)
    every_pod = {pod_interface_id(key) for key in topology.pods}
    assert targets == {
        service_id("default", "web"): every_pod,
        service_id("default", "web-nodeport"): every_pod,
        service_id("default", "web-local"): every_pod,
    }


HOST_NETWORK_AGENT = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels:
      app: agent
  template:
    metadata:
      labels:
        app: agent
    spec:
      hostNetwork: true
      containers:
        - name: agent
          image: registry.k8s.io/e2e-test-images/agnhost:2.52
          ports:
            - containerPort: 9100
---
apiVersion: v1
kind: Service
metadata:
  name: agent
spec:
  selector:
    app: agent
  ports:
    - port: 9100
"""


def test_host_network_pods_are_drawn_in_their_nodes_network(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text(HOST_NETWORK_AGENT)
    topology, state = offline([str(DEFAULT), str(tmp_path / "agent.yaml")])
    agents = [p for p in topology.pods.values() if p.host_network]
    assert len(agents) == 2
    dot = parse(lab_graph(topology, state))
    links = {(a, b): attrs for a, b, attrs in dot.edges}
    for pod in agents:
        box = host_network_pod_id(pod.key)
        assert dot.clusters[box] == [f"cluster/node/{pod.node}", f"cluster/pod/{pod.key}"]
        assert dot.nodes[box]["label"] == f"node's network\\n{pod.ip}"
        assert links[(box, stack_id(pod.node))]["style"] == "dotted"
        assert "lhead" not in links[(service_id("default", "agent"), box)]
        assert not [n for n in dot.nodes if n.startswith(f"node/{pod.node}/veth") and pod.name in n]
    assert "5 pods" in lab_graph(topology, state)


def test_endpoints_without_a_pod_are_listed_on_their_service() -> None:
    topology, state = offline([str(ROOT / "controlplane" / "no-selector")])
    dot = parse(lab_graph(topology, state))
    label = dot.nodes[service_id("monitoring", "node-exporter")]["label"].split("\\n")
    assert label[0] == "monitoring/node-exporter"
    assert "endpoint 192.168.56.11 (node-1)" in label
    assert "endpoint 192.168.56.12 (node-2)" in label
    assert not [a for a, _, _ in dot.edges if a.startswith("service/")]


def test_vxlan_tunnels_only_in_vxlan_labs(tmp_path: Path) -> None:
    topology, state = offline([str(DEFAULT)])
    dot = parse(lab_graph(topology, state))
    tunnels = [(a, b, attrs) for a, b, attrs in dot.edges if attrs.get("class") == "tunnel"]
    assert [(a, b) for a, b, _ in tunnels] == [
        (node_interface_id("node-1", "flannel.1"), node_interface_id("node-2", "flannel.1"))
    ]
    assert tunnels[0][2]["style"] == "dashed"
    # flannel's Linux default port, on the tunnel and on each VXLAN device.
    assert tunnels[0][2]["label"] == "VXLAN VNI 1\\nUDP 8472"
    device = dot.nodes[node_interface_id("node-1", "flannel.1")]
    assert "(VNI 1, UDP 8472)" in device["tooltip"]

    # A Lab's own vxlanPort is the one drawn.
    own_port = tmp_path / "own-port"
    shutil.copytree(DEFAULT, own_port)
    lab_yaml = own_port / "lab.yaml"
    lab_yaml.write_text(
        lab_yaml.read_text().replace("overlay: vxlan", "overlay: vxlan\n  vxlanPort: 4789")
    )
    topology, state = offline([str(own_port)])
    assert topology.vxlan_port == 4789
    assert "UDP 4789" in lab_graph(topology, state)

    topology, state = offline([str(host_gw_copy(tmp_path))])
    assert topology.overlay == "host-gw"
    source = lab_graph(topology, state)
    dot = parse(source)
    assert "flannel.1" not in source and "VXLAN" not in source
    assert not [e for e in dot.edges if e[2].get("class") == "tunnel"]
    assert "host-gw overlay" in source


def _pod_ips(state: ClusterState) -> dict[str, list[str]]:
    """namespace/name → status.podIPs, primary first."""
    return {
        f"{p.metadata.namespace or 'default'}/{p.metadata.name}": [i.ip for i in p.status.pod_ips]
        for p in state.pods
    }


def test_an_ipv6_only_lab_shows_its_ipv6_addresses_and_flannel_v6() -> None:
    topology, state = offline([str(ROOT / "controlplane" / "ipv6only")])
    source = lab_graph(topology, state)
    dot = parse(source)
    labels = {n: a.get("label", "") for n, a in dot.nodes.items()}
    cluster_labels = {c: a.get("label", "") for c, a in dot.cluster_attrs.items()}
    # (underlayIP, podCIDR as the node IPAM controller hands them out).
    nodes = {
        "node-1": ("fd00:56::11", "fd00:10:244::"),
        "node-2": ("fd00:56::12", "fd00:10:244:1::"),
    }
    for name, (ip, net) in nodes.items():
        assert cluster_labels[f"cluster/node/{name}"] == f"{name}\\n{ip}\\npods {net}/64"
        assert labels[node_interface_id(name, "eth0")] == f"eth0\\n{ip}"
        assert labels[node_interface_id(name, "cni0")] == f"cni0\\n{net}1"
        # flannel's IPv6-only VXLAN device, its VTEP the pod CIDR's network address.
        assert labels[node_interface_id(name, "flannel-v6.1")] == f"flannel-v6.1\\n{net}"
        assert dot.clusters[node_interface_id(name, "flannel-v6.1")] == [f"cluster/node/{name}"]
    assert "flannel.1" not in source
    tunnels = [(a, b, attrs) for a, b, attrs in dot.edges if attrs.get("class") == "tunnel"]
    assert [(a, b, attrs["id"]) for a, b, attrs in tunnels] == [
        (
            node_interface_id("node-1", "flannel-v6.1"),
            node_interface_id("node-2", "flannel-v6.1"),
            "tunnel/node-1/node-2",
        )
    ]
    for key, ips in _pod_ips(state).items():
        assert labels[pod_interface_id(key)] == f"eth0\\n{ips[0]}" and ":" in ips[0]
    assert labels[client_interface_id("client")] == "eth0\\nfd00:56::20"
    # No IPv4 address anywhere.
    assert not re.search(r"\b\d+\.\d+\.\d+\.\d+\b", source)


def test_an_ipv6_primary_lab_shows_ipv6_first_and_ipv4_under_it() -> None:
    topology, state = offline([str(ROOT / "controlplane" / "ipv6primary")])
    dot = parse(lab_graph(topology, state))
    labels = {n: a.get("label", "") for n, a in dot.nodes.items()}
    cluster_labels = {c: a.get("label", "") for c, a in dot.cluster_attrs.items()}
    nodes = {
        "node-1": ("fd00:56::11", "192.168.56.11", "fd00:10:244::", "10.244.0."),
        "node-2": ("fd00:56::12", "192.168.56.12", "fd00:10:244:1::", "10.244.1."),
    }
    for name, (ip6, ip4, net6, net4) in nodes.items():
        assert cluster_labels[f"cluster/node/{name}"] == (
            f"{name}\\n{ip6}\\n{ip4}\\npods {net6}/64, {net4}0/24"
        )
        assert labels[node_interface_id(name, "eth0")] == f"eth0\\n{ip6}\\n{ip4}"
        assert labels[node_interface_id(name, "cni0")] == f"cni0\\n{net6}1\\n{net4}1"
        # Both of flannel's devices, each with its family's VTEP address.
        assert labels[node_interface_id(name, "flannel.1")] == f"flannel.1\\n{net4}0"
        assert labels[node_interface_id(name, "flannel-v6.1")] == f"flannel-v6.1\\n{net6}"
    tunnels = {attrs["id"]: (a, b) for a, b, attrs in dot.edges if attrs.get("class") == "tunnel"}
    assert tunnels == {
        "tunnel/node-1/node-2": (
            node_interface_id("node-1", "flannel.1"),
            node_interface_id("node-2", "flannel.1"),
        ),
        "tunnel/node-1/node-2/flannel-v6.1": (
            node_interface_id("node-1", "flannel-v6.1"),
            node_interface_id("node-2", "flannel-v6.1"),
        ),
    }
    for key, ips in _pod_ips(state).items():
        assert [":" in ip for ip in ips] == [True, False]
        assert labels[pod_interface_id(key)] == f"eth0\\n{ips[0]}\\n{ips[1]}"
    assert labels[client_interface_id("client")] == "eth0\\nfd00:56::20\\n192.168.56.20"
    (dual,) = [s for s in state.services if s.metadata.name == "web-dual"]
    v6, v4 = dual.spec.cluster_ips
    lines = labels[service_id("default", "web-dual")].split("\\n")
    assert lines[1:3] == [f"ClusterIP {v6}", f"ClusterIP {v4}"]


def test_cli_graph_offline_draws_ipv6_labs(tmp_path: Path) -> None:
    for lab in ("ipv6only", "ipv6primary"):
        out = tmp_path / f"{lab}.dot"
        result = CliRunner().invoke(
            main, ["graph", "-f", str(ROOT / "controlplane" / lab), "-o", str(out)]
        )
        assert result.exit_code == 0, result.stderr
        assert 'id="node/node-1/flannel-v6.1"' in out.read_text()


def test_ids_are_stable_and_quoted() -> None:
    topology, state = offline([str(DEFAULT)])
    first = lab_graph(topology, state)
    assert first == lab_graph(*offline([str(DEFAULT)]))
    # Every id with a character DOT does not take bare is quoted, and the
    # element's id is the graph id (so the SVG carries it).
    assert '\t\t"node/node-1/flannel.1" [' in first
    for name, attrs in parse(first).nodes.items():
        assert attrs["id"] == name
    # The same lab live and planned: the same ids for everything but pods
    # (whose names the ReplicaSet controller draws at random).
    live = parse(lab_graph(*recorded_lab())).nodes
    planned = parse(first).nodes
    assert {
        n for n in live if not n.startswith(("pod/", "node/node-1/veth", "node/node-2/veth"))
    } == {n for n in planned if not n.startswith(("pod/", "node/node-1/veth", "node/node-2/veth"))}


# -- a trace's path ----------------------------------------------------------------


def _hop_id(hop: Hop) -> str:
    """The graph id a capture point should have, worked out from the lab's
    info file independently of netemu.net.graph."""
    info = recorded()["info"]
    assert hop.interface
    if hop.netns == info["underlay"]:
        return f"switch/{hop.interface}"
    for kind in ("nodes", "clients", "pods"):
        for name, site in info[kind].items():
            if site["netns"] == hop.netns:
                return f"{kind[:-1]}/{name}/{hop.interface}"
    raise AssertionError(f"no owner for {hop.netns}")


def test_a_traces_path_lights_up_exactly_its_capture_points() -> None:
    r = report()
    topology, state = recorded_lab()
    dot = parse(lab_graph(topology, state, r.hops, caption=r.summary()))
    request = {_hop_id(h) for h in r.hops if h.leg == "request" and h.interface}
    reply = {_hop_id(h) for h in r.hops if h.leg == "reply" and h.interface}
    # The request crosses node-1's stack (DNAT, masquerade) and the reply
    # is translated back there too.
    expected = {i: REQUEST_COLOR for i in request | {stack_id("node-1")}}
    expected.update({i: REPLY_COLOR for i in reply - request})
    assert dot.lit() == expected
    # The request goes through node-2's flannel.1, cni0 and the pod's veth to the pod.
    (pod,) = (p for p in topology.pods.values() if p.ip == "10.244.1.2")
    assert {
        node_interface_id("node-2", "flannel.1"),
        node_interface_id("node-2", "cni0"),
        node_interface_id("node-2", pod.host_veth or ""),
        pod_interface_id(pod.key),
        client_interface_id("client"),
        switch_id("n1-node-2"),
    } <= request
    assert dot.nodes[pod_interface_id(pod.key)]["penwidth"] == "2.5"
    assert "bold" in dot.nodes[pod_interface_id(pod.key)]["style"]
    # The other pods and node-2's stack stay plain.
    for other in topology.pods.values():
        if other != pod:
            assert pod_interface_id(other.key) not in dot.lit()
    assert stack_id("node-2") not in dot.lit()


def test_path_edges_are_numbered_as_the_trace_table() -> None:
    r = report()
    dot = parse(lab_graph(*recorded_lab(), r.hops))
    path = {a["id"]: (x, y, a) for x, y, a in dot.edges if a.get("id", "").startswith("path/")}
    for leg, color, word in (("request", REQUEST_COLOR, "start"), ("reply", REPLY_COLOR, "reply")):
        numbered = [(n, h) for n, h in enumerate(r.hops, start=1) if h.leg == leg and h.interface]
        for (_, before), (number, hop) in pairwise(numbered):
            tail, head, attrs = path[f"path/{number}"]
            assert (tail, head) == (_hop_id(before), _hop_id(hop))
            assert attrs["label"] == str(number)
            assert attrs["color"] == color
            assert attrs["constraint"] == "false"
        # The first hop of each leg has no edge into it: its number marks it.
        first_number, first = numbered[0]
        assert f"path/{first_number}" not in path
        assert dot.nodes[_hop_id(first)]["xlabel"] == f"{word} {first_number}"
    assert len(path) == sum(1 for h in r.hops if h.interface) - 2


def test_nat_hops_are_noted_on_their_node() -> None:
    r = report()
    dot = parse(lab_graph(*recorded_lab(), r.hops))
    numbers = {h.action: n for n, h in enumerate(r.hops, start=1) if h.interface is None}
    request = dot.nodes[netfilter_note_id("node-1", "request")]
    assert request["label"].split("\\n") == [
        f"{numbers['DNAT']}  DNAT → 10.244.1.2:8080",
        f"{numbers['Masquerade']}  Masquerade → {r.hops[numbers['Masquerade'] - 1].translated}",
    ]
    assert request["color"] == REQUEST_COLOR
    reply = dot.nodes[netfilter_note_id("node-1", "reply")]
    assert reply["label"].startswith(f"{numbers['Un-SNAT']}  Un-SNAT → 192.168.56.20:")
    assert reply["color"] == REPLY_COLOR
    assert dot.clusters[netfilter_note_id("node-1", "request")] == ["cluster/node/node-1"]
    assert netfilter_note_id("node-2", "request") not in dot.nodes


def _packet(src: str, dst: str) -> IpPacket:
    return IpPacket("tcp", src, dst, 40000, 80, 64, 1, 60, "S", 1, None, None, None, "")


def test_capture_points_the_plain_picture_lacks_are_added_where_they_are() -> None:
    """A node reaching its own NodePort goes through `lo`; a hop in a
    namespace the lab does not have is left out."""
    topology, state = offline([str(DEFAULT)])
    node = topology.nodes["node-1"]
    packet = _packet(node.ip, node.ip)

    def hop(netns: str, interface: str | None, action: str, translated: str | None = None) -> Hop:
        return Hop(
            "request", None, "", netns, interface, None, "", action, packet, None, translated
        )

    hops = [
        hop(node.netns, "lo", "Forwarded"),
        hop(node.netns, None, "DNAT", "10.244.0.2:8080"),
        hop("netemu_other_node_x", "eth0", "Forwarded"),
        hop(node.netns, "cni0", "Routed"),
    ]
    dot = parse(lab_graph(topology, state, hops))
    lo = node_interface_id("node-1", "lo")
    assert dot.clusters[lo] == ["cluster/node/node-1"]
    assert dot.lit() == {
        lo: REQUEST_COLOR,
        stack_id("node-1"): REQUEST_COLOR,
        node_interface_id("node-1", "cni0"): REQUEST_COLOR,
    }
    path = [
        (a, b, attrs["label"]) for a, b, attrs in dot.edges if attrs.get("class") == "path request"
    ]
    assert path == [(lo, node_interface_id("node-1", "cni0"), "4")]
    assert "netemu_other" not in lab_graph(topology, state, hops)


def test_an_ipv6_only_path_crosses_the_drawn_flannel_v6_devices() -> None:
    """A pod-to-pod request across an IPv6-only lab's overlay lights
    flannel-v6.1 on both nodes: the devices the picture draws, not extra
    boxes beside them."""
    topology, state = offline([str(ROOT / "controlplane" / "ipv6only")])
    one, two = (
        next(p for p in topology.pods.values() if p.node == n) for n in ("node-1", "node-2")
    )
    packet = _packet(one.ip, two.ip)
    hops = [
        Hop("request", "node-1", "", topology.nodes[n].netns, i, None, "", "Routed", packet)
        for n, i in (("node-1", "flannel-v6.1"), ("node-2", "flannel-v6.1"))
    ]
    dot = parse(lab_graph(topology, state, hops))
    devices = [node_interface_id(n, "flannel-v6.1") for n in ("node-1", "node-2")]
    assert dot.lit() == dict.fromkeys(devices, REQUEST_COLOR)
    path = [(a, b) for a, b, attrs in dot.edges if attrs.get("class") == "path request"]
    assert path == [tuple(devices)]
    assert [n for n in dot.nodes if n.endswith("flannel-v6.1")] == devices
    for name, device in zip(("node-1", "node-2"), devices, strict=True):
        # The VXLAN device itself (its VTEP address; stack → it → eth0),
        # not an unknown interface hung dotted off the stack.
        assert dot.nodes[device]["label"].startswith("flannel-v6.1\\nfd00:10:244:")
        links = {(a, b): attrs.get("style") for a, b, attrs in dot.edges}
        assert links[stack_id(name), device] is None
        assert links[device, node_interface_id(name, "eth0")] == "dashed"


# -- rendering and the CLI ----------------------------------------------------------


def _svg_elements(path: Path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    return {g.attrib["id"]: g for g in root.iter(f"{SVG}g") if "id" in g.attrib}


def _strokes(element: ET.Element) -> set[str]:
    return {e.attrib["stroke"] for e in element.iter() if "stroke" in e.attrib}


@needs_dot
def test_dot_renders_the_traced_path_into_the_svg(tmp_path: Path) -> None:
    r = report()
    source = lab_graph(*recorded_lab(), r.hops, caption=r.summary())
    svg = tmp_path / "trace.svg"
    subprocess.run(["dot", "-Tsvg", "-o", str(svg)], input=source.encode(), check=True)
    elements = _svg_elements(svg)
    for hop in r.hops:
        if hop.interface and hop.leg == "request":
            assert REQUEST_COLOR in _strokes(elements[_hop_id(hop)])
    assert REQUEST_COLOR in _strokes(elements["path/2"])
    assert elements["node/node-1/eth0"].attrib["class"] == "node hop request"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@needs_dot
def test_cli_graph_offline_writes_an_svg(tmp_path: Path) -> None:
    out = tmp_path / "lab.svg"
    result = invoke("graph", "-f", str(DEFAULT), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    root = ET.parse(out).getroot()
    assert root.tag == f"{SVG}svg"
    text = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    topology, _ = offline([str(DEFAULT)])
    for pod in topology.pods.values():
        assert pod.name in text and pod.ip in text
    for name in ("web", "web-nodeport", "web-local", "empty", "node-1", "node-2", "br0"):
        assert name in text


@needs_dot
def test_cli_graph_png_by_suffix(tmp_path: Path) -> None:
    out = tmp_path / "lab.png"
    assert invoke("graph", "-f", str(DEFAULT), "-o", str(out)).exit_code == 0
    assert out.read_bytes().startswith(b"\x89PNG")


def test_cli_graph_dot_needs_no_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "lab.txt"
    result = invoke("graph", "-f", str(DEFAULT), "-o", str(out), "--format", "dot")
    assert result.exit_code == 0, result.output
    assert out.read_text() == lab_graph(*offline([str(DEFAULT)]))


def test_cli_graph_without_dot_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    result = invoke("graph", "-f", str(DEFAULT), "-o", str(tmp_path / "lab.svg"))
    assert result.exit_code == 1
    assert result.stderr == "error: Graphviz's dot is not installed (./setup.sh installs it)\n"
    assert not (tmp_path / "lab.svg").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "{tmp}/lab.jpeg"], "cannot tell the format from the suffix"),
        (["-o", "{tmp}/missing/lab.svg"], "no directory"),
        (["-o", "{tmp}/lab.svg", "--lab", "x"], "either -f PATH (offline) or --lab LAB"),
    ],
)
def test_cli_graph_bad_input_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = invoke("graph", "-f", str(DEFAULT), *(a.format(tmp=tmp_path) for a in args))
    assert result.exit_code == 2
    assert message in result.stderr


def test_cli_graph_without_a_lab_object_draws_the_built_in_lab(tmp_path: Path) -> None:
    result = invoke("graph", "-f", str(DEFAULT / "web.yaml"), "-o", str(tmp_path / "x.dot"))
    assert result.exit_code == 0, result.stderr
    assert "no Lab in the input: using the built-in lab" in result.stderr
    drawn = (tmp_path / "x.dot").read_text()
    assert "node-1" in drawn and "node-2" in drawn and "client" in drawn


def test_cli_graph_live_needs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = invoke("graph", "-o", str(tmp_path / "lab.dot"))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: netemu graph needs root (it works in network namespaces); run it with sudo"
    ]


def test_cli_trace_svg_is_for_live_traces(tmp_path: Path) -> None:
    svg = str(tmp_path / "t.svg")
    result = invoke(
        "trace", "--offline", "-f", str(DEFAULT), "client", "node-1:30080", "--svg", svg
    )
    assert result.exit_code == 2
    assert "--svg draws the path a live trace saw" in result.stderr
