"""The Ingress status the ingress-nginx controller writes: each Ingress of
its class gets `status.loadBalancer.ingress` from the controller's Service
(ingress-nginx's --publish-service): the Service's load-balancer ingress
IPs when it has them, else the InternalIPs of the nodes that run a
controller pod (what ingress-nginx publishes without a published Service,
its NodePort set-up). Without a controller Service or pod, nothing is
written: no controller, no address.

Pure control-plane logic through the client; runs after the load-balancer
controller and the pods it reads have settled.
"""

from __future__ import annotations

from netemu.api.core import Node, Pod, Service
from netemu.api.networking import (
    Ingress,
    IngressClass,
    IngressLoadBalancerIngress,
    IngressLoadBalancerStatus,
    IngressStatus,
)
from netemu.controlplane.addons import INGRESS_CLASS, INGRESS_CONTROLLER, INGRESS_NAMESPACE
from netemu.controlplane.client import Client
from netemu.controlplane.common import is_active, write
from netemu.controlplane.errors import NotFound
from netemu.controlplane.ingressconf import class_ingresses


def published_addresses(service: Service | None, pods: list[Pod], nodes: list[Node]) -> list[str]:
    """The addresses an Ingress of the controller shows, sorted."""
    if service is not None and service.status is not None:
        ips = sorted(i.ip for i in service.status.load_balancer.ingress if i.ip)
        if ips:
            return ips
    selector = service.spec.selector if service is not None else None
    if not selector:
        return []
    on = {
        p.spec.node_name
        for p in pods
        if is_active(p)
        and p.spec.node_name
        and all(p.metadata.labels.get(k) == v for k, v in selector.items())
    }
    return sorted(
        a.address
        for n in nodes
        if n.metadata.name in on
        for a in n.status.addresses
        if a.type == "InternalIP"
    )


class IngressStatusController:
    name = "ingress-status"

    def __init__(self, client: Client) -> None:
        self.client = client

    def reconcile(self) -> bool:
        try:
            service: Service | None = self.client.get(
                Service, INGRESS_NAMESPACE, INGRESS_CONTROLLER
            )
        except NotFound:
            return False
        pods = list(self.client.list(Pod, INGRESS_NAMESPACE).items)
        addresses = published_addresses(service, pods, list(self.client.list(Node).items))
        if not addresses:
            return False
        status = IngressStatus(
            load_balancer=IngressLoadBalancerStatus(
                ingress=[IngressLoadBalancerIngress(ip=ip) for ip in addresses]
            )
        )
        changed = False
        mine = class_ingresses(
            self.client.list(Ingress).items, self.client.list(IngressClass).items, INGRESS_CLASS
        )
        for ing in mine:
            changed |= write(self.client, ing, ing.model_copy(update={"status": status}))
        return changed
