"""Where everything of a lab lives, as the tracer needs it: each node's,
client's and pod's namespace and addresses. Built from a live lab's info
file or, for offline traces, from the pure network plan: both give the
same names, so a flow resolves the same way with or without a lab.

Pure data; must not touch the kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netemu.controlplane.state import ClusterState
from netemu.net.cloudlb import PROXY, frontends
from netemu.net.plan import VXLAN_DEVICE, VXLAN_PORT, LabPlan, NodeIPv6, host_veth, pod_netns

UNRECORDED_VXLAN_PORT = 4789


def node_ipv6_addresses(ipv6: NodeIPv6, overlay: str) -> list[str]:
    """A dual-stack node's IPv6 addresses, underlay first: cni0's and, with
    vxlan, flannel-v6.1's."""
    return [ipv6.underlay_ip, ipv6.bridge_ip, *([ipv6.vtep_ip] if overlay == "vxlan" else [])]


@dataclass(frozen=True)
class NodeSite:
    name: str
    netns: str
    ip: str  # the underlay address
    addresses: tuple[str, ...]  # every address on the node, underlay first
    ip6: str = ""  # its IPv6 underlay address on a dual-stack lab


@dataclass(frozen=True)
class ClientSite:
    name: str
    netns: str
    ip: str
    ip6: str = ""  # its IPv6 address on a dual-stack lab


@dataclass(frozen=True)
class LoadBalancerSite:
    """The lab's emulated cloud load balancer (netemu.node.cloudlb)."""

    netns: str
    ip: str  # its own underlay address
    proxy_ips: tuple[str, ...] = ()  # ipMode Proxy ingress IPs: its own too
    ip6: str = ""  # its IPv6 underlay address on a dual-stack lab


@dataclass(frozen=True)
class PodSite:
    key: str  # namespace/name
    netns: str
    ip: str
    node: str
    host_network: bool
    ip6: str = ""  # its IPv6 address on a dual-stack lab

    def has_ip(self, ip: str) -> bool:
        return ip in (self.ip, self.ip6)

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

    @property
    def overlay_device(self) -> str | None:
        return VXLAN_DEVICE if self.overlay == "vxlan" else None

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
                    n["ip"],
                    tuple(n.get("addresses") or (n["ip"],)),
                    str(n.get("ip6", "")),
                )
                for name, n in info["nodes"].items()
            },
            clients={
                name: ClientSite(name, c["netns"], c["ip"], str(c.get("ip6", "")))
                for name, c in info["clients"].items()
            },
            pods={
                key: PodSite(
                    key,
                    p["netns"],
                    p["ip"],
                    p["node"],
                    bool(p["hostNetwork"]),
                    str(p.get("ip6", "")),
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
        )

    @classmethod
    def from_plan(cls, plan: LabPlan, state: ClusterState, backend: str) -> Topology:
        """What a lab built from `plan` would have: every scheduled pod with an address."""
        nodes = {
            n.name: NodeSite(
                n.name,
                n.netns,
                n.underlay_ip,
                (
                    n.underlay_ip,
                    n.bridge_ip,
                    *((n.vtep_ip,) if n.overlay == "vxlan" else ()),
                    *(node_ipv6_addresses(n.ipv6, n.overlay) if n.ipv6 else ()),
                ),
                n.ipv6.underlay_ip if n.ipv6 else "",
            )
            for n in plan.nodes
        }
        pods: dict[str, PodSite] = {}
        for pod in state.pods:
            meta, spec = pod.metadata, pod.spec
            node = spec.node_name if spec else None
            if node is None or node not in nodes:
                continue
            namespace, name = meta.namespace or "default", meta.name or ""
            host_network = bool(spec and spec.host_network)
            ip = nodes[node].ip if host_network else (pod.status.pod_ip if pod.status else None)
            if not ip:
                continue
            netns = nodes[node].netns if host_network else pod_netns(plan.name, namespace, name)
            ip6 = next(
                (p.ip for p in (pod.status.pod_ips if pod.status else []) if ":" in p.ip), ""
            )
            pods[f"{namespace}/{name}"] = PodSite(
                f"{namespace}/{name}", netns, ip, node, host_network, "" if host_network else ip6
            )
        return cls(
            lab=plan.name,
            backend="legacy" if backend == "legacy" else "nft",
            overlay=plan.nodes[0].overlay if plan.nodes else "vxlan",
            tunnel_port=plan.nodes[0].vxlan_port if plan.nodes else VXLAN_PORT,
            underlay=plan.underlay.netns,
            nodes=nodes,
            clients={c.name: ClientSite(c.name, c.netns, c.ip, c.ip6) for c in plan.clients},
            pods=dict(sorted(pods.items())),
            load_balancer=LoadBalancerSite(
                plan.load_balancer.netns,
                plan.load_balancer.ip,
                tuple(ip for f in frontends(state.services) if f.ip_mode == PROXY for ip in f.ips),
                plan.load_balancer.ip6,
            ),
        )
