"""The emulated cloud load balancer's decisions, as pure data: what it
health-checks, how a node's health follows the checks' results, and which
nodes each ingress IP is spread over.

A cloud load balancer in front of a Kubernetes Service checks every node,
not pods (KEP-3836, "Kube-proxy improved ingress connectivity reliability"):
for externalTrafficPolicy Local the Service's healthCheckNodePort, where
kube-proxy answers 200 only on nodes with ready local endpoints; for
Cluster kube-proxy's own health server (healthzBindAddress, default
0.0.0.0:10256), `/healthz`. It sends new connections only to healthy
nodes, each connection placed by a hash of its addresses and ports. When no
node is healthy it "fails open" to all of them, as GCP's passthrough
Network Load Balancer and AWS's NLB both do, rather than drop everything.

Must not touch: the kernel (netemu.node.cloudlb probes and programs routes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from netemu.api.config import LabHealthCheck
from netemu.api.core import Service

# kube-proxy's healthzBindAddress port (pkg/proxy/apis/config/v1alpha1 defaults).
PROXY_HEALTHZ_PORT = 10256
HEALTHZ_PATH = "/healthz"
VIP = "VIP"
PROXY = "Proxy"


@dataclass(frozen=True)
class Frontend:
    """One LoadBalancer Service as the load balancer sees it."""

    service: str  # namespace/name
    ips: tuple[str, ...]  # its ingress IPs
    ip_mode: str  # VIP (passthrough) or Proxy
    local: bool  # externalTrafficPolicy Local
    health_port: int  # what every node is checked on
    # (port, protocol, nodePort): what proxy mode connects to on the node.
    ports: tuple[tuple[int, str, int | None], ...]


def frontends(services: Sequence[Service]) -> list[Frontend]:
    """The LoadBalancer Services that have ingress IPs, by name: one
    Frontend per Service and ipMode (an unset ipMode is VIP, as the API
    server defaults it), since passthrough and proxy IPs are served apart."""
    found = []
    for svc in services:
        spec, status = svc.spec, svc.status
        if spec is None or spec.type != "LoadBalancer" or status is None:
            continue
        ingress = [i for i in status.load_balancer.ingress if i.ip]
        if not ingress:
            continue
        local = spec.external_traffic_policy == "Local"
        port = spec.health_check_node_port if local and spec.health_check_node_port else None
        for mode in (VIP, PROXY):
            ips = tuple(i.ip for i in ingress if (i.ip_mode or VIP) == mode and i.ip)
            if not ips:
                continue
            found.append(
                Frontend(
                    service=f"{svc.metadata.namespace or 'default'}/{svc.metadata.name}",
                    ips=ips,
                    ip_mode=mode,
                    local=local,
                    health_port=port or PROXY_HEALTHZ_PORT,
                    ports=tuple(
                        (p.port, p.protocol or "TCP", p.node_port or None) for p in spec.ports
                    ),
                )
            )
    return sorted(found, key=lambda f: (f.service, f.ip_mode))


@dataclass(frozen=True)
class ProbeResult:
    """One health check's outcome: `ok` is an HTTP 200 answer."""

    ok: bool
    reason: str  # "HTTP 200", "HTTP 503", "timeout", "connection refused", ...
    local_endpoints: int | None = None  # from a healthCheckNodePort's JSON body


@dataclass(frozen=True)
class NodeHealth:
    """A node's health for one Service. A node starts unhealthy, as a cloud
    load balancer's new backend does until it passes its healthy threshold."""

    healthy: bool = False
    successes: int = 0  # consecutive
    failures: int = 0  # consecutive
    reason: str = "not checked yet"
    local_endpoints: int | None = None
    checked: bool = False


def advance(health: NodeHealth, result: ProbeResult, check: LabHealthCheck) -> NodeHealth:
    """The node's health after one more check: it turns healthy after
    `healthyThreshold` consecutive successes and unhealthy after
    `unhealthyThreshold` consecutive failures, and otherwise keeps its state."""
    successes = health.successes + 1 if result.ok else 0
    failures = 0 if result.ok else health.failures + 1
    healthy = health.healthy
    if result.ok and successes >= check.healthy_threshold:
        healthy = True
    if not result.ok and failures >= check.unhealthy_threshold:
        healthy = False
    return replace(
        health,
        healthy=healthy,
        successes=successes,
        failures=failures,
        reason=result.reason,
        local_endpoints=result.local_endpoints,
        checked=True,
    )


@dataclass(frozen=True)
class Spread:
    """Where new connections to one ingress IP go."""

    ip: str
    nodes: tuple[str, ...]  # the nodes connections are spread over, in node order
    healthy: tuple[str, ...]  # the nodes healthy for every Service on the IP
    fail_open: bool  # no node healthy: spread over all nodes


def spreads(
    fronts: Sequence[Frontend],
    health: Mapping[tuple[str, str], NodeHealth],
    nodes: Sequence[str],
) -> list[Spread]:
    """Per ingress IP, the nodes new connections go to. `health` is keyed by
    (service, node). Routing works per address, not per port, so an IP
    shared by several Services goes to the nodes healthy for all of them."""
    services_of: dict[str, list[str]] = {}
    for front in fronts:
        for ip in front.ips:
            services_of.setdefault(ip, []).append(front.service)
    result = []
    for ip, services in sorted(services_of.items()):
        healthy = tuple(
            node
            for node in nodes
            if all(health.get((svc, node), NodeHealth()).healthy for svc in services)
        )
        result.append(
            Spread(ip=ip, nodes=healthy or tuple(nodes), healthy=healthy, fail_open=not healthy)
        )
    return result


def pick(nodes: Sequence[str], client_ip: str, client_port: int) -> str:
    """Proxy mode's per-connection choice among `nodes` (non-empty): a
    stable hash of the client's address and port, so one connection's
    choice does not depend on any other's."""
    key = f"{client_ip}:{client_port}".encode()
    digest = int.from_bytes(hashlib.sha256(key).digest()[:8], "big")
    return nodes[digest % len(nodes)]
