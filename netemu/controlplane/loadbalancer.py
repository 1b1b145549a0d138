"""The lab's load-balancer address controller, as cloud-provider-kind or
MetalLB's controller: every Service of type LoadBalancer that netemu's
load balancer is responsible for gets `status.loadBalancer.ingress:
[{ip, ipMode: VIP}]` from the Lab's pool (`spec.loadBalancer.addresses`).

- Families: one ingress address per family of `spec.ipFamilies`, in that
  order (the Service's primary family first, as its clusterIPs), each from
  that family's part of the pool, as MetalLB gives a dual-stack Service one
  address per family and cloud-provider-kind reports one per family the
  Service has (pkg/loadbalancer/server.go, GetLoadBalancer; it writes IPv4
  first whatever the order). A family the pool has no address of stays
  pending, with an event; the other family is served meanwhile.
- Default pool: with `addresses` empty, the default pool of each underlay
  CIDR (netemu.api.addresspool.default_range: .200-.239 of an IPv4 /24,
  ::c8-::ef of an IPv6 underlay), less the nodes' and clients' addresses.
  Given `addresses` are the whole pool, of whichever families they hold.
- Responsible: `spec.loadBalancerClass` unset (the cluster's default load
  balancer) or LOAD_BALANCER_CLASS. A Service of another class belongs to
  another controller and is left alone, status included (KEP-1959).
- Requests: `spec.loadBalancerIP` (deprecated, one address, still honoured
  by most implementations) or MetalLB's `metallb.universe.tf/loadBalancerIPs`
  annotation (at most one address per family) name the address wanted for
  their family; it must be a free address of the pool, else that family
  stays pending. An address of a family the Service does not have leaves
  it pending altogether.
- A status already written is kept, and its addresses are never handed to
  another Service: one with an address outside the pool (a pre-provisioned
  load balancer's, written by the manifest) is left exactly as written; one
  of the pool's addresses (an earlier pass's) only gets the families it
  still lacks.
- Freeing: the pool is recomputed from the Services on every pass, so a
  deleted Service's address is free at once; a Service no longer of type
  LoadBalancer has its status cleared, as the service controller does when
  it tears a load balancer down.
- Dynamic addresses: the lowest free address of the family's pool, Services
  taken in (namespace, name) order, so the same input always gets the same
  addresses.
- An exhausted pool or a refused request leaves the family pending (with
  no address at all, kubectl shows `<pending>`); the reason is kept as an
  event (`events`), as the service controller's "SyncLoadBalancerFailed".

`allocateLoadBalancerNodePorts: false` is the allocator's business (it then
allocates no nodePorts); this controller only writes status.
"""

from __future__ import annotations

from dataclasses import dataclass

from netemu.api.addresspool import AddressPool, default_pool, parse_pool
from netemu.api.config import Lab
from netemu.api.core import LoadBalancerIngress, LoadBalancerStatus, Service
from netemu.api.ipfamilies import IPFamily, family_of
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


def lab_pool(lab: Lab) -> AddressPool:
    """The Lab's pool: its addresses, or the default pool of each underlay
    CIDR (one per family) less the nodes' and external clients' addresses."""
    if lab.spec.load_balancer.addresses:
        return parse_pool(lab.spec.load_balancer.addresses)
    taken = {ip for n in lab.spec.nodes for ip in n.underlay_ips} | {
        ip for c in lab.spec.external_clients for ip in c.ips
    }
    return default_pool(lab.spec.underlay_cidrs, taken)


def is_managed(svc: Service) -> bool:
    cls = svc.spec.load_balancer_class
    return svc.spec.type == "LoadBalancer" and cls in (None, "", LOAD_BALANCER_CLASS)


def service_families(svc: Service) -> list[IPFamily]:
    """spec.ipFamilies (set by defaulting), else the clusterIP's family."""
    if svc.spec.ip_families:
        return list(svc.spec.ip_families)
    return [family_of(svc.spec.cluster_ip or "") or "IPv4"]


def requested_ips(svc: Service) -> list[str]:
    """The addresses asked for: spec.loadBalancerIP (deprecated, one address),
    else MetalLB's annotation, whose list may name one address per family."""
    if svc.spec.load_balancer_ip:
        return [svc.spec.load_balancer_ip.strip()]
    wanted = svc.metadata.annotations.get(METALLB_IPS_ANNOTATION, "")
    return [part.strip() for part in wanted.split(",") if part.strip()]


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
            pool = AddressPool()  # validation reports a bad pool
        services = sorted(
            self.client.list(Service).items,
            key=lambda s: (s.metadata.namespace or "", s.metadata.name or ""),
        )
        used: set[str] = set()
        for svc in services:
            if svc.spec.type == "LoadBalancer":
                used.update(i.ip for i in svc.status.load_balancer.ingress if i.ip)
        changed = False
        for svc in services:
            ingress = svc.status.load_balancer.ingress
            if svc.spec.type != "LoadBalancer":
                if ingress:
                    changed |= self._set(svc, [])
                continue
            if not is_managed(svc):
                continue
            # A status this controller did not write (a pre-provisioned load
            # balancer's addresses, outside the pool) is kept as written.
            if any(i.ip and i.ip not in pool for i in ingress):
                continue
            added = self._assign(svc, pool, used)
            if added:
                changed |= self._set(svc, self._ordered(svc, [*ingress, *added]))
        return changed

    def _assign(self, svc: Service, pool: AddressPool, used: set[str]) -> list[LoadBalancerIngress]:
        """An ingress address for each family of the Service that has none
        yet, from that family's part of the pool; `used` takes them."""
        families = service_families(svc)
        have = {family_of(i.ip) for i in svc.status.load_balancer.ingress if i.ip}
        requests = requested_ips(svc)
        stray = [ip for ip in requests if family_of(ip) not in families]
        if stray:
            self._event(
                svc,
                "SyncLoadBalancerFailed",
                f"requested address {stray[0]} is not of the Service's ipFamilies "
                f"({', '.join(families)})",
            )
            return []
        added = []
        for family in families:
            if family in have:
                continue
            family_pool = pool.of_family(6 if family == "IPv6" else 4)
            wanted = next((ip for ip in requests if family_of(ip) == family), None)
            if wanted is not None:
                if wanted not in family_pool:
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
            elif not family_pool:
                # The Service stays pending for this family, as MetalLB leaves
                # a family without a pool unassigned.
                self._event(
                    svc,
                    "SyncLoadBalancerFailed",
                    f"the lab's load-balancer pool has no {family} addresses",
                )
                continue
            else:
                free = family_pool.first_free(used)
                if free is None:
                    self._event(
                        svc,
                        "SyncLoadBalancerFailed",
                        f"no free {family} address in the lab's load-balancer pool "
                        f"({family_pool.size()} addresses, all in use)",
                    )
                    continue
                ip = str(free)
            used.add(ip)
            added.append(LoadBalancerIngress(ip=ip, ip_mode="VIP"))
        return added

    @staticmethod
    def _ordered(svc: Service, ingress: list[LoadBalancerIngress]) -> list[LoadBalancerIngress]:
        """In spec.ipFamilies order, the Service's primary family first."""
        families = service_families(svc)
        rank = {family: index for index, family in enumerate(families)}
        return sorted(ingress, key=lambda i: rank.get(family_of(i.ip or "") or "IPv4", len(rank)))

    def _set(self, svc: Service, ingress: list[LoadBalancerIngress]) -> bool:
        status = svc.status.model_copy(
            update={"load_balancer": LoadBalancerStatus(ingress=ingress)}
        )
        return write(self.client, svc, svc.model_copy(update={"status": status}))
