"""v1 Endpoints: the endpoints controller's own Endpoints for Services with
selectors, and the EndpointSlice mirroring controller for the Endpoints
users write for Services without one (kube-controller-manager's
pkg/controller/endpoint and pkg/controller/endpointslicemirroring).

Mirroring: an Endpoints whose Service exists, has no selector and is not
labelled `endpointslice.kubernetes.io/skip-mirror: "true"` (nor carries a
leader-election annotation, as old components' lock objects did) gets
EndpointSlices named `<name>-<5 characters>`, labelled with the Endpoints'
labels plus `kubernetes.io/service-name` and
`endpointslice.kubernetes.io/managed-by:
endpointslicemirroring-controller.k8s.io`, annotated with its annotations
but last-applied-configuration and the last-change-trigger-time, and owned
by the Endpoints. Each subset's addresses become endpoints with
`conditions.ready` true (`addresses`) or false (`notReadyAddresses`), their
address type from the IP (an address that is not an IP is skipped), at
most 1000 addresses of a subset mirrored (the controller's
mirroringMaxEndpointsPerSubset); subsets with the same ports and address
type share slices of at most 1000 endpoints. Ports keep their names ("" when
unnamed), protocol (default TCP) and appProtocol. Mirrored slices whose
Endpoints or Service no longer qualifies are deleted.

The endpoints controller (for Services with selectors, not ExternalName)
writes an Endpoints of the Service's name, labelled with the Service's labels
(plus `service.kubernetes.io/headless` for headless Services), from the
Service's EndpointSlices: ready endpoints as `addresses`, the others that are
not terminating as `notReadyAddresses` (all as addresses with
publishNotReadyAddresses), one subset per set of ports, addresses sorted, as
its RepackSubsets leaves them. It deletes Endpoints of Services that are gone
or lost their selector only if it wrote them (it marks nothing, so netemu
remembers which it wrote).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from netemu.api.base import ObjectMeta
from netemu.api.core import (
    SERVICE_NAME_LABEL,
    Endpoint,
    EndpointAddress,
    EndpointConditions,
    EndpointPort,
    Endpoints,
    EndpointSlice,
    EndpointsPort,
    EndpointSubset,
    Service,
)
from netemu.api.core import Protocol as PortProtocol
from netemu.controlplane.client import Client
from netemu.controlplane.common import (
    IdentityMemo,
    controlled_by,
    delete,
    owner_reference,
    sorted_map,
    write,
)
from netemu.controlplane.endpointslice import (
    CONTROLLER_NAME as SLICE_CONTROLLER,
)
from netemu.controlplane.endpointslice import (
    LABEL_HEADLESS,
    LABEL_MANAGED_BY,
)

MIRROR_CONTROLLER = "endpointslicemirroring-controller.k8s.io"
LABEL_SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"
# Annotations the mirroring controller does not copy onto slices.
_NOT_COPIED = (
    "endpoints.kubernetes.io/last-change-trigger-time",
    "kubectl.kubernetes.io/last-applied-configuration",
)
LEADER_ANNOTATION = "control-plane.alpha.kubernetes.io/leader"
MAX_MIRRORED_PER_SUBSET = 1000

AddressType = Literal["IPv4", "IPv6"]
_PortsKey = tuple[tuple[str, PortProtocol, int, str], ...]


def _ports_key(ports: Sequence[EndpointsPort]) -> _PortsKey:
    return tuple(
        sorted((p.name or "", p.protocol or "TCP", p.port, p.app_protocol or "") for p in ports)
    )


def mirrors(endpoints: Endpoints, svc: Service | None) -> bool:
    """Whether the mirroring controller mirrors `endpoints` (its reconcile's skips)."""
    return (
        svc is not None
        and not svc.spec.selector
        and endpoints.metadata.labels.get(LABEL_SKIP_MIRROR) != "true"
        and LEADER_ANNOTATION not in endpoints.metadata.annotations
    )


def mirrored_endpoints(endpoints: Endpoints) -> dict[tuple[AddressType, _PortsKey], list[Endpoint]]:
    """The slices' endpoints, by address type and ports."""
    groups: dict[tuple[AddressType, _PortsKey], list[Endpoint]] = {}
    for subset in endpoints.subsets:
        key = _ports_key(subset.ports)
        both = [(a, True) for a in subset.addresses] + [
            (a, False) for a in subset.not_ready_addresses
        ]
        for address, ready in both[:MAX_MIRRORED_PER_SUBSET]:
            try:
                ip = ipaddress.ip_address(address.ip)
            except ValueError:
                continue  # skipped, with an event, by the controller
            family: AddressType = "IPv4" if ip.version == 4 else "IPv6"
            groups.setdefault((family, key), []).append(
                Endpoint(
                    addresses=[str(ip)],
                    conditions=EndpointConditions(ready=ready),
                    hostname=address.hostname or None,
                    target_ref=address.target_ref,
                    node_name=address.node_name,
                )
            )
    return groups


class EndpointsMirroringController:
    """Mirrors users' Endpoints of selector-less Services into EndpointSlices."""

    name = "endpointslice-mirroring"

    def __init__(self, client: Client) -> None:
        self.client = client

    def reconcile(self) -> bool:
        services = {
            (s.metadata.namespace, s.metadata.name): s for s in self.client.list(Service).items
        }
        existing: dict[tuple[str | None, str], list[EndpointSlice]] = {}
        for eps in self.client.list(
            EndpointSlice, labels={LABEL_MANAGED_BY: MIRROR_CONTROLLER}
        ).items:
            key = (eps.metadata.namespace, eps.metadata.labels.get(SERVICE_NAME_LABEL, ""))
            existing.setdefault(key, []).append(eps)
        changed = False
        seen: set[tuple[str | None, str]] = set()
        for endpoints in self.client.list(Endpoints).items:
            key = (endpoints.metadata.namespace, endpoints.metadata.name or "")
            if not mirrors(endpoints, services.get(key)):
                continue
            seen.add(key)
            owned = [s for s in existing.get(key, []) if controlled_by(s, endpoints)]
            for eps in existing.get(key, []):
                if eps not in owned:
                    delete(self.client, eps)
                    changed = True
            changed |= self._sync(endpoints, owned)
        for key, slices in existing.items():
            if key not in seen:
                for eps in slices:
                    delete(self.client, eps)
                    changed = True
        return changed

    def _sync(self, endpoints: Endpoints, existing: list[EndpointSlice]) -> bool:
        desired: list[tuple[AddressType, _PortsKey, list[Endpoint]]] = []
        for (family, ports), found in sorted(mirrored_endpoints(endpoints).items()):
            for start in range(0, len(found), MAX_MIRRORED_PER_SUBSET):
                desired.append((family, ports, found[start : start + MAX_MIRRORED_PER_SUBSET]))
        free = sorted(existing, key=lambda s: s.metadata.name or "")
        changed = False
        for family, ports, group in desired:
            reuse = next(
                (s for s in free if s.address_type == family and _slice_ports(s) == ports), None
            )
            if reuse is not None:
                free.remove(reuse)
            eps = self._render(endpoints, family, ports, group, reuse)
            if reuse is None:
                self.client.create(eps)
                changed = True
            else:
                changed |= write(self.client, reuse, eps)
        for eps in free:
            delete(self.client, eps)
            changed = True
        return changed

    def _render(
        self,
        endpoints: Endpoints,
        family: AddressType,
        ports: _PortsKey,
        group: list[Endpoint],
        reuse: EndpointSlice | None,
    ) -> EndpointSlice:
        meta = endpoints.metadata
        labels = {
            **meta.labels,
            SERVICE_NAME_LABEL: meta.name or "",
            LABEL_MANAGED_BY: MIRROR_CONTROLLER,
        }
        annotations = {k: v for k, v in meta.annotations.items() if k not in _NOT_COPIED}
        new_meta = ObjectMeta(
            generate_name=f"{meta.name}-",
            namespace=meta.namespace,
            labels=sorted_map(labels),
            annotations=sorted_map(annotations),
            owner_references=[owner_reference(endpoints)],
        )
        if reuse is not None:
            new_meta = reuse.metadata.model_copy(
                update={
                    "labels": new_meta.labels,
                    "annotations": new_meta.annotations,
                    "owner_references": new_meta.owner_references,
                }
            )
        slice_ports = [
            EndpointPort(name=name, protocol=protocol, port=port, app_protocol=app or None)
            for name, protocol, port, app in ports
        ]
        return EndpointSlice(
            metadata=new_meta, address_type=family, endpoints=group, ports=slice_ports
        )


def _slice_ports(eps: EndpointSlice) -> _PortsKey:
    return tuple(
        sorted(
            (p.name or "", p.protocol or "TCP", p.port or 0, p.app_protocol or "")
            for p in eps.ports
        )
    )


class EndpointsController:
    """Writes the v1 Endpoints of Services with selectors (see the module)."""

    name = "endpoints"

    def __init__(self, client: Client) -> None:
        self.client = client
        self.written: set[tuple[str | None, str]] = set()
        # Each slice's addresses, by identity: a Service's Endpoints is
        # rebuilt from all its slices whenever one changes (every round,
        # while a StatefulSet adds a pod per round), and the others are the
        # same objects as last pass.
        self._entries = IdentityMemo(slice_entries)

    def reconcile(self) -> bool:
        self._entries.start_pass()
        slices: dict[tuple[str | None, str], list[EndpointSlice]] = {}
        for eps in self.client.list(
            EndpointSlice, labels={LABEL_MANAGED_BY: SLICE_CONTROLLER}
        ).items:
            key = (eps.metadata.namespace, eps.metadata.labels.get(SERVICE_NAME_LABEL, ""))
            slices.setdefault(key, []).append(eps)
        current = {
            (e.metadata.namespace, e.metadata.name or ""): e
            for e in self.client.list(Endpoints).items
        }
        changed = False
        wanted: set[tuple[str | None, str]] = set()
        for svc in self.client.list(Service).items:
            if svc.spec.type == "ExternalName" or not svc.spec.selector:
                continue
            key = (svc.metadata.namespace, svc.metadata.name or "")
            wanted.add(key)
            desired = endpoints_of(svc, slices.get(key, []), entries_of=self._entries)
            old = current.get(key)
            if old is None:
                self.client.create(desired)
                changed = True
            else:
                meta = old.metadata.model_copy(update={"labels": desired.metadata.labels})
                changed |= write(
                    self.client,
                    old,
                    old.model_copy(update={"metadata": meta, "subsets": desired.subsets}),
                )
            self.written.add(key)
        for key in sorted(self.written - wanted, key=str):
            old = current.get(key)
            if old is not None:
                delete(self.client, old)
                changed = True
            self.written.discard(key)
        return changed


def endpoints_of(
    svc: Service,
    slices: Sequence[EndpointSlice],
    *,
    entries_of: Callable[[EndpointSlice], tuple[AddressEntry, ...]] | None = None,
) -> Endpoints:
    """The Endpoints the endpoints controller writes for `svc`: one address
    per pod, of the Service's primary IP family only (ipFamilies[0], else its
    clusterIP's family), as podToEndpointAddressForService picks it
    (pkg/controller/endpoint/endpoints_controller.go); so the slices of that
    address type. `entries_of` is slice_entries, or a memo of it."""
    entries_of = entries_of or slice_entries
    publish = bool(svc.spec.publish_not_ready_addresses)
    family = _primary_family(svc)
    subsets: dict[_PortsKey, tuple[dict[str, AddressEntry], dict[str, AddressEntry]]] = {}
    for eps in slices:
        if family is not None and eps.address_type != family:
            continue
        ports = _slice_ports(eps)
        ready_set, not_ready_set = subsets.setdefault(ports, ({}, {}))
        for entry in entries_of(eps):
            address, terminating, ready, _ = entry
            if terminating and not publish:
                continue
            (ready_set if publish or ready else not_ready_set)[address.ip] = entry
    out = []
    for ports, (ready_set, not_ready_set) in sorted(subsets.items()):
        if not ready_set and not not_ready_set:
            continue
        out.append(
            EndpointSubset(
                addresses=_sorted_addresses(ready_set.values()),
                not_ready_addresses=_sorted_addresses(not_ready_set.values()),
                ports=[
                    EndpointsPort(
                        name=name or None, protocol=protocol, port=port, app_protocol=app or None
                    )
                    for name, protocol, port, app in ports
                ],
            )
        )
    labels = dict(svc.metadata.labels)
    if svc.spec.cluster_ip == "None":
        labels[LABEL_HEADLESS] = ""
    return Endpoints(
        metadata=ObjectMeta(
            name=svc.metadata.name, namespace=svc.metadata.namespace, labels=sorted_map(labels)
        ),
        subsets=out,
    )


# A slice endpoint's address as the endpoints controller reads it: the
# address, whether the endpoint is terminating, whether it is ready
# (conditions.ready unset counts as ready), and the address's order (None
# when it is not an IP).
AddressEntry = tuple[EndpointAddress, bool, bool, tuple[int, int] | None]


def slice_entries(eps: EndpointSlice) -> tuple[AddressEntry, ...]:
    """Every address of every endpoint of `eps`, in order."""
    out: list[AddressEntry] = []
    for endpoint in eps.endpoints:
        cond = endpoint.conditions
        ready = cond.ready is None or bool(cond.ready)
        for ip in endpoint.addresses:
            address = EndpointAddress(
                ip=ip,
                hostname=endpoint.hostname,
                node_name=endpoint.node_name,
                target_ref=endpoint.target_ref,
            )
            try:
                order: tuple[int, int] | None = _ip_order(ip)
            except ValueError:
                order = None
            out.append((address, bool(cond.terminating), ready, order))
    return tuple(out)


def _sorted_addresses(entries: Iterable[AddressEntry]) -> list[EndpointAddress]:
    """The entries' addresses by IP (an address that is not an IP fails, as
    sorting it by _ip_order would)."""
    return [entry[0] for entry in sorted(entries, key=_entry_order)]


def _entry_order(entry: AddressEntry) -> tuple[int, int]:
    address, _, _, order = entry
    return order if order is not None else _ip_order(address.ip)


def _primary_family(svc: Service) -> str | None:
    """The family the endpoints controller takes pod IPs of; None for a
    headless Service without ipFamilies (then each pod's own)."""
    if svc.spec.ip_families:
        return svc.spec.ip_families[0]
    ip = svc.spec.cluster_ip
    if ip and ip != "None":
        return "IPv6" if ":" in ip else "IPv4"
    return None


def _ip_order(ip: str) -> tuple[int, int]:
    parsed = ipaddress.ip_address(ip)
    return parsed.version, int(parsed)
