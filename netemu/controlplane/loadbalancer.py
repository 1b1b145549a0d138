"""The lab's load-balancer address controller, as cloud-provider-kind or
MetalLB's controller: every Service of type LoadBalancer that netemu's
load balancer is responsible for gets `status.loadBalancer.ingress:
[{ip, ipMode: VIP}]` from the Lab's pool (`spec.loadBalancer.addresses`).

- Responsible: `spec.loadBalancerClass` unset (the cluster's default load
  balancer) or LOAD_BALANCER_CLASS. A Service of another class belongs to
  another controller and is left alone, status included (KEP-1959).
- Requests: `spec.loadBalancerIP` (deprecated, still honoured by most
  implementations) or MetalLB's `metallb.universe.tf/loadBalancerIPs`
  annotation (its first IPv4 address) name the address wanted; it must be a
  free address of the pool, else the Service stays pending.
- A status already written (by the manifest, as a pre-provisioned load
  balancer, or by an earlier pass) is kept as it is, and its addresses are
  never handed to another Service.
- Freeing: the pool is recomputed from the Services on every pass, so a
  deleted Service's address is free at once; a Service no longer of type
  LoadBalancer has its status cleared, as the service controller does when
  it tears a load balancer down.
- Dynamic addresses: the lowest free address of the pool, Services taken in
  (namespace, name) order, so the same input always gets the same addresses.
- An exhausted pool or a refused request leaves the Service pending (kubectl
  shows `<pending>`); the reason is kept as an event (`events`), as the
  service controller's "SyncLoadBalancerFailed" event.

`allocateLoadBalancerNodePorts: false` is the allocator's business (it then
allocates no nodePorts); this controller only writes status.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from netemu.api.addresspool import default_pool, parse_pool
from netemu.api.config import Lab
from netemu.api.core import LoadBalancerIngress, LoadBalancerStatus, Service
from netemu.controlplane.client import Client
from netemu.controlplane.common import write

LOAD_BALANCER_CLASS = "netemu.io/lb"
METALLB_IPS_ANNOTATION = "metallb.universe.tf/loadBalancerIPs"


@dataclass(frozen=True)
class Event:
    namespace: str
    name: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"Warning {self.reason} service/{self.name} -n {self.namespace}: {self.message}"


def lab_pool(lab: Lab) -> list[ipaddress.IPv4Address]:
    """The Lab's pool: its addresses, or the default pool less the nodes'
    and external clients' addresses."""
    if lab.spec.load_balancer.addresses:
        return parse_pool(lab.spec.load_balancer.addresses)
    taken = {ip for n in lab.spec.nodes for ip in n.underlay_ips} | {
        ip for c in lab.spec.external_clients for ip in c.ips
    }
    # The pool is IPv4 (the load balancer's addresses): none on an IPv6-only underlay.
    v4 = [cidr for cidr in lab.spec.underlay_cidrs if ":" not in cidr]
    return [ip for ip in (default_pool(v4[0]) if v4 else []) if str(ip) not in taken]


def is_managed(svc: Service) -> bool:
    cls = svc.spec.load_balancer_class
    return svc.spec.type == "LoadBalancer" and cls in (None, "", LOAD_BALANCER_CLASS)


def requested_ip(svc: Service) -> str | None:
    if svc.spec.load_balancer_ip:
        return svc.spec.load_balancer_ip.strip()
    wanted = svc.metadata.annotations.get(METALLB_IPS_ANNOTATION, "")
    for part in wanted.split(","):
        part = part.strip()
        if part and ":" not in part:
            return part
    return None


class LoadBalancerController:
    """Assigns and frees load-balancer ingress addresses (see the module)."""

    name = "loadbalancer"

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: list[Event] = []

    def _event(self, svc: Service, reason: str, message: str) -> None:
        event = Event(svc.metadata.namespace or "default", svc.metadata.name or "", reason, message)
        if event not in self.events:
            self.events.append(event)

    def reconcile(self) -> bool:
        labs = self.client.list(Lab).items
        if not labs:
            return False  # no lab, no load balancer: Services stay as written
        try:
            pool = lab_pool(labs[0])
        except ValueError:
            pool = []  # validation reports a bad pool
        services = sorted(
            self.client.list(Service).items,
            key=lambda s: (s.metadata.namespace or "", s.metadata.name or ""),
        )
        used: set[str] = set()
        for svc in services:
            if svc.spec.type == "LoadBalancer":
                used.update(i.ip for i in svc.status.load_balancer.ingress if i.ip)
        free = [ip for ip in pool if str(ip) not in used]
        pool_text = {str(ip) for ip in pool}
        changed = False
        for svc in services:
            ingress = svc.status.load_balancer.ingress
            if svc.spec.type != "LoadBalancer":
                if ingress:
                    changed |= self._set(svc, [])
                continue
            if not is_managed(svc) or ingress:
                continue
            wanted = requested_ip(svc)
            if wanted is not None:
                if wanted not in pool_text:
                    self._event(
                        svc,
                        "SyncLoadBalancerFailed",
                        f"requested address {wanted} is not in the lab's load-balancer pool",
                    )
                    continue
                if wanted in used:
                    self._event(
                        svc, "SyncLoadBalancerFailed", f"requested address {wanted} is in use"
                    )
                    continue
                ip = wanted
            elif free:
                ip = str(free[0])
            else:
                self._event(
                    svc,
                    "SyncLoadBalancerFailed",
                    "no free address in the lab's load-balancer pool "
                    f"({len(pool)} addresses, all in use)",
                )
                continue
            used.add(ip)
            free = [f for f in free if str(f) != ip]
            changed |= self._set(svc, [LoadBalancerIngress(ip=ip, ip_mode="VIP")])
        return changed

    def _set(self, svc: Service, ingress: list[LoadBalancerIngress]) -> bool:
        status = svc.status.model_copy(
            update={"load_balancer": LoadBalancerStatus(ingress=ingress)}
        )
        return write(self.client, svc, svc.model_copy(update={"status": status}))
