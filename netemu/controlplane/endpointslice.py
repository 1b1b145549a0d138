"""The EndpointSlice controller, as kube-controller-manager's
(k8s.io/endpointslice: reconciler.go, utils.go).

For each Service with a selector that is not ExternalName: the pods of its
namespace that match the selector, have an address and are not
Succeeded/Failed. Each becomes an endpoint with conditions
serving = pod Ready, terminating = deletionTimestamp set,
ready = publishNotReadyAddresses or (serving and not terminating);
nodeName, zone (the node's topology.kubernetes.io/zone), targetRef, and
hostname when the pod's hostname is set and its subdomain is the Service's
name. Each Service port becomes an EndpointPort (name "" when unnamed, as
the controller writes it) whose port is the targetPort, a named targetPort
being looked up per pod in its containers' ports (and sidecar init
containers') by name and protocol; a pod without that port has no mapping
for it. Pods with different port mappings go to different slices; a slice
holds at most 100 endpoints. A Service without endpoints gets one empty
placeholder slice per address type, as in Kubernetes.

Slices are named `<service>-<5 characters>` (generateName), labelled with
the Service's labels plus `kubernetes.io/service-name`,
`endpointslice.kubernetes.io/managed-by` and, for headless Services,
`service.kubernetes.io/headless`, and owned by the Service. Existing slices
are reused: endpoints stay in the slice they are in, new endpoints fill
existing slices before new ones are created, and emptied slices are
deleted, so a change touches few slices (the reconciler's aim too). Within
a slice endpoints are sorted by address, then pod name.

Slices of Services without a selector are never touched (users write
them), nor are those of ExternalName Services; managed slices whose Service
no longer exists, or belonged to an earlier Service of that name, are
deleted.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from netemu.api.base import ObjectMeta
from netemu.api.core import (
    SERVICE_NAME_LABEL,
    Endpoint,
    EndpointConditions,
    EndpointPort,
    EndpointSlice,
    Node,
    ObjectReference,
    Pod,
    Service,
    ServicePort,
)
from netemu.api.core import Protocol as PortProtocol
from netemu.controlplane.client import Client
from netemu.controlplane.common import (
    delete,
    is_pod_ready,
    is_terminal,
    is_terminating,
    owner_reference,
    sorted_map,
    write,
)

LABEL_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
LABEL_HEADLESS = "service.kubernetes.io/headless"
LABEL_ZONE = "topology.kubernetes.io/zone"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
MAX_ENDPOINTS_PER_SLICE = 100

AddressType = Literal["IPv4", "IPv6"]
PortKey = tuple[str, PortProtocol, int, str]  # name, protocol, port, appProtocol
PortsKey = tuple[PortKey, ...]
GroupKey = tuple[AddressType, PortsKey]


@dataclass
class _Slot:
    """A slice being planned: an existing slice to update, or a new one."""

    existing: EndpointSlice | None
    endpoints: dict[str, Endpoint]


class EndpointSliceController:
    """Maintains the EndpointSlices of Services with selectors."""

    name = "endpointslice"

    def __init__(self, client: Client) -> None:
        self.client = client
        # Per Service (namespace, name): the Service object of the last pass
        # and, by pod identity, each candidate pod with its node and what it
        # became (_PodEndpoints). A StatefulSet under OrderedReady adds one
        # pod per round and its Services' slices are synced every round: only
        # the pods (or nodes) that changed since are selected and converted
        # again, and unchanged endpoints stay the same objects, so comparing
        # a slice with its update is cheap. Objects are frozen and each entry
        # holds its pod, so an id is not reused while its entry lives.
        self._made: dict[
            tuple[str | None, str | None],
            tuple[Service, dict[int, tuple[Pod, Node | None, _PodEndpoints]]],
        ] = {}

    def reconcile(self) -> bool:
        used: set[tuple[str | None, str | None]] = set()
        changed = self._reconcile(used)
        self._made = {key: made for key, made in self._made.items() if key in used}
        return changed

    def _reconcile(self, synced: set[tuple[str | None, str | None]]) -> bool:
        services = {
            (s.metadata.namespace, s.metadata.name): s for s in self.client.list(Service).items
        }
        # Pods by (namespace, label key, label value): a Service's candidates are the
        # pods of its rarest selector label, not every pod (linear in pods + Services).
        # Only the label keys some selector uses are indexed.
        selected_keys = {k for svc in services.values() for k in svc.spec.selector or {}}
        pods_by_label: dict[tuple[str | None, str, str], list[Pod]] = {}
        for pod in self.client.list(Pod).items:
            labels = pod.metadata.labels
            for label_key in selected_keys:
                value = labels.get(label_key)
                if value is not None:
                    index = (pod.metadata.namespace, label_key, value)
                    pods_by_label.setdefault(index, []).append(pod)
        nodes = {n.metadata.name: n for n in self.client.list(Node).items}
        managed: dict[tuple[str | None, str | None], list[EndpointSlice]] = {}
        for eps in self.client.list(
            EndpointSlice, labels={LABEL_MANAGED_BY: CONTROLLER_NAME}
        ).items:
            service_name = eps.metadata.labels.get(SERVICE_NAME_LABEL, "")
            managed.setdefault((eps.metadata.namespace, service_name), []).append(eps)

        changed = False
        for key, slices in managed.items():
            svc = services.get(key)
            if svc is None:
                # Kubernetes' garbage collector removes them through the ownerReference.
                for eps in slices:
                    changed |= self._delete(eps)
        for svc in services.values():
            if svc.spec.type == "ExternalName" or not svc.spec.selector:
                continue
            slices = managed.get((svc.metadata.namespace, svc.metadata.name), [])
            owned = [s for s in slices if _owned_by(s, svc)]
            for eps in slices:
                if not _owned_by(eps, svc):
                    changed |= self._delete(eps)
            candidates = min(
                (
                    pods_by_label.get((svc.metadata.namespace, key, value), [])
                    for key, value in svc.spec.selector.items()
                ),
                key=len,
            )
            synced.add((svc.metadata.namespace, svc.metadata.name))
            changed |= self._sync(svc, candidates, nodes, owned)
        return changed

    def _sync(
        self,
        svc: Service,
        pods: Iterable[Pod],
        nodes: dict[str | None, Node],
        existing: list[EndpointSlice],
    ) -> bool:
        key = (svc.metadata.namespace, svc.metadata.name)
        last_svc, last = self._made.get(key, (None, {}))
        if last_svc is not svc:
            last = {}
        made: dict[int, tuple[Pod, Node | None, _PodEndpoints]] = {}
        desired: dict[GroupKey, dict[str, Endpoint]] = {}
        # Each desired endpoint's identity and sort key, by object identity
        # (they are alive throughout the sync, so ids do not collide).
        idents: dict[int, str] = {}
        orders: dict[int, tuple[int, int, str]] = {}
        for pod in pods:
            node = nodes.get(pod.spec.node_name)
            hit = last.get(id(pod))
            if hit is not None and hit[0] is pod and hit[1] is node:
                converted = hit[2]
            else:
                converted = _pod_endpoints(pod, node, svc)
            made[id(pod)] = (pod, node, converted)
            for group, endpoint, ident, order in converted:
                desired.setdefault(group, {})[ident] = endpoint
                idents[id(endpoint)] = ident
                orders[id(endpoint)] = order
        self._made[key] = (svc, made)

        def ident_of(endpoint: Endpoint) -> str:
            return idents.get(id(endpoint)) or _endpoint_id(endpoint)

        def order_of(endpoint: Endpoint) -> tuple[int, int, str]:
            return orders[id(endpoint)]

        plan = _plan(desired, existing, ident_of, order_of)
        if not plan:
            plan = self._placeholders(svc, existing)

        changed = False
        kept: set[str] = set()
        for (address_type, ports_key), slots in sorted(plan.items(), key=lambda item: item[0]):
            for slot in slots:
                eps = self._render(svc, address_type, ports_key, slot, order_of)
                if slot.existing is None:
                    self.client.create(eps)
                    changed = True
                else:
                    kept.add(slot.existing.metadata.name or "")
                    changed |= write(self.client, slot.existing, eps)
        for eps in existing:
            if eps.metadata.name not in kept:
                changed |= self._delete(eps)
        return changed

    def _placeholders(
        self, svc: Service, existing: list[EndpointSlice]
    ) -> dict[GroupKey, list[_Slot]]:
        """One empty slice per address type; reuse an existing slice of that type."""
        plan: dict[GroupKey, list[_Slot]] = {}
        for address_type in address_types(svc):
            reuse = next(
                (
                    s
                    for s in sorted(existing, key=lambda s: s.metadata.name or "")
                    if s.address_type == address_type
                ),
                None,
            )
            plan[(address_type, ())] = [_Slot(reuse, {})]
        return plan

    def _render(
        self,
        svc: Service,
        address_type: AddressType,
        ports_key: PortsKey,
        slot: _Slot,
        order_of: Callable[[Endpoint], tuple[int, int, str]],
    ) -> EndpointSlice:
        labels = {
            k: v
            for k, v in svc.metadata.labels.items()
            if k not in (SERVICE_NAME_LABEL, LABEL_MANAGED_BY, LABEL_HEADLESS)
        }
        if svc.spec.cluster_ip in (None, "", "None"):
            labels[LABEL_HEADLESS] = ""
        labels[SERVICE_NAME_LABEL] = svc.metadata.name or ""
        labels[LABEL_MANAGED_BY] = CONTROLLER_NAME
        endpoints = sorted(slot.endpoints.values(), key=order_of)
        ports = [_port_from_key(k) for k in ports_key]
        if slot.existing is not None:
            meta = slot.existing.metadata.model_copy(
                update={
                    "labels": sorted_map(labels),
                    "owner_references": [owner_reference(svc)],
                }
            )
            return slot.existing.model_copy(
                update={
                    "metadata": meta,
                    "address_type": address_type,
                    "endpoints": endpoints,
                    "ports": ports,
                }
            )
        return EndpointSlice(
            metadata=ObjectMeta(
                generate_name=f"{svc.metadata.name}-",
                namespace=svc.metadata.namespace,
                labels=sorted_map(labels),
                owner_references=[owner_reference(svc)],
            ),
            address_type=address_type,
            endpoints=endpoints,
            ports=ports,
        )

    def _delete(self, eps: EndpointSlice) -> bool:
        delete(self.client, eps)
        return True


# What one pod gives a Service: per endpoint (one per address type the pod
# has an address of), its group, the endpoint, its identity and sort key.
_PodEndpoints = tuple[tuple[GroupKey, Endpoint, str, tuple[int, int, str]], ...]


def _pod_endpoints(pod: Pod, node: Node | None, svc: Service) -> _PodEndpoints:
    """The endpoints `pod` gives `svc`: none unless the pod is of its
    namespace, matches its selector, is not Succeeded/Failed and has an
    address."""
    selector = svc.spec.selector or {}
    if (
        pod.metadata.namespace != svc.metadata.namespace
        or not all(pod.metadata.labels.get(k) == v for k, v in selector.items())
        or is_terminal(pod)
        or not (pod.status.pod_ip or pod.status.pod_ips)
    ):
        return ()
    out = []
    for address_type in address_types(svc):
        endpoint = pod_to_endpoint(pod, node, svc, address_type)
        if not endpoint.addresses:
            continue
        group = (address_type, _ports_key(endpoint_ports(svc, pod)))
        out.append((group, endpoint, _endpoint_id(endpoint), _endpoint_sort_key(endpoint)))
    return tuple(out)


def _plan(
    desired: dict[GroupKey, dict[str, Endpoint]],
    existing: list[EndpointSlice],
    ident_of: Callable[[Endpoint], str],
    order_of: Callable[[Endpoint], tuple[int, int, str]],
) -> dict[GroupKey, list[_Slot]]:
    """Assign endpoints to slices: keep each where it is, fill, then add
    slices. `ident_of` and `order_of` are _endpoint_id and _endpoint_sort_key
    (or memos of them)."""
    plan: dict[GroupKey, list[_Slot]] = {}
    for group, wanted in desired.items():
        slots: list[_Slot] = []
        placed: set[str] = set()
        for eps in sorted(existing, key=lambda s: s.metadata.name or ""):
            if (eps.address_type, _ports_key(eps.ports)) != group:
                continue
            keep = {}
            for endpoint in eps.endpoints:
                ident = ident_of(endpoint)
                if ident in wanted and ident not in placed:
                    keep[ident] = wanted[ident]
                    placed.add(ident)
            slots.append(_Slot(eps, keep))
        fresh = deque(
            sorted((e for ident, e in wanted.items() if ident not in placed), key=order_of)
        )
        for slot in slots:
            while fresh and len(slot.endpoints) < MAX_ENDPOINTS_PER_SLICE:
                endpoint = fresh.popleft()
                slot.endpoints[ident_of(endpoint)] = endpoint
        while fresh:
            chunk = [fresh.popleft() for _ in range(min(len(fresh), MAX_ENDPOINTS_PER_SLICE))]
            slots.append(_Slot(None, {ident_of(e): e for e in chunk}))
        plan[group] = [s for s in slots if s.endpoints]
    return {g: s for g, s in plan.items() if s}


def address_types(svc: Service) -> list[AddressType]:
    """getAddressTypesForService: from spec.ipFamilies, else the clusterIP's family."""
    families: list[AddressType] = [f for f in ("IPv4", "IPv6") if f in svc.spec.ip_families]
    if families:
        return families
    ip = svc.spec.cluster_ip
    if ip and ip != "None":
        return ["IPv6" if ":" in ip else "IPv4"]
    return ["IPv4", "IPv6"]


def pod_to_endpoint(
    pod: Pod, node: Node | None, svc: Service, address_type: AddressType
) -> Endpoint:
    serving = is_pod_ready(pod)
    terminating = is_terminating(pod)
    ready = bool(svc.spec.publish_not_ready_addresses) or (serving and not terminating)
    ips = [p.ip for p in pod.status.pod_ips] or [pod.status.pod_ip or ""]
    addresses = []
    for text in ips:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            continue
        if ("IPv6" if addr.version == 6 else "IPv4") == address_type:
            addresses.append(str(addr))
    zone = node.metadata.labels.get(LABEL_ZONE) if node is not None else None
    hostname = None
    if pod.spec.hostname and pod.spec.subdomain == svc.metadata.name:
        hostname = pod.spec.hostname
    return Endpoint(
        addresses=addresses,
        conditions=EndpointConditions(ready=ready, serving=serving, terminating=terminating),
        hostname=hostname,
        target_ref=ObjectReference(
            kind="Pod",
            namespace=pod.metadata.namespace,
            name=pod.metadata.name,
            uid=pod.metadata.uid,
        ),
        node_name=pod.spec.node_name or None,
        zone=zone or None,
    )


def endpoint_ports(svc: Service, pod: Pod) -> list[EndpointPort]:
    out = []
    for port in svc.spec.ports:
        number = find_port(pod, port)
        if number is None:
            continue
        out.append(
            EndpointPort(
                name=port.name or "",
                protocol=port.protocol,
                port=number,
                app_protocol=port.app_protocol,
            )
        )
    return out


def find_port(pod: Pod, port: ServicePort) -> int | None:
    """FindPort: a numeric targetPort as is; a named one from the pod's container
    ports (and sidecar init containers') with that name and protocol."""
    target = port.target_port if port.target_port is not None else port.port
    if isinstance(target, int):
        return target
    containers = list(pod.spec.containers) + [
        c for c in pod.spec.init_containers if c.restart_policy == "Always"
    ]
    for container in containers:
        for cport in container.ports:
            if cport.name == target and cport.protocol == port.protocol:
                return cport.container_port
    return None


def _ports_key(ports: Iterable[EndpointPort]) -> PortsKey:
    return tuple(
        (p.name or "", p.protocol or "TCP", p.port or 0, p.app_protocol or "") for p in ports
    )


def _port_from_key(key: PortKey) -> EndpointPort:
    name, protocol, port, app_protocol = key
    return EndpointPort(name=name, protocol=protocol, port=port, app_protocol=app_protocol or None)


def _endpoint_id(endpoint: Endpoint) -> str:
    ref = endpoint.target_ref
    pod = f"{ref.namespace}/{ref.name}/{ref.uid}" if ref is not None else ""
    return f"{pod}|{','.join(endpoint.addresses)}"


def _endpoint_sort_key(endpoint: Endpoint) -> tuple[int, int, str]:
    first = endpoint.addresses[0] if endpoint.addresses else ""
    try:
        addr = ipaddress.ip_address(first)
        version: int = addr.version
        value = int(addr)
    except ValueError:
        version, value = 99, 0
    name = endpoint.target_ref.name if endpoint.target_ref is not None else ""
    return version, value, name or ""


def _owned_by(eps: EndpointSlice, svc: Service) -> bool:
    return any(
        ref.uid == svc.metadata.uid and ref.kind == "Service" and ref.api_version == "v1"
        for ref in eps.metadata.owner_references
    )
