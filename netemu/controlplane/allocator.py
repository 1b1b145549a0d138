"""ClusterIP, NodePort and healthCheckNodePort allocation (the service
registry's allocators in the API server).

Explicit values are always honoured and reserved first. A Service without a
clusterIP gets one from the service CIDR, never the network address or the
IPv4 broadcast address, never the cluster DNS IP (which the DNS
Service in kube-system requests explicitly), and never the first address
(the `default/kubernetes` Service's, netemu.controlplane.addons). Like Kubernetes (the
ServiceIPStaticSubrange and ServiceNodePortStaticSubrange behaviour), dynamic
allocation prefers the upper part of each range and leaves the lower band
`min(max(16, size/16), 256)` IPs, `min(max(16, size/32), 128)` ports to
explicit requests, falling back to the lower band when the upper is full.

Kubernetes picks a random free value; netemu picks the value at
hash(namespace/name[/port]) within the band and probes linearly, so the
result is deterministic and does not move when unrelated Services are added.
Ports of one Service with the same port number (TCP and UDP 53, say) share
one nodePort, as in initNodePorts.

On a dual-stack cluster each service CIDR has its own range, and a Service
gets one clusterIP per entry of spec.ipFamilies, in that order
(allocClusterIPs); its nodePorts serve both families.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from netemu.api.core import Service, ServicePort
from netemu.controlplane.client import Client
from netemu.controlplane.common import write
from netemu.controlplane.names import stable_hash
from netemu.controlplane.settings import ClusterSettings, IPNetwork, read_settings

_MAX_IPV6_RANGE = 1 << 16  # bitmap size limit for IPv6 service CIDRs


class ServiceAllocatorController:
    """Allocates clusterIPs, nodePorts and healthCheckNodePorts."""

    name = "service-allocator"

    def __init__(self, client: Client) -> None:
        self.client = client
        # The Services and settings of the last pass, when it allocated
        # nothing: the same list (the store hands out one tuple per kind
        # until a Service is written) with the same settings allocates
        # nothing again, and reserving every Service's addresses to find
        # that out took a good part of a change at 5,000 Services.
        self._settled: tuple[Sequence[Service], ClusterSettings] | None = None

    def reconcile(self) -> bool:
        settings = read_settings(self.client)
        services = self.client.list(Service).items
        settled = self._settled
        if settled is not None and settled[0] is services and settled[1] == settings:
            return False
        self._settled = None
        ips = FamilyRanges(settings.service_cidrs or (settings.service_cidr,))
        ports = PortRange(*settings.node_port_range)
        for svc in services:
            for ip in svc.spec.cluster_ips or [svc.spec.cluster_ip or ""]:
                ips.reserve(ip)
            for port in svc.spec.ports:
                if port.node_port:
                    ports.reserve(port.node_port)
            if svc.spec.health_check_node_port:
                ports.reserve(svc.spec.health_check_node_port)
        if settings.cluster_dns is not None:
            ips.reserve(str(settings.cluster_dns))
        # The first address is the API server's own Service's (default/kubernetes,
        # which a live lab adds): the allocator never hands it out.
        ips.reserve(str(settings.service_cidr.network_address + 1))

        changed = False
        for svc in services:
            new = allocate(svc, ips, ports, settings)
            changed |= write(self.client, svc, new)
        if not changed:
            self._settled = (services, settings)
        return changed


def allocate(
    svc: Service, ips: FamilyRanges, ports: PortRange, settings: ClusterSettings
) -> Service:
    spec = svc.spec
    if spec.type is None or spec.type == "ExternalName":
        # Not defaulted yet, or needs nothing allocated.
        return svc
    key = f"{svc.metadata.namespace}/{svc.metadata.name}"
    update: dict[str, Any] = {}

    given = spec.cluster_ips or ([spec.cluster_ip] if spec.cluster_ip else [])
    cluster_ips = _allocate_cluster_ips(given, list(spec.ip_families), ips, key, settings)
    if cluster_ips != given:
        update["cluster_ips"] = cluster_ips
        update["cluster_ip"] = cluster_ips[0]

    if spec.type in ("NodePort", "LoadBalancer"):
        new_ports = _allocate_node_ports(svc, ports, key)
        if new_ports != spec.ports:
            update["ports"] = new_ports

    if (
        spec.type == "LoadBalancer"
        and spec.external_traffic_policy == "Local"
        and not spec.health_check_node_port
    ):
        hc = ports.allocate(f"{key}:healthCheckNodePort")
        if hc is not None:
            update["health_check_node_port"] = hc

    if not update:
        return svc
    return svc.model_copy(update={"spec": spec.model_copy(update=update)})


def _allocate_cluster_ips(
    current: list[str],
    families: list[str],
    ranges: FamilyRanges,
    key: str,
    settings: ClusterSettings,
) -> list[str]:
    """allocClusterIPs: one IP per family of spec.ipFamilies, in that order,
    keeping those given; headless Services get none. Before defaulting has
    settled the families, the cluster's primary family stands in."""
    if current and current[0] == "None":
        return current
    out = list(current)
    wanted = families or [settings.ip_family]
    for i, family in enumerate(wanted):
        if i < len(out):
            continue
        ip = ranges.allocate(family, key if i == 0 else f"{key}:{family}")
        if ip is None:
            break  # that family is not configured, or its range is full
        out.append(ip)
    return out


def _allocate_node_ports(svc: Service, ports: PortRange, key: str) -> list[ServicePort]:
    spec = svc.spec
    allocate_new = spec.type == "NodePort" or spec.allocate_load_balancer_node_ports is not False
    by_port_number: dict[int, int] = {}
    for port in spec.ports:
        if port.node_port:
            by_port_number.setdefault(port.port, port.node_port)
    out = []
    for port in spec.ports:
        if port.node_port or not allocate_new:
            out.append(port)
            continue
        node_port = by_port_number.get(port.port)
        if node_port is None:
            node_port = ports.allocate(f"{key}:{port.port}")
            if node_port is None:
                out.append(port)
                continue
            by_port_number[port.port] = node_port
        out.append(port.model_copy(update={"node_port": node_port}))
    return out


def _pick(key: str, size: int, offset: int, taken: Callable[[int], bool]) -> int | None:
    """Index in [0, size): hash into the dynamic band [offset, size) and probe
    linearly, then the same in the static band [0, offset)."""
    for low, high in ((offset, size), (0, offset)):
        span = high - low
        if span <= 0:
            continue
        start = stable_hash(key) % span
        for step in range(span):
            index = low + (start + step) % span
            if not taken(index):
                return index
    return None


class IPRange:
    """The allocatable addresses of a service CIDR: base = network + 1."""

    def __init__(self, cidr: IPNetwork) -> None:
        self.cidr = cidr
        self.base = int(cidr.network_address) + 1
        if cidr.version == 4:
            self.size = max(cidr.num_addresses - 2, 0)  # no network, no broadcast
        else:
            self.size = min(max(cidr.num_addresses - 1, 0), _MAX_IPV6_RANGE)
        # calculateRangeOffset in pkg/registry/core/service/ipallocator.
        range_size = cidr.num_addresses
        self.offset = 0 if range_size <= 16 else min(max(16, range_size // 16), 256)
        self.offset = min(self.offset, self.size)
        self.used: set[int] = set()

    def reserve(self, text: str) -> None:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            return  # "None", "" or garbage: nothing to reserve
        if addr.version == self.cidr.version:
            self.used.add(int(addr) - self.base)

    def allocate(self, key: str) -> str | None:
        index = _pick(key, self.size, self.offset, self.used.__contains__)
        if index is None:
            return None
        self.used.add(index)
        return str(ipaddress.ip_address(self.base + index))


class FamilyRanges:
    """One IPRange per configured service CIDR, by family."""

    def __init__(self, cidrs: tuple[IPNetwork, ...]) -> None:
        self.by_family = {f"IPv{c.version}": IPRange(c) for c in cidrs}

    def reserve(self, text: str) -> None:
        for ips in self.by_family.values():
            ips.reserve(text)

    def allocate(self, family: str, key: str) -> str | None:
        ips = self.by_family.get(family)
        return ips.allocate(key) if ips is not None else None


class PortRange:
    """A NodePort range, both ends inclusive."""

    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.size = high - low + 1
        # calculateRangeOffset in pkg/registry/core/service/portallocator.
        self.offset = 0 if self.size <= 16 else min(max(16, self.size // 32), 128)
        self.used: set[int] = set()

    def reserve(self, port: int) -> None:
        self.used.add(port - self.low)

    def allocate(self, key: str) -> int | None:
        index = _pick(key, self.size, self.offset, self.used.__contains__)
        if index is None:
            return None
        self.used.add(index)
        return self.low + index
