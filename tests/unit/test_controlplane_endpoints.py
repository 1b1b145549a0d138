"""v1 Endpoints: mirrored into EndpointSlices for Services without selectors
(the endpointslicemirroring controller), and written by the endpoints
controller for Services with selectors."""

from __future__ import annotations

from manifests import build, objects

from netemu.api.core import Endpoints, EndpointSlice
from netemu.cli_table import format_endpoints
from netemu.controlplane import ControlPlane, LocalClient, Store, apply_objects
from netemu.controlplane.endpointsmirror import MAX_MIRRORED_PER_SUBSET

LAB = """
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  nodes:
  - {name: node-1, underlayIP: 192.168.56.11}
  - {name: node-2, underlayIP: 192.168.56.12}
"""

SELECTORLESS = """
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  ports: [{name: sql, port: 5432}]
---
apiVersion: v1
kind: Endpoints
metadata:
  name: db
  labels: {team: data}
  annotations:
    note: kept
    endpoints.kubernetes.io/last-change-trigger-time: "2026-01-01T00:00:00Z"
subsets:
- addresses: [{ip: 192.0.2.10, nodeName: node-1, hostname: db-0}, {ip: 192.0.2.11}]
  notReadyAddresses: [{ip: 192.0.2.12}]
  ports: [{name: sql, port: 5432}]
- addresses: [{ip: "2001:db8::1"}]
  ports: [{name: sql, port: 5432}]
"""


def mirrored(slices: tuple[EndpointSlice, ...], service: str) -> list[EndpointSlice]:
    return [
        s
        for s in slices
        if s.metadata.labels.get("kubernetes.io/service-name") == service
        and s.metadata.labels.get("endpointslice.kubernetes.io/managed-by")
        == "endpointslicemirroring-controller.k8s.io"
    ]


def test_endpoints_of_a_selectorless_service_are_mirrored() -> None:
    state = build(LAB + SELECTORLESS)
    slices = sorted(mirrored(state.endpoint_slices, "db"), key=lambda s: s.address_type)
    assert [s.address_type for s in slices] == ["IPv4", "IPv6"]
    v4 = slices[0]
    assert [(e.addresses, e.conditions.ready) for e in v4.endpoints] == [
        (["192.0.2.10"], True),
        (["192.0.2.11"], True),
        (["192.0.2.12"], False),
    ]
    assert v4.endpoints[0].node_name == "node-1" and v4.endpoints[0].hostname == "db-0"
    assert [(p.name, p.protocol, p.port) for p in v4.ports] == [("sql", "TCP", 5432)]
    assert v4.metadata.labels == {
        "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io",
        "kubernetes.io/service-name": "db",
        "team": "data",
    }
    assert v4.metadata.annotations == {"note": "kept"}
    assert (v4.metadata.name or "").startswith("db-")
    (owner,) = v4.metadata.owner_references
    assert (owner.kind, owner.name, owner.controller) == ("Endpoints", "db", True)
    # The Service has no selector: the endpoints controller leaves its Endpoints alone.
    (endpoints,) = [e for e in state.endpoints if e.metadata.name == "db"]
    assert len(endpoints.subsets) == 2


def test_no_mirroring_with_skip_label_selector_or_without_service() -> None:
    skip = SELECTORLESS.replace(
        "labels: {team: data}",
        'labels: {team: data, endpointslice.kubernetes.io/skip-mirror: "true"}',
    )
    assert mirrored(build(LAB + skip).endpoint_slices, "db") == []
    no_service = SELECTORLESS.split("---", 2)[2]
    assert mirrored(build(LAB + "---" + no_service).endpoint_slices, "db") == []


def test_mirrored_slices_follow_changes_and_deletion() -> None:
    client = LocalClient(Store())
    plane = ControlPlane(client)
    apply_objects(client, objects(LAB + SELECTORLESS))
    plane.run_to_fixed_point()
    endpoints = client.get(Endpoints, "default", "db")
    subset = endpoints.subsets[0].model_copy(update={"not_ready_addresses": []})
    client.update(endpoints.model_copy(update={"subsets": [subset]}))
    plane.run_to_fixed_point()
    (v4,) = mirrored(client.list(EndpointSlice).items, "db")
    assert [e.addresses[0] for e in v4.endpoints] == ["192.0.2.10", "192.0.2.11"]
    client.delete(Endpoints, "default", "db")
    plane.run_to_fixed_point()
    assert mirrored(client.list(EndpointSlice).items, "db") == []


def test_at_most_1000_addresses_of_a_subset_are_mirrored() -> None:
    addresses = ", ".join(f"{{ip: 10.1.{i // 250}.{i % 250 + 1}}}" for i in range(1002))
    text = SELECTORLESS.replace(
        "- addresses: [{ip: 192.0.2.10, nodeName: node-1, hostname: db-0}, {ip: 192.0.2.11}]",
        f"- addresses: [{addresses}]",
    )
    v4 = [s for s in mirrored(build(LAB + text).endpoint_slices, "db") if s.address_type == "IPv4"]
    assert sum(len(s.endpoints) for s in v4) == MAX_MIRRORED_PER_SUBSET


SELECTED = """
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: agnhost, ports: [{containerPort: 8080, name: http}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, labels: {tier: front}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""


def test_endpoints_controller_writes_endpoints_for_selected_pods() -> None:
    state = build(LAB + SELECTED)
    (endpoints,) = [e for e in state.endpoints if e.metadata.name == "web"]
    assert endpoints.metadata.labels == {"tier": "front"}
    (subset,) = endpoints.subsets
    pod_ips = sorted(
        p.status.pod_ip or "" for p in state.pods if p.metadata.labels.get("app") == "web"
    )
    assert [a.ip for a in subset.addresses] == pod_ips
    assert {a.target_ref.name for a in subset.addresses if a.target_ref} == {
        p.metadata.name for p in state.pods if p.metadata.labels.get("app") == "web"
    }
    assert [(p.name, p.port, p.protocol) for p in subset.ports] == [("http", 8080, "TCP")]
    assert format_endpoints(endpoints) == ",".join(f"{ip}:8080" for ip in pod_ips)
    # Its own slices are not mirrored back.
    assert mirrored(state.endpoint_slices, "web") == []


def test_format_endpoints_as_kubectl() -> None:
    state = build(LAB + SELECTORLESS)
    (endpoints,) = [e for e in state.endpoints if e.metadata.name == "db"]
    # Ready addresses only; the first three, then how many more.
    assert format_endpoints(endpoints) == "192.0.2.10:5432,192.0.2.11:5432,[2001:db8::1]:5432"
    assert format_endpoints(endpoints, shown=1) == "192.0.2.10:5432 + 2 more..."
    assert format_endpoints(Endpoints.model_validate({"metadata": {"name": "x"}})) == "<none>"
