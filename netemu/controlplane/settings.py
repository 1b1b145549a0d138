"""Cluster-wide settings the controllers need (service CIDR, cluster DNS IP,
NodePort range, pod CIDR), read through the client from the `Lab` and the
`KubeProxyConfiguration`, with kubeadm's defaults when they are absent or
unreadable (validation reports bad values; the controllers just carry on)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from netemu.api.config import (
    DEFAULT_NODE_POD_PREFIX,
    DEFAULT_NODE_PORT_RANGE,
    DEFAULT_POD_CIDR,
    DEFAULT_SERVICE_CIDR,
    KubeProxyConfiguration,
    Lab,
    split_family_list,
)
from netemu.controlplane.client import Client

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_CLUSTER_DNS = "10.96.0.10"
_IPV6_NODE_POD_PREFIX = 64


@dataclass(frozen=True)
class ClusterSettings:
    service_cidr: IPNetwork  # the primary family's
    cluster_dns: IPAddress | None
    node_port_range: tuple[int, int]  # inclusive
    cluster_cidr: IPNetwork  # the pod CIDR that per-node podCIDRs are carved from
    node_cidr_prefix: int
    lab: Lab | None
    # Every family's, primary first (one entry on a single-stack cluster).
    service_cidrs: tuple[IPNetwork, ...] = ()
    cluster_cidrs: tuple[IPNetwork, ...] = ()

    @property
    def ip_family(self) -> str:
        """The primary family: that of --service-cluster-ip-range's first CIDR."""
        return family_of_network(self.service_cidr)

    @property
    def ip_families(self) -> list[str]:
        """The service IP families the cluster is configured for, primary first."""
        return [family_of_network(c) for c in self.service_cidrs or (self.service_cidr,)]

    def node_cidr_prefix_of(self, cidr: IPNetwork) -> int:
        """kube-controller-manager's --node-cidr-mask-size-ipv4/-ipv6 defaults."""
        wanted = DEFAULT_NODE_POD_PREFIX if cidr.version == 4 else _IPV6_NODE_POD_PREFIX
        return max(wanted, cidr.prefixlen)


def family_of_network(cidr: IPNetwork) -> str:
    return "IPv6" if cidr.version == 6 else "IPv4"


def read_settings(client: Client) -> ClusterSettings:
    labs = client.list(Lab).items
    lab = labs[0] if labs else None
    if lab is not None:
        service_cidrs = parse_networks(lab.spec.service_cidr, DEFAULT_SERVICE_CIDR)
        dns = parse_address(lab.spec.cluster_dns)
        port_range = parse_port_range(lab.spec.node_port_range)
        cluster_cidrs = parse_networks(lab.spec.pod_cidr, DEFAULT_POD_CIDR)
    else:
        service_cidrs = parse_networks(DEFAULT_SERVICE_CIDR, DEFAULT_SERVICE_CIDR)
        dns = parse_address(DEFAULT_CLUSTER_DNS)
        port_range = parse_port_range(DEFAULT_NODE_PORT_RANGE)
        cluster_cidrs = parse_networks(_proxy_cluster_cidr(client), DEFAULT_POD_CIDR)
    settings = ClusterSettings(
        service_cidr=service_cidrs[0],
        cluster_dns=dns,
        node_port_range=port_range,
        cluster_cidr=cluster_cidrs[0],
        node_cidr_prefix=0,
        lab=lab,
        service_cidrs=service_cidrs,
        cluster_cidrs=cluster_cidrs,
    )
    return replace(settings, node_cidr_prefix=settings.node_cidr_prefix_of(cluster_cidrs[0]))


def _proxy_cluster_cidr(client: Client) -> str:
    for config in client.list(KubeProxyConfiguration).items:
        # clusterCIDR may list one CIDR per family ("10.244.0.0/16,fd00::/56").
        if split_family_list(config.cluster_cidr):
            return config.cluster_cidr or ""
    return DEFAULT_POD_CIDR


def parse_networks(text: str | None, default: str) -> tuple[IPNetwork, ...]:
    """A comma-separated dual-stack CIDR list, at most one per family, the
    first kept as the primary (the default when nothing usable is left)."""
    found: list[IPNetwork] = []
    for part in split_family_list(text):
        try:
            net = ipaddress.ip_network(part, strict=False)
        except ValueError:
            continue
        if all(net.version != seen.version for seen in found):
            found.append(net)
    return tuple(found) or (ipaddress.ip_network(default),)


def parse_network(text: str | None, default: str) -> IPNetwork:
    try:
        return ipaddress.ip_network((text or default).strip(), strict=False)
    except ValueError:
        return ipaddress.ip_network(default)


def parse_address(text: str | None) -> IPAddress | None:
    try:
        return ipaddress.ip_address((text or "").strip())
    except ValueError:
        return None


def parse_port_range(text: str | None) -> tuple[int, int]:
    """net.ParsePortRange: "30000-32767", "30000+2767" or a single port."""
    raw = (text or "").strip()
    try:
        if "-" in raw:
            low, high = (int(p) for p in raw.split("-", 1))
        elif "+" in raw:
            base, extra = (int(p) for p in raw.split("+", 1))
            low, high = base, base + extra
        else:
            low = high = int(raw)
    except ValueError:
        return parse_port_range(DEFAULT_NODE_PORT_RANGE)
    if not 0 < low <= high <= 65535:
        return parse_port_range(DEFAULT_NODE_PORT_RANGE)
    return low, high
