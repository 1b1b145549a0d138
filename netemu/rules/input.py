"""What kube-proxy sees: service ports, endpoints and its own configuration.

This mirrors kube-proxy's service/endpoint caches (pkg/proxy/serviceport.go,
endpointslicecache.go, topology.go): the compiler works on these small,
immutable records, never on API objects directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import netaddr

from netemu.api.config import (
    DEFAULT_AFFINITY_TIMEOUT,
    DEFAULT_MASQUERADE_BIT,
    DEFAULT_SERVICE_CIDR,
    KubeProxyConfiguration,
    Lab,
)
from netemu.api.core import SERVICE_NAME_LABEL, EndpointSlice, Node, Service
from netemu.api.ipfamilies import family_of as address_family

# kube-proxy's informers list Services and EndpointSlices with the label
# selector "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
# (cmd/kube-proxy/app/server.go, ProxyServer.Run): an object carrying either
# label, whatever its value, is never seen, so it gets no rules. The first
# hands a Service to another proxy implementation; the second is what the
# EndpointSlice controller puts on the slices of headless Services.
SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
HEADLESS_LABEL = "service.kubernetes.io/headless"
UNWATCHED_LABELS = (SERVICE_PROXY_NAME_LABEL, HEADLESS_LABEL)


def watched(labels: dict[str, str]) -> bool:
    """Whether kube-proxy's informers see an object with these labels."""
    return not any(label in labels for label in UNWATCHED_LABELS)


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    ip: str
    port: int
    ready: bool
    serving: bool
    terminating: bool
    node_name: str | None

    @property
    def text(self) -> str:
        """`ip:port`, `[ip6]:port` for IPv6 (kube-proxy's endpoint string)."""
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServicePortInfo:
    namespace: str
    name: str
    port_name: str
    protocol: str  # lower case, as it appears in rules
    cluster_ip: str
    port: int
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    load_balancer_vips: tuple[str, ...] = ()
    load_balancer_source_ranges: tuple[str, ...] = ()
    affinity_timeout: int | None = None  # set for sessionAffinity ClientIP
    internal_local: bool = False
    external_local: bool = False
    health_check_node_port: int = 0

    @property
    def name_string(self) -> str:
        """`ns/name` or `ns/name:port` (kube-proxy's ServicePortName.String())."""
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port_name}" if self.port_name else base

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.load_balancer_vips or self.external_ips)

    @property
    def uses_cluster_endpoints(self) -> bool:
        # Even with a Local external policy, Cluster endpoints serve the
        # short-circuit for pod and host traffic (pkg/proxy/serviceport.go).
        return not self.internal_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_local or (self.external_local and self.externally_accessible)


@dataclass(frozen=True)
class ProxyConfig:
    """The per-node settings of one kube-proxy."""

    node_name: str
    # kube-proxy runs one proxier per IP family (a dual-stack node has two);
    # this one programs only this family's addresses (iptables or ip6tables,
    # table `ip kube-proxy` or `ip6 kube-proxy`).
    ip_family: Literal["IPv4", "IPv6"] = "IPv4"
    node_ips: tuple[str, ...] = ()  # the node's primary IPs (InternalIP)
    local_ips: tuple[str, ...] = ()  # every address on the node (nodePortAddresses)
    cluster_cidr: str | None = None
    detect_local_mode: str = "ClusterCIDR"  # or NodeCIDR
    node_pod_cidr: str | None = None
    masquerade_all: bool = False
    masquerade_bit: int = DEFAULT_MASQUERADE_BIT
    localhost_node_ports: bool = True
    node_port_addresses: tuple[str, ...] = ()
    tcp_be_liberal: bool = False
    random_fully: bool = True
    # A current kernel and kube-proxy count localhost NodePort and INVALID drops
    # with nfacct objects; those rules carry `-m nfacct` then.
    nfacct: bool = True
    # The cluster's ServiceCIDRs (kube-proxy watches the ServiceCIDR objects;
    # the apiserver's default one holds --service-cluster-ip-range). The
    # nftables proxier drops traffic to unallocated addresses in them.
    service_cidrs: tuple[str, ...] = ()

    @property
    def local_traffic_cidr(self) -> str | None:
        """The `-s CIDR` kube-proxy's local-traffic detector uses, if any."""
        if self.detect_local_mode == "NodeCIDR":
            return self.node_pod_cidr
        return self.cluster_cidr


@dataclass(frozen=True)
class ProxyInput:
    config: ProxyConfig
    service_ports: tuple[ServicePortInfo, ...] = ()
    endpoints: dict[tuple[str, str, str, str], tuple[EndpointInfo, ...]] = field(
        default_factory=dict
    )  # (namespace, service, port name, protocol) → endpoints sorted by text

    def endpoints_of(self, sp: ServicePortInfo) -> tuple[EndpointInfo, ...]:
        return self.endpoints.get((sp.namespace, sp.name, sp.port_name, sp.protocol), ())


IPFamily = Literal["IPv4", "IPv6"]


def family_of(text: str) -> IPFamily | None:
    """The family of an address or of a CIDR's address; None if neither."""
    return address_family(text.split("/")[0].strip())


def cluster_ip_of_family(spec_cluster_ip: str, cluster_ips: Sequence[str], family: str) -> str:
    """GetClusterIPByFamily (pkg/proxy/util): the Service's clusterIP of the
    family kube-proxy's proxier serves, "" if it has none."""
    for ip in cluster_ips or [spec_cluster_ip]:
        if family_of(ip) == family:
            return ip
    return ""


def service_ports(services: Iterable[Service], family: IPFamily = "IPv4") -> list[ServicePortInfo]:
    """Service ports one family's kube-proxy proxier programs: not headless,
    not ExternalName, with a clusterIP of `family`, not labelled away from
    kube-proxy (UNWATCHED_LABELS). externalIPs, load-balancer ingress IPs and
    loadBalancerSourceRanges of the other family are left out, as
    newBaseServiceInfo filters them (pkg/proxy/serviceport.go).

    Sorted by service port name and protocol so that output is deterministic
    (kube-proxy itself walks a Go map, in no fixed order).
    """
    result: list[ServicePortInfo] = []
    for svc in services:
        if not watched(svc.metadata.labels):
            continue
        spec = svc.spec
        if spec.type == "ExternalName" or (spec.cluster_ip or "") in ("", "None"):
            continue
        cluster_ip = cluster_ip_of_family(spec.cluster_ip or "", spec.cluster_ips, family)
        if not cluster_ip:
            continue
        external_local = spec.external_traffic_policy == "Local" and spec.type in (
            "NodePort",
            "LoadBalancer",
        )
        affinity = None
        if spec.session_affinity == "ClientIP":
            cfg = spec.session_affinity_config
            timeout = cfg.client_ip.timeout_seconds if cfg and cfg.client_ip else None
            affinity = timeout or DEFAULT_AFFINITY_TIMEOUT
        # Only VIP-mode ingress points are programmed: kube-proxy takes a
        # Service's LoadBalancerVIPs only from ingress whose ipMode is unset or
        # VIP (pkg/proxy/serviceport.go with util.IsVIPMode, since 1.30); with
        # ipMode Proxy the load balancer itself connects to the node.
        vips = tuple(
            ing.ip
            for ing in svc.status.load_balancer.ingress
            if ing.ip and ing.ip_mode in (None, "VIP") and family_of(ing.ip) == family
        )
        if spec.type != "LoadBalancer":
            vips = ()
        for port in spec.ports:
            node_port = port.node_port or 0
            if spec.type not in ("NodePort", "LoadBalancer"):
                node_port = 0
            result.append(
                ServicePortInfo(
                    namespace=svc.metadata.namespace or "default",
                    name=svc.metadata.name or "",
                    port_name=port.name or "",
                    protocol=port.protocol.lower(),
                    cluster_ip=cluster_ip,
                    port=port.port,
                    node_port=node_port,
                    external_ips=tuple(ip for ip in spec.external_ips if family_of(ip) == family),
                    load_balancer_vips=vips,
                    load_balancer_source_ranges=tuple(
                        _canonical_cidr(c)
                        for c in spec.load_balancer_source_ranges
                        if family_of(c) == family
                    ),
                    affinity_timeout=affinity,
                    internal_local=spec.internal_traffic_policy == "Local",
                    external_local=external_local,
                    health_check_node_port=(
                        (spec.health_check_node_port or 0) if external_local else 0
                    ),
                )
            )
    result.sort(key=lambda sp: (sp.name_string, sp.protocol))
    return result


def endpoints_by_port(
    slices: Iterable[EndpointSlice], family: IPFamily = "IPv4"
) -> dict[tuple[str, str, str, str], tuple[EndpointInfo, ...]]:
    """Merge EndpointSlices per service port, as kube-proxy's EndpointSliceCache.
    One family's proxier reads only the slices of its addressType.

    Only the first address of an endpoint counts; ports without a number or
    protocol are skipped; the same ip:port from two slices counts once;
    endpoints are sorted by their `ip:port` text.
    """
    merged: dict[tuple[str, str, str, str], dict[str, EndpointInfo]] = {}
    for eps in slices:
        service = eps.metadata.labels.get(SERVICE_NAME_LABEL)
        if not service or eps.address_type != family or not watched(eps.metadata.labels):
            continue
        namespace = eps.metadata.namespace or "default"
        for port in eps.ports:
            if port.port is None or port.protocol is None:
                continue
            key = (namespace, service, port.name or "", port.protocol.lower())
            bucket = merged.setdefault(key, {})
            for ep in eps.endpoints:
                if not ep.addresses:
                    continue
                cond = ep.conditions
                # Unset conditions: ready and serving default to true (EndpointSlice API).
                ready = cond.ready is None or cond.ready
                serving = cond.serving is None or cond.serving
                info = EndpointInfo(
                    ip=ep.addresses[0],
                    port=port.port,
                    ready=ready,
                    serving=serving,
                    terminating=bool(cond.terminating),
                    node_name=ep.node_name,
                )
                bucket.setdefault(info.text, info)
    return {key: tuple(bucket[text] for text in sorted(bucket)) for key, bucket in merged.items()}


def proxy_config(
    node: Node,
    kube_proxy: KubeProxyConfiguration | None,
    lab: Lab | None,
    local_ips: Sequence[str],
    *,
    mode: Literal["iptables", "nftables"] = "iptables",
    family: IPFamily = "IPv4",
) -> ProxyConfig:
    """The settings one node's kube-proxy proxier of `family` runs with, in `mode`.

    clusterCIDR comes from the KubeProxyConfiguration; with a Lab and no
    explicit value it is the Lab's pod CIDR, as kubeadm writes it. Each
    family's proxier takes that family's entry of it, the node's IPs, pod
    CIDR and local addresses of that family, and the nodePortAddresses of
    that family (cmd/kube-proxy/app/server_linux.go, NewNodePortAddresses).
    The masquerade settings come from the section of the mode (iptables or
    nftables), as kube-proxy's v1alpha1 conversion takes them.
    """
    cfg = kube_proxy or KubeProxyConfiguration()
    cidrs = [c.strip() for c in (cfg.cluster_cidr or "").split(",") if c.strip()]
    if not cidrs and lab is not None:
        cidrs = lab.spec.pod_cidrs
    cluster_cidr = next((c for c in cidrs if family_of(c) == family), None)
    section = cfg.nftables if mode == "nftables" else cfg.iptables
    masquerade_all = section.masquerade_all or bool(cfg.linux and cfg.linux.masquerade_all)
    bit = section.masquerade_bit
    localhost = cfg.iptables.localhost_node_ports
    conntrack = cfg.linux.conntrack if cfg.linux and cfg.linux.conntrack else cfg.conntrack
    node_port_addresses = tuple(
        a for a in cfg.node_port_addresses if a == "primary" or family_of(a) == family
    )
    if localhost is None:
        localhost = True
    # kube-proxy turns localhost NodePorts off when nodePortAddresses excludes
    # 127.0.0.1, and always for IPv6 (ContainsIPv4Loopback is false there).
    if family == "IPv6" or (
        node_port_addresses
        and not any(
            a != "primary" and netaddr.IPAddress("127.0.0.1") in netaddr.IPNetwork(a)
            for a in node_port_addresses
        )
    ):
        localhost = False
    return ProxyConfig(
        node_name=node.metadata.name or "",
        ip_family=family,
        node_ips=tuple(ip for ip in node.internal_ips() if family_of(ip) == family),
        local_ips=tuple(ip for ip in local_ips if family_of(ip) == family),
        cluster_cidr=cluster_cidr,
        detect_local_mode=cfg.detect_local_mode or "ClusterCIDR",
        node_pod_cidr=next(
            (
                c
                for c in node.spec.pod_cidrs or [node.spec.pod_cidr or ""]
                if family_of(c) == family
            ),
            None,
        ),
        masquerade_all=masquerade_all,
        masquerade_bit=DEFAULT_MASQUERADE_BIT if bit is None else bit,
        localhost_node_ports=localhost,
        node_port_addresses=node_port_addresses,
        tcp_be_liberal=conntrack.tcp_be_liberal,
        service_cidrs=tuple(
            c.strip()
            for c in (lab.spec.service_cidr if lab is not None else DEFAULT_SERVICE_CIDR).split(",")
            if family_of(c.strip()) == family
        ),
    )


def _is_v4(text: str) -> bool:
    try:
        return bool(netaddr.IPAddress(text).version == 4)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return False


def _canonical_cidr(text: str) -> str:
    return str(netaddr.IPNetwork(text.strip()).cidr)
