"""A picture of a lab as Graphviz DOT source: the underlay switch (br0 and
its ports) in the middle, one cluster per node (eth0, cni0, its VXLAN
devices (flannel.1; flannel-v6.1 beside it on a dual-stack lab, alone on an
IPv6-only one), its routing stack, each pod's host veth and a sub-cluster
per pod), the external clients on their switch ports, the VXLAN tunnels
between the nodes' devices, and the Services with dotted edges to their
endpoint pods. Addresses are shown primary family first, the other
family's under them on a dual-stack lab.

Given a trace's hops, the capture points the request crossed are drawn in
REQUEST_COLOR, those only the reply crossed in REPLY_COLOR, and the edges
between consecutive capture points carry the number of the hop they lead
to in the trace table (`netemu trace`'s `#` column), so the picture and the
table read together. NAT, drop and reject hops (they have no interface)
become a note on the node where netfilter took them.

Every graph object has a stable id (`node/<node>/<interface>`,
`pod/<namespace>/<name>/eth0`, `client/<name>/eth0`, `switch/<port>`,
`service/<namespace>/<name>`, `path/<hop number>`...), the same for a live
lab and for the plan of the same manifests; Graphviz writes it as the SVG
element's id. Kubernetes names and Linux interface names never contain `/`
or `:`, so ids stay unambiguous and never read as DOT's node:port syntax.

Pure: builds a string from data; must not run `dot` or touch the disk or
the kernel (netemu.kernel.graphviz renders the source).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations, pairwise
from typing import TYPE_CHECKING

import graphviz

from netemu.api.core import SERVICE_NAME_LABEL, Service
from netemu.controlplane.state import ClusterState
from netemu.net.addresses import bridge_gateway, overlay_address
from netemu.net.plan import (
    POD_BRIDGE,
    SWITCH_BRIDGE,
    VXLAN_DEVICE_V6,
    VXLAN_VNI,
    switch_port,
)
from netemu.trace.topology import PodSite, Topology

if TYPE_CHECKING:
    # Only the type: the report module imports Scapy, which `netemu graph`
    # has no use for.
    from netemu.trace.report import Hop

REQUEST, REPLY = "request", "reply"  # the legs, as netemu.trace.report names them
REQUEST_COLOR = "#d62728"
REPLY_COLOR = "#1f77b4"
LEG_COLORS = {REQUEST: REQUEST_COLOR, REPLY: REPLY_COLOR}
# Pale fills of the leg colours: a highlighted interface still reads as a box.
LEG_FILLS = {REQUEST: "#fde3e3", REPLY: "#dcebf7"}
HIGHLIGHT_WIDTH = "2.5"

_FONT = "Helvetica"
_EDGE = "#666666"
_NODE_FILL = "#f4f4f4"
_POD_FILL = "#fff8dc"
_CLIENT_FILL = "#e8f5e9"
_SWITCH_FILL = "#ececf7"
_SERVICES_FILL = "#f5f9fd"
_SERVICE_FILL = "#e3f2fd"
_SERVICE_EDGE = "#5c7ea8"
_TUNNEL = "#7b1fa2"


# -- ids ---------------------------------------------------------------------------


def node_interface_id(node: str, interface: str) -> str:
    return f"node/{node}/{interface}"


def stack_id(node: str) -> str:
    """A node's own IP stack: its routes and the rules kube-proxy wrote."""
    return f"node/{node}/stack"


def netfilter_note_id(node: str, leg: str) -> str:
    return f"node/{node}/netfilter/{leg}"


def pod_interface_id(pod_key: str, interface: str = "eth0") -> str:
    return f"pod/{pod_key}/{interface}"


def host_network_pod_id(pod_key: str) -> str:
    """A hostNetwork pod has no interface of its own: one box stands for it."""
    return f"pod/{pod_key}/host"


def client_interface_id(client: str, interface: str = "eth0") -> str:
    return f"client/{client}/{interface}"


def switch_id(interface: str) -> str:
    return f"switch/{interface}"


def service_id(namespace: str, name: str) -> str:
    return f"service/{namespace}/{name}"


def path_edge_id(number: int) -> str:
    return f"path/{number}"


def _cluster(*parts: str) -> str:
    # Graphviz draws a subgraph as a box only if its name starts with "cluster".
    return "/".join(("cluster", *parts))


def _text(*lines: str) -> str:
    """A multi-line label with DOT's centred line breaks. nohtml: a label
    like "<none>" must never be read as an HTML label."""
    text: str = graphviz.nohtml("\\n".join(line.replace("\\", "\\\\") for line in lines))
    return text


# -- the traced path ---------------------------------------------------------------


@dataclass(frozen=True)
class PathStep:
    """One hop of a trace placed on the picture: its number in the trace
    table, its leg, and the graph node it lights up (an interface, or the
    node's stack for a decision netfilter took inside the node)."""

    number: int
    leg: str
    target: str
    interface: bool  # False: a NAT, drop or reject hop (no capture point)
    text: str = ""  # for a decision: what its note says


def path_steps(topology: Topology, hops: Sequence[Hop]) -> list[PathStep]:
    """The hops that can be placed on the picture of `topology`, in order."""
    steps: list[PathStep] = []
    for number, hop in enumerate(hops, start=1):
        kind, name, node = topology.owner_of_netns(hop.netns)
        if kind == "underlay" and hop.netns != topology.underlay:
            continue  # owner_of_netns calls every namespace it does not know the switch
        if hop.interface is None:
            if node is not None:
                steps.append(PathStep(number, hop.leg, stack_id(node), False, _decision(hop)))
            continue
        if not hop.interface:
            continue  # its interface was gone before the frame was read
        target = _interface_target(kind, name, hop.interface)
        if target is not None:
            steps.append(PathStep(number, hop.leg, target, True))
    return steps


def _interface_target(kind: str, name: str, interface: str) -> str | None:
    if kind == "node":
        return node_interface_id(name, interface)
    if kind == "pod":
        return pod_interface_id(name, interface)
    if kind == "client":
        return client_interface_id(name, interface)
    if kind == "underlay":
        return switch_id(interface)
    return None


def _decision(hop: Hop) -> str:
    if hop.translated:
        return f"{hop.action} → {hop.translated}"
    if hop.rule is not None:
        return f"{hop.action} by {hop.rule.table} {hop.rule.chain}"
    return hop.action


def highlighted(steps: Iterable[PathStep]) -> dict[str, str]:
    """Graph id → the leg it is drawn for. Where both legs crossed the same
    point the request wins: it is what a trace asks about."""
    legs: dict[str, str] = {}
    for step in steps:
        if legs.get(step.target) != REQUEST:
            legs[step.target] = step.leg
    return legs


# -- the picture -------------------------------------------------------------------


def lab_graph(
    topology: Topology,
    state: ClusterState,
    path: Sequence[Hop] | None = None,
    *,
    caption: str | None = None,
) -> str:
    """The lab as DOT source; with `path` (a trace's hops), the path drawn on
    it. `caption`: a line under the title (a trace's summary, say)."""
    return _Builder(topology, state, path_steps(topology, path or ()), caption).build()


class _Builder:
    def __init__(
        self,
        topology: Topology,
        state: ClusterState,
        steps: Sequence[PathStep],
        caption: str | None,
    ) -> None:
        self.topology = topology
        self.state = state
        self.steps = steps
        self.caption = caption
        self.lit = highlighted(steps)
        # Where each leg starts: no edge leads to its first hop to carry
        # that hop's number, so the box says it ("start 1", "reply 16").
        self.starts: dict[str, list[str]] = {}
        for leg, word in ((REQUEST, "start"), (REPLY, "reply")):
            first = next((s for s in steps if s.leg == leg and s.interface), None)
            if first is not None:
                self.starts.setdefault(first.target, []).append(f"{word} {first.number}")
        # Each node's pod CIDRs, primary family first (spec.podCIDRs).
        self.pod_cidrs = {
            n.metadata.name or "": n.spec.pod_cidrs or [n.spec.pod_cidr]
            for n in state.nodes
            if n.spec.pod_cidr
        }
        self.drawn: set[str] = set()
        self.dot = graphviz.Digraph(name=topology.lab)

    def build(self) -> str:
        dot = self.dot
        dot.attr(
            "graph",
            id=f"lab/{self.topology.lab}",
            label=_text(*self._title()),
            labelloc="t",
            fontname=_FONT,
            fontsize="14",
            rankdir="TB",
            compound="true",  # Service edges end at a pod's cluster border
            nodesep="0.3",
            ranksep="0.4",
        )
        dot.attr("node", fontname=_FONT, fontsize="10", shape="box", style="rounded,filled")
        dot.attr("node", fillcolor="white", margin="0.1,0.04", height="0.3")
        dot.attr("edge", fontname=_FONT, fontsize="9", arrowhead="none", color=_EDGE)
        self._services()
        for index, name in enumerate(self.topology.nodes):
            self._node(index, name)
        self._switch()
        for index, name in enumerate(self.topology.clients):
            self._client(index, name)
        self._tunnels()
        self._path_edges()
        return str(dot.source)

    # -- helpers ----------------------------------------------------------------

    def _box(
        self, graph: graphviz.Digraph, ident: str, label: str, tooltip: str, **attrs: str
    ) -> None:
        """A graph node, highlighted when the traced path crossed it."""
        leg = self.lit.get(ident)
        if leg is not None:
            attrs.update(
                color=LEG_COLORS[leg],
                fillcolor=LEG_FILLS[leg],
                fontcolor=LEG_COLORS[leg],
                penwidth=HIGHLIGHT_WIDTH,
                style=attrs.get("style", "rounded,filled") + ",bold",
            )
            attrs["class"] = f"hop {leg}"
        if ident in self.starts:
            attrs["xlabel"] = _text(" / ".join(self.starts[ident]))
        graph.node(ident, label, id=ident, tooltip=tooltip, **attrs)
        self.drawn.add(ident)

    def _extra(self, prefix: str) -> list[str]:
        """Interfaces under `prefix` the path crossed that the plain picture
        lacks (a node's `lo` for traffic to its own NodePort, say): drawn so
        the path stays whole."""
        names = []
        for step in self.steps:
            if step.interface and step.target.startswith(prefix):
                name = step.target[len(prefix) :]
                if name not in names and "/" not in name:
                    names.append(name)
        return names

    def _title(self) -> list[str]:
        t = self.topology
        count = len(self.state.services)
        lines = [
            f"netemu lab {t.lab}: {_plural(len(t.nodes), 'node')}, "
            f"{_plural(len(t.pods), 'pod')}, "
            f"{_plural(len(t.clients), 'external client')}, {_plural(count, 'Service')}",
            f"{t.overlay} overlay, kube-proxy {t.proxy_mode} (node iptables: {t.backend})",
        ]
        if self.caption:
            # A trace summary is one long line: a step per line keeps the
            # picture as wide as the lab.
            first, *rest = self.caption.split(" ⇒ ")
            lines += [first, *(f"⇒ {part}" for part in rest)]
        if self.steps:
            lines.append(
                "request in red, reply in blue; numbers are the hops' # in the trace table"
            )
        return lines

    # -- the parts --------------------------------------------------------------

    def _services(self) -> None:
        if not self.state.services:
            return
        endpoints = _endpoint_pods(self.state, self.topology)
        with self.dot.subgraph(name=_cluster("services")) as sub:
            sub.attr(
                id=_cluster("services"),
                label="Services",
                style="rounded,filled",
                fillcolor=_SERVICES_FILL,
                color="#9fb8d6",
                fontsize="12",
            )
            for svc in self.state.services:
                namespace = svc.metadata.namespace or "default"
                name = svc.metadata.name or ""
                ident = service_id(namespace, name)
                lines = _service_lines(svc)
                for ip, pod, _ in endpoints.get((namespace, name), ()):
                    if pod is None:
                        # A selector-less Service's hand-written endpoints:
                        # a node's address, or somewhere the lab cannot show.
                        node = self.topology.node_of_ip(ip)
                        lines.append(f"endpoint {ip} ({node or 'no lab pod'})")
                self._box(
                    sub,
                    ident,
                    _text(*lines),
                    f"Service {namespace}/{name}",
                    shape="note",
                    style="filled",
                    fillcolor=_SERVICE_FILL,
                )
        for svc in self.state.services:
            namespace, name = svc.metadata.namespace or "default", svc.metadata.name or ""
            for _ip, pod, ready in endpoints.get((namespace, name), ()):
                if pod is None:
                    continue
                target = (
                    host_network_pod_id(pod.key) if pod.host_network else pod_interface_id(pod.key)
                )
                attrs = {} if pod.host_network else {"lhead": _cluster("pod", pod.key)}
                if not ready:
                    attrs["label"] = "not ready"
                self.dot.edge(
                    service_id(namespace, name),
                    target,
                    style="dotted" if ready else "dashed",
                    color=_SERVICE_EDGE if ready else "#aaaaaa",
                    arrowhead="normal",
                    arrowsize="0.6",
                    **attrs,
                )

    def _node(self, index: int, name: str) -> None:
        t = self.topology
        site = t.nodes[name]
        cidrs = self.pod_cidrs.get(name, [])
        pods = [p for p in t.pods.values() if p.node == name]
        eth0 = node_interface_id(name, "eth0")
        stack = stack_id(name)
        with self.dot.subgraph(name=_cluster("node", name)) as sub:
            sub.attr(
                id=_cluster("node", name),
                label=_text(
                    name,
                    *_ips(site.ip, site.other_ip),
                    f"pods {', '.join(cidrs)}" if cidrs else "no pod CIDR",
                ),
                tooltip=f"node {name}: netns {site.netns}",
                style="rounded,filled",
                fillcolor=_NODE_FILL,
                color="#888888",
                fontsize="12",
            )
            for pod in pods:
                self._pod(sub, pod)
            bridge = node_interface_id(name, POD_BRIDGE)
            self._box(
                sub,
                bridge,
                _text(POD_BRIDGE, *([bridge_gateway(c) for c in cidrs] or ["pod bridge"])),
                f"{name}: the pod bridge (every pod's veth is a port of it)",
            )
            self._box(
                sub,
                stack,
                _text("routing + kube-proxy", f"iptables-{t.backend}"),
                f"{name}: the node's own IP stack: routes, netfilter (kube-proxy's rules)",
                shape="oval",
                fillcolor="#fcfcfc",
            )
            for device in t.overlay_devices:
                vtep = _vtep(device, cidrs)
                self._box(
                    sub,
                    node_interface_id(name, device),
                    _text(device, vtep or "VTEP"),
                    f"{name}: the VXLAN device (VNI {VXLAN_VNI}, UDP {self.topology.tunnel_port})",
                )
            self._box(
                sub,
                eth0,
                _text("eth0", *_ips(site.ip, site.other_ip)),
                f"{name}: the underlay link, on switch port {switch_port('n', index, name)}",
            )
            drawn_here = {"eth0", POD_BRIDGE, *t.overlay_devices, "stack"}
            drawn_here.update(p.host_veth for p in pods if p.host_veth)
            extra = [i for i in self._extra(f"node/{name}/") if i not in drawn_here]
            for interface in extra:
                self._box(
                    sub, node_interface_id(name, interface), interface, f"{name}: {interface}"
                )
            # The notes of what netfilter did sit beside the stack that did it.
            with sub.subgraph() as row:
                row.attr(rank="same")
                row.node(stack)
                for leg in (REQUEST, REPLY):
                    notes = [
                        s
                        for s in self.steps
                        if not s.interface and s.target == stack and s.leg == leg
                    ]
                    if notes:
                        self._note(row, name, leg, notes)
        # The links: pod eth0 – veth (a veth pair), veth – cni0 (a bridge
        # port), and the interfaces the node's stack routes between.
        for pod in pods:
            if pod.host_veth is None:
                self.dot.edge(host_network_pod_id(pod.key), stack, style="dotted")
                continue
            veth = node_interface_id(name, pod.host_veth)
            self.dot.edge(pod_interface_id(pod.key), veth, tooltip="veth pair")
            self.dot.edge(veth, bridge, tooltip="bridge port")
        self.dot.edge(bridge, stack)
        for device in t.overlay_devices:
            # A VXLAN device between the stack and eth0: what it
            # encapsulates leaves through eth0.
            vxlan = node_interface_id(name, device)
            self.dot.edge(stack, vxlan)
            self.dot.edge(vxlan, eth0, style="dashed", tooltip="VXLAN over UDP")
        self.dot.edge(stack, eth0)
        for interface in extra:
            self.dot.edge(stack, node_interface_id(name, interface), style="dotted")

    def _pod(self, graph: graphviz.Digraph, pod: PodSite) -> None:
        label = pod.name if pod.key.startswith("default/") else pod.key
        with graph.subgraph(name=_cluster("pod", pod.key)) as sub:
            sub.attr(
                id=_cluster("pod", pod.key),
                label=_text(label, "hostNetwork") if pod.host_network else _text(label),
                tooltip=f"pod {pod.key}: netns {pod.netns}",
                style="rounded,filled",
                fillcolor=_POD_FILL,
                color="#c9b458",
                fontsize="10",
            )
            if pod.host_network:
                self._box(
                    sub,
                    host_network_pod_id(pod.key),
                    _text("node's network", *_ips(pod.ip, pod.other_ip)),
                    f"pod {pod.key} shares {pod.node}'s network namespace",
                    style="rounded,dashed,filled",
                )
                return
            self._box(
                sub,
                pod_interface_id(pod.key),
                _text("eth0", *_ips(pod.ip, pod.other_ip)),
                f"pod {pod.key}: eth0",
            )
            for interface in self._extra(f"pod/{pod.key}/"):
                if interface != "eth0":
                    self._box(
                        sub, pod_interface_id(pod.key, interface), interface, f"pod {pod.key}"
                    )
        if pod.host_veth is not None:
            # The host veth sits in the node's cluster, right under its pod.
            self._box(
                graph,
                node_interface_id(pod.node, pod.host_veth),
                pod.host_veth,
                f"{pod.node}: the host side of {pod.key}'s veth pair",
            )

    def _note(
        self, graph: graphviz.Digraph, node: str, leg: str, steps: Sequence[PathStep]
    ) -> None:
        ident = netfilter_note_id(node, leg)
        color = LEG_COLORS[leg]
        graph.node(
            ident,
            _text(*(f"{s.number}  {s.text}" for s in steps)),
            id=ident,
            tooltip=f"{node}: what netfilter did to the {leg}",
            shape="note",
            style="filled",
            fillcolor=LEG_FILLS[leg],
            color=color,
            fontcolor=color,
            **{"class": f"netfilter {leg}"},
        )
        self.drawn.add(ident)
        self.dot.edge(ident, stack_id(node), style="dotted", color=color, constraint="false")

    def _switch(self) -> None:
        t = self.topology
        bridge = switch_id(SWITCH_BRIDGE)
        lab = self.state.lab
        cidr = lab.spec.underlay_cidr if lab is not None else None
        node_ports = [switch_port("n", i, n) for i, n in enumerate(t.nodes)]
        client_ports = [switch_port("c", i, c) for i, c in enumerate(t.clients)]
        with self.dot.subgraph(name=_cluster("underlay")) as sub:
            sub.attr(
                id=_cluster("underlay"),
                label=_text("underlay switch", cidr) if cidr else "underlay switch",
                tooltip=f"the underlay switch: netns {t.underlay}",
                style="rounded,filled",
                fillcolor=_SWITCH_FILL,
                color="#8888aa",
                fontsize="12",
            )
            self._box(sub, bridge, SWITCH_BRIDGE, "the underlay bridge", shape="box")
            for port, name in zip(node_ports, t.nodes, strict=True):
                self._box(sub, switch_id(port), port, f"switch port of node {name}")
            for port, name in zip(client_ports, t.clients, strict=True):
                self._box(sub, switch_id(port), port, f"switch port of client {name}")
            known = {SWITCH_BRIDGE, *node_ports, *client_ports}
            extra = [i for i in self._extra("switch/") if i not in known]
            for interface in extra:
                self._box(sub, switch_id(interface), interface, "underlay switch")
        for port, name in zip(node_ports, t.nodes, strict=True):
            self.dot.edge(node_interface_id(name, "eth0"), switch_id(port), tooltip="veth pair")
            self.dot.edge(switch_id(port), bridge, tooltip="bridge port")
        for port in client_ports:
            self.dot.edge(bridge, switch_id(port), tooltip="bridge port")

    def _client(self, index: int, name: str) -> None:
        site = self.topology.clients[name]
        ident = client_interface_id(name)
        with self.dot.subgraph(name=_cluster("client", name)) as sub:
            sub.attr(
                id=_cluster("client", name),
                label=_text(name, "external client"),
                tooltip=f"external client {name}: netns {site.netns}",
                style="rounded,filled",
                fillcolor=_CLIENT_FILL,
                color="#7cb77f",
                fontsize="12",
            )
            self._box(
                sub, ident, _text("eth0", *_ips(site.ip, site.other_ip)), f"client {name}: eth0"
            )
            for interface in self._extra(f"client/{name}/"):
                if interface != "eth0":
                    self._box(sub, client_interface_id(name, interface), interface, name)
        self.dot.edge(switch_id(switch_port("c", index, name)), ident, tooltip="veth pair")

    def _tunnels(self) -> None:
        for index, device in enumerate(self.topology.overlay_devices):
            self._device_tunnels(device, "" if index == 0 else f"/{device}")

    def _device_tunnels(self, device: str, id_suffix: str) -> None:
        """The tunnels between every two nodes' `device`: `tunnel/<a>/<b>`
        for the first device, the second's (flannel-v6.1 on a dual-stack
        lab) with its name after."""
        for a, b in combinations(self.topology.nodes, 2):
            self.dot.edge(
                node_interface_id(a, device),
                node_interface_id(b, device),
                id=f"tunnel/{a}/{b}{id_suffix}",
                label=_text(f"VXLAN VNI {VXLAN_VNI}", f"UDP {self.topology.tunnel_port}"),
                style="dashed",
                color=_TUNNEL,
                fontcolor=_TUNNEL,
                dir="both",
                arrowhead="none",
                arrowtail="none",
                constraint="false",
                **{"class": "tunnel"},
            )

    def _path_edges(self) -> None:
        for leg in (REQUEST, REPLY):
            points = [s for s in self.steps if s.leg == leg and s.interface]
            color = LEG_COLORS[leg]
            for before, step in pairwise(points):
                if before.target not in self.drawn or step.target not in self.drawn:
                    continue
                # constraint=false: the path must not move the lab around.
                self.dot.edge(
                    before.target,
                    step.target,
                    id=path_edge_id(step.number),
                    label=str(step.number),
                    color=color,
                    fontcolor=color,
                    penwidth="2",
                    arrowhead="normal",
                    arrowsize="0.7",
                    constraint="false",
                    **{"class": f"path {leg}"},
                )


def _ips(primary: str, other: str) -> list[str]:
    """A site's addresses, one line each: the primary family's, then the
    other family's on a dual-stack lab."""
    return [ip for ip in (primary, other) if ip]


def _vtep(device: str, pod_cidrs: Sequence[str]) -> str | None:
    """The VTEP address of `device`: the network address of the node's pod
    CIDR of its family (flannel.1's IPv4, flannel-v6.1's IPv6)."""
    v6 = device == VXLAN_DEVICE_V6
    return next((overlay_address(c) for c in pod_cidrs if (":" in c) == v6), None)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _service_lines(svc: Service) -> list[str]:
    spec = svc.spec
    namespace, name = svc.metadata.namespace or "default", svc.metadata.name or ""
    kind = spec.type or "ClusterIP"
    lines = [name if namespace == "default" else f"{namespace}/{name}"]
    if kind == "ExternalName":
        lines += [kind, f"→ {spec.external_name}"]
    elif spec.cluster_ip == "None":
        lines.append("ClusterIP None (headless)")
    else:
        # A plain ClusterIP Service says so once: "ClusterIP 10.96.0.1".
        lines += [] if kind == "ClusterIP" else [kind]
        # Every clusterIP, primary first (a dual-stack Service has two).
        cluster_ips = spec.cluster_ips or ([spec.cluster_ip] if spec.cluster_ip else [])
        lines += [f"ClusterIP {ip}" for ip in cluster_ips] or ["ClusterIP"]
    lines += [f"LB {i.ip}" for i in svc.status.load_balancer.ingress if i.ip]
    lines += [f"externalIP {ip}" for ip in spec.external_ips]
    for port in spec.ports:
        text = f"{port.port}:{port.node_port}" if port.node_port else str(port.port)
        text += f"/{port.protocol}"
        if port.target_port is not None and port.target_port != port.port:
            text += f" → {port.target_port}"
        lines.append(text)
    if kind in ("NodePort", "LoadBalancer"):
        lines.append(f"ETP {spec.external_traffic_policy or 'Cluster'}")
    if spec.internal_traffic_policy == "Local":
        lines.append("ITP Local")
    return lines


def _endpoint_pods(
    state: ClusterState, topology: Topology
) -> Mapping[tuple[str, str], list[tuple[str, PodSite | None, bool]]]:
    """(namespace, Service) → its endpoints from the EndpointSlices: the
    address, the lab pod behind it (by targetRef, else by address) and
    whether it is ready."""
    found: dict[tuple[str, str], list[tuple[str, PodSite | None, bool]]] = {}
    for eps in state.endpoint_slices:
        namespace = eps.metadata.namespace or "default"
        service = (eps.metadata.labels or {}).get(SERVICE_NAME_LABEL)
        if not service:
            continue
        entries = found.setdefault((namespace, service), [])
        for endpoint in eps.endpoints:
            ref = endpoint.target_ref
            ready = endpoint.conditions.ready is not False
            for address in endpoint.addresses:
                pod: PodSite | None = None
                if ref is not None and ref.kind == "Pod" and ref.name:
                    pod = topology.pods.get(f"{ref.namespace or namespace}/{ref.name}")
                if pod is None:
                    pod = topology.pod_of_ip(address)
                if pod is not None and pod.node not in topology.nodes:
                    pod = None  # its node is not drawn, so neither is the pod
                if all(e[0] != address for e in entries):
                    entries.append((address, pod, ready))
    return found
