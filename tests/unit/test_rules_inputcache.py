"""ProxyInputCache (netemu.rules.inputcache): across a sequence of changes
through the API, its service ports and endpoints equal a fresh conversion of
the whole state, and it converts exactly the objects that changed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import netaddr
import pytest

from netemu.api.core import EndpointSlice, Service
from netemu.controlplane import LocalClient, Store
from netemu.pipeline import load_cluster
from netemu.rules.input import IPFamily, endpoints_by_port, service_ports
from netemu.rules.inputcache import ProxyInputCache


def service(name: str, ip: str, *ports: int) -> Service:
    doc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "clusterIP": ip,
            "ports": [{"name": f"p{port}", "port": port, "protocol": "TCP"} for port in ports],
        },
    }
    return Service.model_validate(doc)


def endpoint_slice(name: str, service: str, *ips: str, ready: bool = True) -> EndpointSlice:
    doc = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": ready}, "nodeName": "node-0"} for ip in ips
        ],
        "ports": [{"name": "p80", "port": 8080, "protocol": "TCP"}],
    }
    return EndpointSlice.model_validate(doc)


class Check:
    """A store, a cache, and a comparison with a fresh conversion after each change."""

    def __init__(self) -> None:
        self.client = LocalClient(Store())
        self.cache = ProxyInputCache()

    def step(self, converted: tuple[int, int]) -> None:
        services = self.client.list(Service).items
        slices = self.client.list(EndpointSlice).items
        ports = self.cache.service_ports(services)
        endpoints = self.cache.endpoints_by_port(slices)
        assert ports == tuple(service_ports(services))
        fresh = endpoints_by_port(slices)
        assert endpoints == fresh
        assert list(endpoints) == list(fresh)  # the same order of ports, too
        assert self.cache.converted == converted

    def replace(self, new: Any) -> None:
        current = self.client.get(type(new), "ns", new.metadata.name)
        self.client.update(new.model_copy(update={"metadata": current.metadata}))


def test_the_cache_follows_added_changed_and_deleted_services_and_slices() -> None:
    check = Check()
    check.client.create(service("a", "10.96.0.10", 80))
    check.client.create(service("b", "10.96.0.11", 80, 443))
    check.client.create(endpoint_slice("a-1", "a", "10.0.0.1", "10.0.0.2"))
    check.client.create(endpoint_slice("b-1", "b", "10.0.1.1"))
    check.step(converted=(2, 2))
    check.step(converted=(0, 0))  # nothing changed: nothing converted
    check.replace(service("b", "10.96.0.11", 80))  # a port less
    check.step(converted=(1, 0))
    check.client.create(service("c", "10.96.0.12", 80))
    check.client.create(endpoint_slice("c-1", "c", "10.0.2.1"))
    check.step(converted=(1, 1))
    check.replace(endpoint_slice("a-1", "a", "10.0.0.1", "10.0.0.3"))  # an endpoint moves
    check.step(converted=(0, 1))
    check.replace(endpoint_slice("a-1", "a", "10.0.0.1", "10.0.0.3", ready=False))
    check.step(converted=(0, 1))
    check.client.delete(EndpointSlice, "ns", "b-1")
    check.step(converted=(0, 0))
    check.client.delete(Service, "ns", "a")
    check.step(converted=(0, 0))
    assert [sp.name for sp in check.cache.service_ports(check.client.list(Service).items)] == [
        "b",
        "c",
    ]
    # Re-created under an old name: a new object, converted again.
    check.client.create(service("a", "10.96.0.20", 80))
    check.step(converted=(1, 0))


def test_slices_of_one_service_merge_as_endpoints_by_port() -> None:
    """Two slices of one port: the merged endpoints are sorted, and the
    first slice's endpoint wins for an address both hold (here, as not ready)."""
    check = Check()
    check.client.create(service("a", "10.96.0.10", 80))
    check.client.create(endpoint_slice("a-1", "a", "10.0.0.9", "10.0.0.5", ready=False))
    check.client.create(endpoint_slice("a-2", "a", "10.0.0.5", "10.0.0.1"))
    check.step(converted=(1, 2))
    merged = check.cache.endpoints_by_port(check.client.list(EndpointSlice).items)
    assert [(e.ip, e.ready) for e in merged[("ns", "a", "p80", "tcp")]] == [
        ("10.0.0.1", True),
        ("10.0.0.5", False),
        ("10.0.0.9", False),
    ]
    check.replace(endpoint_slice("a-2", "a", "10.0.0.5"))
    check.step(converted=(0, 1))


def test_an_unchanged_state_gives_the_very_last_result() -> None:
    check = Check()
    check.client.create(service("a", "10.96.0.10", 80))
    check.client.create(endpoint_slice("a-1", "a", "10.0.0.1"))
    services, slices = check.client.list(Service).items, check.client.list(EndpointSlice).items
    ports = check.cache.service_ports(services)
    endpoints = check.cache.endpoints_by_port(slices)
    # Copies with the same uid and resourceVersion (a remote client's) count as the same.
    assert check.cache.service_ports(copy.deepcopy(services)) is ports
    assert check.cache.endpoints_by_port(copy.deepcopy(slices)) is endpoints
    assert check.cache.converted == (0, 0)


@pytest.mark.parametrize("kind", ["Service", "EndpointSlice"])
def test_an_object_without_a_resource_version_is_the_same_only_as_itself(kind: str) -> None:
    """Objects that were never stored (the offline pipeline's copies) have
    no resourceVersion: an equal copy is converted again, not trusted."""
    cache = ProxyInputCache()
    if kind == "Service":
        svc = service("a", "10.96.0.10", 80)
        cache.service_ports((svc,))
        cache.service_ports((svc.model_copy(),))
        assert cache.converted[0] == 1
    else:
        eps = endpoint_slice("a-1", "a", "10.0.0.1")
        cache.endpoints_by_port((eps,))
        cache.endpoints_by_port((eps.model_copy(),))
        assert cache.converted[1] == 1


@pytest.mark.parametrize("family", ["IPv4", "IPv6"])
def test_a_cache_converts_for_its_own_ip_family(family: IPFamily) -> None:
    """Each family's proxiers share a cache of that family: on the dual-stack
    lab, each cache gives exactly its family's service ports and endpoints."""
    state = load_cluster([Path(__file__).parents[2] / "controlplane" / "dualstack"])
    cache = ProxyInputCache(family)
    ports = cache.service_ports(state.services)
    endpoints = cache.endpoints_by_port(state.endpoint_slices)
    assert ports == tuple(service_ports(state.services, family))
    assert endpoints == endpoints_by_port(state.endpoint_slices, family)
    want = 6 if family == "IPv6" else 4
    assert ports and all(netaddr.IPAddress(sp.cluster_ip).version == want for sp in ports)
    assert all(netaddr.IPAddress(ep.ip).version == want for eps in endpoints.values() for ep in eps)
