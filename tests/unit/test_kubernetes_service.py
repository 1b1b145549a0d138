"""The `default/kubernetes` Service a live lab adds (netemu.controlplane.addons)
and the stand-in API server behind it (netemu.node.apiserver)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509

from netemu.api.config import Lab
from netemu.api.core import EndpointSlice, Service
from netemu.api.load import load_paths
from netemu.controlplane import ControlPlane, LocalClient, Store, apply_objects
from netemu.controlplane.addons import KubernetesServiceController
from netemu.node import apiserver

ROOT = Path(__file__).parents[2]


def running_plane() -> tuple[LocalClient, ControlPlane]:
    client = LocalClient(Store())
    plane = ControlPlane(client)
    apply_objects(client, [item.obj for item in load_paths([ROOT / "controlplane" / "default"])])
    plane.run_to_fixed_point()
    return client, plane


def lab_of(client: LocalClient) -> Lab:
    return client.list(Lab).items[0]


def test_kubernetes_service_and_slice_as_the_api_server_writes_them() -> None:
    client, plane = running_plane()
    plane.controllers.append(KubernetesServiceController(client, lab_of(client)))
    plane.run_to_fixed_point()
    svc = client.get(Service, "default", "kubernetes")
    assert svc.spec.cluster_ip == "10.96.0.1"
    assert svc.spec.selector in (None, {})
    assert svc.metadata.labels == {"component": "apiserver", "provider": "kubernetes"}
    assert [(p.name, p.port, p.protocol, p.target_port) for p in svc.spec.ports] == [
        ("https", 443, "TCP", 6443)
    ]
    eps = client.get(EndpointSlice, "default", "kubernetes")
    assert eps.metadata.labels == {"kubernetes.io/service-name": "kubernetes"}
    assert eps.address_type == "IPv4"
    assert [(e.addresses, e.conditions.ready) for e in eps.endpoints] == [(["192.168.56.11"], True)]
    assert [(p.name, p.port, p.protocol) for p in eps.ports] == [("https", 6443, "TCP")]


def test_changed_or_deleted_slice_and_service_are_put_back() -> None:
    client, plane = running_plane()
    plane.controllers.append(KubernetesServiceController(client, lab_of(client)))
    plane.run_to_fixed_point()
    eps = client.get(EndpointSlice, "default", "kubernetes")
    client.update(eps.model_copy(update={"endpoints": []}))
    plane.run_to_fixed_point()
    assert client.get(EndpointSlice, "default", "kubernetes").endpoints[0].addresses == [
        "192.168.56.11"
    ]
    client.delete(Service, "default", "kubernetes")
    client.delete(EndpointSlice, "default", "kubernetes")
    plane.run_to_fixed_point()
    assert client.get(Service, "default", "kubernetes").spec.cluster_ip == "10.96.0.1"
    assert client.get(EndpointSlice, "default", "kubernetes").endpoints


def test_no_dynamic_cluster_ip_is_the_first_address() -> None:
    client, _ = running_plane()
    ips = {s.spec.cluster_ip for s in client.list(Service).items}
    assert "10.96.0.1" not in ips
    assert ips  # the default lab's Services got addresses


def test_certificate_names_the_service_and_the_node() -> None:
    cert_pem, _ = apiserver.self_signed(
        apiserver.certificate_names("cluster.local", "node-1"), ["10.96.0.1", "192.168.56.11"]
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(alt.get_values_for_type(x509.DNSName)) == {
        "node-1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    }
    assert set(alt.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.96.0.1"),
        ipaddress.ip_address("192.168.56.11"),
    }


def test_stand_in_answers_what_an_api_server_answers_anonymous_clients() -> None:
    async def run() -> None:
        async with TestClient(TestServer(apiserver.app())) as client:
            for path in ("/healthz", "/livez", "/readyz"):
                response = await client.get(path)
                assert (response.status, await response.text()) == (200, "ok")
            version = await client.get("/version")
            assert version.status == 200
            assert json.loads(await version.text())["gitVersion"].startswith("v1.")
            denied = await client.get("/api/v1/pods")
            assert denied.status == 403
            assert await denied.json() == apiserver.forbidden_status("/api/v1/pods")
            assert (await denied.json())["message"] == (
                'forbidden: User "system:anonymous" cannot get path "/api/v1/pods"'
            )

    asyncio.run(run())
