"""Converting Services and EndpointSlices to kube-proxy's input one object
at a time, remembering each object's conversion while the object stays
the same.

kube-proxy does the same: its change trackers (pkg/proxy/servicechangetracker.go,
endpointschangetracker.go) convert only the Service or EndpointSlice an
informer event names, and keep everything else from the last sync. netemu's
agents read the whole state on each sync instead (a level-triggered
reconcile), so without this cache one endpoint change at 5,000 Services
converted 5,000 Services and 5,000 EndpointSlices again on every node.

An object counts as the same when it is the very object converted before
(the in-process store hands out its stored objects, which a write replaces
and never changes), or when it has the same uid and resourceVersion (which
the API server changes on every write; a remote client's copies). A cache
serves one IP family's proxiers (kube-proxy runs one per family). The
result is equal to `service_ports(services, family)` and
`endpoints_by_port(slices, family)` of the whole lists, and when no object
changed it is the very result of the last call, so comparing two syncs'
inputs stops at the first identical item.

Owns: the memo of per-object conversions. Pure: no I/O. Thread-safe (one
cache may serve every node's agent).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from netemu.api.core import EndpointSlice, Service
from netemu.rules.input import (
    EndpointInfo,
    IPFamily,
    ServicePortInfo,
    endpoints_by_port,
    service_ports,
)

PortKey = tuple[str, str, str, str]  # (namespace, service, port name, protocol)
PortOrder = tuple[str, str]  # service_ports' sort key: (ns/name:port, protocol)

Obj = TypeVar("Obj", Service, EndpointSlice)
R = TypeVar("R")


def _same(a: Service | EndpointSlice, b: Service | EndpointSlice) -> bool:
    if a is b:
        return True
    ma, mb = a.metadata, b.metadata
    return bool(
        ma.resource_version
        and ma.resource_version == mb.resource_version
        and ma.uid
        and ma.uid == mb.uid
    )


@dataclass
class _Memo(Generic[Obj, R]):
    """Each object's conversion by (namespace, name), and the last whole list
    and whole result."""

    entries: dict[tuple[str, str], tuple[Obj, R]] = field(default_factory=dict)
    last_objects: Sequence[Obj] | None = None
    converted: int = 0  # objects converted by the last call (not found in the memo)

    def each(self, objects: Sequence[Obj], convert: Callable[[Obj], R]) -> list[R] | None:
        """Every object's conversion, in order; None when every object is
        one of the last call, in the same order (the last result stands)."""
        if objects is self.last_objects:
            self.converted = 0
            return None
        entries: dict[tuple[str, str], tuple[Obj, R]] = {}
        results: list[R] = []
        converted = 0
        for obj in objects:
            key = (obj.metadata.namespace or "", obj.metadata.name or "")
            hit = self.entries.get(key)
            if hit is not None and _same(hit[0], obj):
                result = hit[1]
            else:
                result = convert(obj)
                converted += 1
            entries[key] = (obj, result)
            results.append(result)
        unchanged = not converted and list(entries) == list(self.entries)
        self.entries = entries  # only the objects that still exist stay
        self.last_objects = objects
        self.converted = converted
        return None if unchanged else results


def _convert_service(
    obj: Service, family: IPFamily
) -> tuple[tuple[PortOrder, ServicePortInfo], ...]:
    return tuple(((sp.name_string, sp.protocol), sp) for sp in service_ports((obj,), family))


class ProxyInputCache:
    """service_ports and endpoints_by_port over the whole state, converting
    only the objects that changed since the last call (see the module)."""

    def __init__(self, family: IPFamily = "IPv4") -> None:
        self.family: IPFamily = family
        self._lock = threading.Lock()
        self._services: _Memo[Service, tuple[tuple[PortOrder, ServicePortInfo], ...]] = _Memo()
        self._slices: _Memo[EndpointSlice, dict[PortKey, tuple[EndpointInfo, ...]]] = _Memo()
        self._ports: tuple[ServicePortInfo, ...] = ()
        self._endpoints: dict[PortKey, tuple[EndpointInfo, ...]] = {}

    @property
    def converted(self) -> tuple[int, int]:
        """(Services, EndpointSlices) the last calls converted."""
        return self._services.converted, self._slices.converted

    def service_ports(self, services: Sequence[Service]) -> tuple[ServicePortInfo, ...]:
        """= tuple(service_ports(services, self.family))."""
        with self._lock:
            each = self._services.each(services, lambda svc: _convert_service(svc, self.family))
            if each is not None:
                pairs = [pair for ports in each for pair in ports]
                # service_ports' order: by (name string, protocol); the sort
                # is stable and no two ports share a key (port names are
                # unique within a Service), as in one service_ports call.
                pairs.sort(key=_order)
                self._ports = tuple(sp for _, sp in pairs)
            return self._ports

    def endpoints_by_port(
        self, slices: Sequence[EndpointSlice]
    ) -> dict[PortKey, tuple[EndpointInfo, ...]]:
        """= endpoints_by_port(slices, self.family). Do not change the result:
        it is shared."""
        with self._lock:
            each = self._slices.each(slices, lambda eps: endpoints_by_port((eps,), self.family))
            if each is not None:
                self._endpoints = _merge(each)
            return self._endpoints


def _order(pair: tuple[PortOrder, ServicePortInfo]) -> PortOrder:
    return pair[0]


def _merge(
    per_slice: list[dict[PortKey, tuple[EndpointInfo, ...]]],
) -> dict[PortKey, tuple[EndpointInfo, ...]]:
    """endpoints_by_port's merge of several slices of one service port: the
    first slice's endpoint wins for an `ip:port` two slices hold, and the
    merged endpoints are sorted by that text. A port with one slice keeps
    that slice's tuple (already sorted)."""
    first: dict[PortKey, tuple[EndpointInfo, ...]] = {}
    more: dict[PortKey, list[tuple[EndpointInfo, ...]]] = {}
    for converted in per_slice:
        for key, endpoints in converted.items():
            if key in first:
                more.setdefault(key, [first[key]]).append(endpoints)
            else:
                first[key] = endpoints
    for key, parts in more.items():
        bucket: dict[str, EndpointInfo] = {}
        for endpoints in parts:
            for info in endpoints:
                bucket.setdefault(info.text, info)
        first[key] = tuple(bucket[text] for text in sorted(bucket))
    # endpoints_by_port's dict order is that of the first slice of each key.
    return first
