"""Where everything of a lab lives, as the tracer needs it: each node's,
client's and pod's namespace and addresses. Built from a live lab's info
file or, for offline traces, from the pure network plan: both give the
same names and addresses, so a flow resolves the same way with or without
a lab.

Each site's `ip` is its address of its primary family, as Kubernetes
orders them: a pod's status.podIP (the API's PodStatus says podIPs[0]
must match it: staging/src/k8s.io/api/core/v1/types.go), a node's first
InternalIP (the Lab's underlayIP, as the kubelet's --node-ip lists a
dual-stack pair, primary first: KEP-3705), an external client's first ip.
`other_ip` is its address of the other family on a dual-stack lab. The
datapath (netemu.net.plan) builds a dual-stack lab's IPv4 side as its base
whichever family is first; the topology reads the family order, not the
base.

Pure data; must not touch the kernel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from netemu.api.config import Lab
from netemu.api.ipfamilies import family_of
from netemu.controlplane.state import ClusterState
from netemu.net.cloudlb import PROXY, frontends
from netemu.net.plan import (
    VXLAN_DEVICE,
    VXLAN_DEVICE_V6,
    VXLAN_PORT,
    ClientPlan,
    LabPlan,
    NodeIPv6,
    NodePlan,
    PodPlan,
    host_veth,
    pod_netns,
)
from netemu.pipeline import proxy_mode

UNRECORDED_VXLAN_PORT = 4789


def node_ipv6_addresses(ipv6: NodeIPv6, overlay: str) -> list[str]:
    """A dual-stack node's IPv6 addresses, underlay first: cni0's and, with
    vxlan, flannel-v6.1's."""
    return [ipv6.underlay_ip, ipv6.bridge_ip, *([ipv6.vtep_ip] if overlay == "vxlan" else [])]


def primary_first(ips: Iterable[str], primary: str) -> tuple[str, ...]:
    """A site's addresses (one per family, "" for none) with the one of
    `primary`'s family first."""
    present = [ip for ip in ips if ip]
    return tuple(sorted(present, key=lambda ip: family_of(ip) != family_of(primary)))


def vxlan_devices(base_ip: str, dual_stack: bool) -> tuple[str, ...]:
    """The VXLAN devices of a node whose datapath base address is `base_ip`
    (IPv6 on an IPv6-only node, IPv4 otherwise): flannel runs flannel.1 for
    IPv4 and flannel-v6.1 for IPv6, the latter alone on an IPv6-only node
    (pkg/backend/vxlan, as netemu.net.plan builds them)."""
    if ":" in base_ip:
        return (VXLAN_DEVICE_V6,)
    return (VXLAN_DEVICE, VXLAN_DEVICE_V6) if dual_stack else (VXLAN_DEVICE,)


def _of_family(family: str, *ips: str) -> str:
    return next((ip for ip in ips if ip and family_of(ip) == family), "")


@dataclass(frozen=True)
class NodeSite:
    name: str
    netns: str
    ip: str  # its underlay address of its primary family
    addresses: tuple[str, ...]  # every address on the node, underlay first
    other_ip: str = ""  # its underlay address of the other family on a dual-stack lab

    def address(self, family: str) -> str:
        """Its underlay address of `family` ("IPv4" or "IPv6"), "" if none."""
        return _of_family(family, self.ip, self.other_ip)


@dataclass(frozen=True)
class ClientSite:
    name: str
    netns: str
    ip: str  # of its primary family
    other_ip: str = ""  # of the other family on a dual-stack lab

    def address(self, family: str) -> str:
        return _of_family(family, self.ip, self.other_ip)

    def has_ip(self, ip: str) -> bool:
        return bool(ip) and ip in (self.ip, self.other_ip)


@dataclass(frozen=True)
class LoadBalancerSite:
    """The lab's emulated cloud load balancer (netemu.node.cloudlb)."""

    netns: str
    ip: str  # its own underlay address
    proxy_ips: tuple[str, ...] = ()  # ipMode Proxy ingress IPs: its own too
    ip6: str = ""  # its IPv6 underlay address on a dual-stack lab

    def address(self, family: str) -> str:
        """Its underlay address of `family` ("IPv4" or "IPv6"), "" if none."""
        return _of_family(family, self.ip, self.ip6)


@dataclass(frozen=True)
class PodSite:
    key: str  # namespace/name
    netns: str
    ip: str  # status.podIP: of the primary family (a hostNetwork pod's: its node's)
    node: str
    host_network: bool
    other_ip: str = ""  # of the other family on a dual-stack lab

    def address(self, family: str) -> str:
        return _of_family(family, self.ip, self.other_ip)

    def has_ip(self, ip: str) -> bool:
        return bool(ip) and ip in (self.ip, self.other_ip)

    @property
    def name(self) -> str:
        return self.key.split("/", 1)[1]

    @property
    def host_veth(self) -> str | None:
        """The node-side end of the pod's veth pair (none for hostNetwork)."""
        namespace, name = self.key.split("/", 1)
        return None if self.host_network else host_veth(namespace, name)


@dataclass(frozen=True)
class Topology:
    lab: str
    backend: str  # "nft" or "legacy"
    overlay: str  # "vxlan" or "host-gw"
    underlay: str  # the underlay switch's namespace
    nodes: Mapping[str, NodeSite]
    clients: Mapping[str, ClientSite]
    pods: Mapping[str, PodSite]
    # The UDP port of the lab's VXLAN overlay (flannel.1's dstport).
    tunnel_port: int = VXLAN_PORT
    load_balancer: LoadBalancerSite | None = None
    proxy_mode: str = "iptables"  # kube-proxy's: "iptables" or "nftables"
    # Each node's VXLAN devices with the vxlan overlay (vxlan_devices), the
    # base family's first.
    vxlan_device_names: tuple[str, ...] = (VXLAN_DEVICE,)

    @property
    def overlay_devices(self) -> tuple[str, ...]:
        """The VXLAN devices on each node; none with host-gw."""
        return self.vxlan_device_names if self.overlay == "vxlan" else ()

    @property
    def vxlan_port(self) -> int | None:
        """The port whose UDP is the overlay's (None without VXLAN): only it
        is decoded as VXLAN, so a Service's own UDP on 4789 or 8472 is not."""
        return self.tunnel_port if self.overlay == "vxlan" else None

    @property
    def announcing_node(self) -> str | None:
        """The node external clients reach external IPs through
        (net.plan.client_routes: the lab's first node); LoadBalancer ingress
        IPs go through the load balancer, which picks a node per flow."""
        return next(iter(self.nodes), None)

    def node_of_ip(self, ip: str) -> str | None:
        for node in self.nodes.values():
            if ip in node.addresses:
                return node.name
        return None

    def pod_of_ip(self, ip: str) -> PodSite | None:
        found = [p for p in self.pods.values() if p.has_ip(ip) and not p.host_network]
        return found[0] if len(found) == 1 else None

    def pod_behind(self, node: str, interface: str) -> PodSite | None:
        """The pod whose veth is `interface` on `node`."""
        for pod in self.pods.values():
            if pod.node == node and pod.host_veth == interface:
                return pod
        return None

    def owner_of_netns(self, netns: str) -> tuple[str, str, str | None]:
        """(kind, name, node) of a namespace: kind is node, client, pod or underlay."""
        for node in self.nodes.values():
            if node.netns == netns:
                return "node", node.name, node.name
        for client in self.clients.values():
            if client.netns == netns:
                return "client", client.name, None
        for pod in self.pods.values():
            if pod.netns == netns and not pod.host_network:
                return "pod", pod.key, pod.node
        if self.load_balancer is not None and self.load_balancer.netns == netns:
            return "loadbalancer", "lb", None
        return "underlay", "switch", None

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> Topology:
        """From a live lab's lab.json (written by the supervisor)."""
        lb = info.get("loadBalancer")
        first = next(iter(info["nodes"].values()), None)
        return cls(
            lab=str(info["name"]),
            backend="legacy" if info["backend"] == "legacy" else "nft",
            overlay=str(info["overlay"]),
            underlay=str(info["underlay"]),
            # A lab.json without the port is from a netemu that always
            # tunnelled on IANA's 4789.
            tunnel_port=int(info.get("vxlanPort", UNRECORDED_VXLAN_PORT)),
            nodes={
                name: NodeSite(
                    name,
                    n["netns"],
                    _recorded_ips(n)[0],
                    tuple(n.get("addresses") or (n["ip"],)),
                    _recorded_ips(n)[1],
                )
                for name, n in info["nodes"].items()
            },
            clients={
                name: ClientSite(name, c["netns"], *_recorded_ips(c))
                for name, c in info["clients"].items()
            },
            pods={
                key: PodSite(
                    key,
                    p["netns"],
                    _recorded_ips(p)[0],
                    p["node"],
                    bool(p["hostNetwork"]),
                    _recorded_ips(p)[1],
                )
                for key, p in info["pods"].items()
            },
            load_balancer=LoadBalancerSite(
                str(lb["netns"]),
                str(lb["ip"]),
                tuple(lb.get("proxyIPs", ())),
                str(lb.get("ip6", "")),
            )
            if lb
            else None,
            # A lab.json without the mode is from a netemu with iptables mode only.
            proxy_mode=str(info.get("proxyMode", "iptables")),
            vxlan_device_names=(
                vxlan_devices(str(first["ip"]), bool(_recorded_ips(first)[1]))
                if first is not None
                else (VXLAN_DEVICE,)
            ),
        )

    @classmethod
    def from_plan(cls, plan: LabPlan, state: ClusterState, backend: str) -> Topology:
        """What a lab built from `plan` would have: every scheduled pod with an address."""
        lab = state.lab
        nodes = {n.name: node_site(n, lab) for n in plan.nodes}
        pods: dict[str, PodSite] = {}
        for pod in state.pods:
            meta, spec = pod.metadata, pod.spec
            node = spec.node_name if spec else None
            if node is None or node not in nodes:
                continue
            namespace, name = meta.namespace or "default", meta.name or ""
            host_network = bool(spec and spec.host_network)
            status = pod.status
            ips: tuple[str, ...]
            if host_network:
                # The node's own addresses: it runs in the node's namespace.
                ips = (nodes[node].ip, nodes[node].other_ip)
            elif status is not None and status.pod_ip:
                ips = primary_first((p.ip for p in status.pod_ips), status.pod_ip)
                ips = ips or (status.pod_ip,)
            else:
                continue
            netns = nodes[node].netns if host_network else pod_netns(plan.name, namespace, name)
            pods[f"{namespace}/{name}"] = PodSite(
                f"{namespace}/{name}", netns, ips[0], node, host_network, _second(ips)
            )
        first = plan.nodes[0] if plan.nodes else None
        return cls(
            lab=plan.name,
            backend="legacy" if backend == "legacy" else "nft",
            proxy_mode=proxy_mode(state),
            overlay=first.overlay if first else "vxlan",
            tunnel_port=first.vxlan_port if first else VXLAN_PORT,
            underlay=plan.underlay.netns,
            nodes=nodes,
            clients={c.name: client_site(c, lab) for c in plan.clients},
            pods=dict(sorted(pods.items())),
            load_balancer=LoadBalancerSite(
                plan.load_balancer.netns,
                plan.load_balancer.ip,
                tuple(ip for f in frontends(state.services) if f.ip_mode == PROXY for ip in f.ips),
                plan.load_balancer.ip6,
            ),
            vxlan_device_names=(
                vxlan_devices(first.underlay_ip, first.ipv6 is not None)
                if first
                else (VXLAN_DEVICE,)
            ),
        )


def _second(ips: tuple[str, ...]) -> str:
    return ips[1] if len(ips) > 1 else ""


def _recorded_ips(site: Mapping[str, Any]) -> tuple[str, str]:
    """A lab.json site's (primary, other) addresses: its `ips`, primary
    first; a lab.json without them is from a netemu that recorded the
    datapath's base address as `ip` and the IPv6 side's as `ip6`."""
    ips = [str(ip) for ip in site.get("ips") or (site["ip"], site.get("ip6", "")) if ip]
    return (ips[0], ips[1] if len(ips) > 1 else "")


def node_site(node: NodePlan, lab: Lab | None) -> NodeSite:
    """Where the planned `node` lives, its primary underlay address first as
    the Lab lists its underlayIP (the kubelet's --node-ip)."""
    ips = primary_first(
        (node.underlay_ip, node.ipv6.underlay_ip if node.ipv6 else ""),
        next((n.underlay_ips[0] for n in lab.spec.nodes if n.name == node.name), "")
        if lab is not None
        else "",
    )
    addresses = (
        node.underlay_ip,
        node.bridge_ip,
        *((node.vtep_ip,) if node.overlay == "vxlan" else ()),
        # A dual-stack node's IPv6 ones, underlay first.
        *(node_ipv6_addresses(node.ipv6, node.overlay) if node.ipv6 else ()),
    )
    return NodeSite(node.name, node.netns, ips[0], addresses, _second(ips))


def pod_ips(pod: PodPlan, node: NodeSite) -> tuple[str, ...]:
    """The planned pod's addresses as status.podIPs lists them, primary
    first; a hostNetwork pod's are its node's."""
    if pod.host_network:
        return tuple(ip for ip in (node.ip, node.other_ip) if ip)
    return primary_first((pod.ip, pod.ip6), pod.status_ip)


def client_site(client: ClientPlan, lab: Lab | None) -> ClientSite:
    """Where the planned external `client` lives, its addresses in the Lab's order."""
    ips = primary_first(
        (client.ip, client.ip6),
        next((c.ips[0] for c in lab.spec.external_clients if c.name == client.name), "")
        if lab is not None
        else "",
    )
    return ClientSite(client.name, client.netns, ips[0], _second(ips))
