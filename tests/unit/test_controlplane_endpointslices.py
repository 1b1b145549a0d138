"""The EndpointSlice controller: which pods become endpoints, their
conditions, ports (named targetPorts resolved per pod), slicing, naming,
labels and ownership, user-supplied slices, and updates in a running lab."""

from __future__ import annotations

import ipaddress

from manifests import build, objects, running

from netemu.api.apps import Deployment
from netemu.api.core import Endpoint, EndpointSlice, Pod, PodCondition, Service
from netemu.controlplane import (
    ClusterState,
)
from netemu.controlplane.client import Client
from netemu.controlplane.names import ALPHANUMS

LAB = """
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  nodes:
  - {name: node-1, underlayIP: 192.168.56.11, labels: {topology.kubernetes.io/zone: zone-a}}
  - {name: node-2, underlayIP: 192.168.56.12}
"""

MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SERVICE_NAME = "kubernetes.io/service-name"


def service(name: str = "web", spec: str = "selector: {app: web}, ports: [{port: 80}]") -> str:
    return f"""
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, labels: {{team: blue}}}}
spec: {{{spec}}}
"""


def bare_pod(
    name: str,
    labels: str = "app: web",
    spec: str = "nodeName: node-1, ",
    status: str = "",
    metadata: str = "",
    ports: str = "",
) -> str:
    container = f"{{name: c, ports: [{ports}]}}" if ports else "{name: c}"
    return f"""
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{{labels}}}{metadata}}}
spec: {{{spec}containers: [{container}]}}
{f"status: {{{status}}}" if status else ""}
"""


def slices_of(state: ClusterState | Client, svc: str) -> list[EndpointSlice]:
    items = (
        state.endpoint_slices
        if isinstance(state, ClusterState)
        else state.list(EndpointSlice).items
    )
    return [s for s in items if s.metadata.labels.get(SERVICE_NAME) == svc]


def endpoint(state: ClusterState, pod_name: str) -> Endpoint:
    for eps in state.endpoint_slices:
        for ep in eps.endpoints:
            if ep.target_ref is not None and ep.target_ref.name == pod_name:
                return ep
    raise KeyError(pod_name)


def endpoint_names(slices: list[EndpointSlice]) -> list[str]:
    return sorted(
        ep.target_ref.name or "" for s in slices for ep in s.endpoints if ep.target_ref is not None
    )


def conds(ep: Endpoint) -> tuple[bool | None, bool | None, bool | None]:
    return ep.conditions.ready, ep.conditions.serving, ep.conditions.terminating


# ---------------------------------------------------------------- membership and conditions


def test_ready_pod_becomes_a_ready_endpoint_with_node_and_target_ref() -> None:
    state = build(LAB + service() + bare_pod("a"))
    (eps,) = slices_of(state, "web")
    (ep,) = eps.endpoints
    pod = state.pods[0]
    assert ep.addresses == [pod.status.pod_ip]
    assert conds(ep) == (True, True, False)
    assert ep.node_name == "node-1"
    assert ep.zone == "zone-a"
    assert ep.target_ref is not None
    assert (ep.target_ref.kind, ep.target_ref.namespace, ep.target_ref.name) == (
        "Pod",
        "default",
        "a",
    )
    assert ep.target_ref.uid == pod.metadata.uid
    assert eps.address_type == "IPv4"


def test_not_ready_and_terminating_pods_get_their_conditions() -> None:
    not_ready = "conditions: [{type: Ready, status: 'False'}]"
    leaving = ", deletionTimestamp: '2024-01-01T00:00:00Z'"
    state = build(
        LAB
        + service()
        + bare_pod("unready", status=not_ready)
        + bare_pod("leaving", metadata=leaving)
        + bare_pod("leaving-unready", metadata=leaving, status=not_ready)
    )
    assert conds(endpoint(state, "unready")) == (False, False, False)
    assert conds(endpoint(state, "leaving")) == (False, True, True)
    assert conds(endpoint(state, "leaving-unready")) == (False, False, True)


def test_publish_not_ready_addresses_makes_every_endpoint_ready() -> None:
    spec = "selector: {app: web}, publishNotReadyAddresses: true, ports: [{port: 80}]"
    leaving = ", deletionTimestamp: '2024-01-01T00:00:00Z'"
    state = build(
        LAB
        + service(spec=spec)
        + bare_pod("unready", status="conditions: [{type: Ready, status: 'False'}]")
        + bare_pod("leaving", metadata=leaving)
    )
    # ready is forced; serving still reports the pod's readiness (as upstream today).
    assert conds(endpoint(state, "unready")) == (True, False, False)
    assert conds(endpoint(state, "leaving")) == (True, True, True)


def test_only_matching_addressed_live_pods_of_the_namespace_are_endpoints() -> None:
    other_ns = bare_pod("elsewhere", metadata=", namespace: other")
    state = build(
        LAB
        + service()
        + bare_pod("good")
        + bare_pod("wrong-label", labels="app: db")
        + bare_pod("pending", spec="nodeSelector: {nope: x}, ")
        + bare_pod("done", status="phase: Succeeded")
        + bare_pod("failed", status="phase: Failed")
        + other_ns
    )
    assert endpoint_names(slices_of(state, "web")) == ["good"]


def test_endpoints_are_sorted_by_address() -> None:
    state = build(
        LAB
        + service()
        + bare_pod("b", spec="nodeName: node-2, ")
        + bare_pod("a", spec="nodeName: node-2, ")
        + bare_pod("c", spec="nodeName: node-1, ")
    )
    (eps,) = slices_of(state, "web")
    addresses = [ipaddress.ip_address(ep.addresses[0]) for ep in eps.endpoints]
    assert addresses == sorted(addresses)
    assert [ep.target_ref.name for ep in eps.endpoints if ep.target_ref] == ["c", "b", "a"]


def test_hostname_is_set_only_when_the_subdomain_is_the_service() -> None:
    sts = """
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: c}]}
"""
    state = build(
        LAB
        + sts
        + service("db", "clusterIP: None, selector: {app: db}, ports: [{port: 5432}]")
        + service("db-read", "selector: {app: db}, ports: [{port: 5432}]")
    )
    (db,) = slices_of(state, "db")
    assert sorted(ep.hostname or "" for ep in db.endpoints) == ["db-0", "db-1"]
    (read,) = slices_of(state, "db-read")
    assert [ep.hostname for ep in read.endpoints] == [None, None]


# ---------------------------------------------------------------- ports


def test_ports_carry_service_port_name_protocol_and_target_port() -> None:
    spec = (
        "selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080},"
        " {name: dns, port: 53, protocol: UDP}]"
    )
    (eps,) = slices_of(build(LAB + service(spec=spec) + bare_pod("a")), "web")
    assert [(p.name, p.protocol, p.port) for p in eps.ports] == [
        ("http", "TCP", 8080),
        ("dns", "UDP", 53),
    ]


def test_unnamed_port_is_written_with_empty_name() -> None:
    (eps,) = slices_of(build(LAB + service() + bare_pod("a")), "web")
    assert [(p.name, p.port) for p in eps.ports] == [("", 80)]


def test_named_target_port_resolved_per_pod_into_separate_slices() -> None:
    spec = "selector: {app: web}, ports: [{name: web, port: 80, targetPort: http}]"
    state = build(
        LAB
        + service(spec=spec)
        + bare_pod("old-1", ports="{name: http, containerPort: 8080}")
        + bare_pod("old-2", ports="{name: http, containerPort: 8080}")
        + bare_pod("new", ports="{name: http, containerPort: 9090}")
        + bare_pod("udp-only", ports="{name: http, containerPort: 7070, protocol: UDP}")
    )
    by_port = {tuple(p.port for p in s.ports): endpoint_names([s]) for s in slices_of(state, "web")}
    assert by_port == {(8080,): ["old-1", "old-2"], (9090,): ["new"], (): ["udp-only"]}


def test_pod_without_the_named_port_is_left_out_of_that_port_only() -> None:
    spec = (
        "selector: {app: web}, ports: [{name: web, port: 80, targetPort: http},"
        " {name: metrics, port: 9100}]"
    )
    state = build(
        LAB
        + service(spec=spec)
        + bare_pod("full", ports="{name: http, containerPort: 8080}")
        + bare_pod("bare")
    )
    by_pod = {
        endpoint_names([s])[0]: [(p.name, p.port) for p in s.ports] for s in slices_of(state, "web")
    }
    assert by_pod == {"full": [("web", 8080), ("metrics", 9100)], "bare": [("metrics", 9100)]}


# ---------------------------------------------------------------- slicing, names, labels


def test_250_pods_make_three_slices_of_at_most_100() -> None:
    deploy = """
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 250
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c}]}
"""
    # 125 pods a node: over the kubelet's default of 110.
    roomy = LAB.replace("192.168.56.11,", "192.168.56.11, maxPods: 125,").replace(
        "192.168.56.12}", "192.168.56.12, maxPods: 125}"
    )
    state = build(roomy + deploy + service())
    slices = slices_of(state, "web")
    assert sorted(len(s.endpoints) for s in slices) == [50, 100, 100]
    addresses = [ep.addresses[0] for s in slices for ep in s.endpoints]
    assert len(set(addresses)) == 250


def test_slice_names_labels_and_owner() -> None:
    state = build(LAB + service() + bare_pod("a"))
    (eps,) = slices_of(state, "web")
    svc = state.services[0]
    name = eps.metadata.name or ""
    assert name.startswith("web-") and len(name) == len("web-") + 5
    assert all(ch in ALPHANUMS for ch in name.removeprefix("web-"))
    assert eps.metadata.labels == {
        MANAGED_BY: "endpointslice-controller.k8s.io",
        SERVICE_NAME: "web",
        "team": "blue",
    }
    (ref,) = eps.metadata.owner_references
    assert (ref.api_version, ref.kind, ref.name, ref.uid) == (
        "v1",
        "Service",
        "web",
        svc.metadata.uid,
    )
    assert ref.controller is True and ref.block_owner_deletion is True


def test_headless_service_slices_carry_the_headless_label() -> None:
    spec = "clusterIP: None, selector: {app: web}, ports: [{port: 80}]"
    (eps,) = slices_of(build(LAB + service(spec=spec) + bare_pod("a")), "web")
    assert eps.metadata.labels["service.kubernetes.io/headless"] == ""


def test_service_without_endpoints_gets_an_empty_placeholder_slice() -> None:
    (eps,) = slices_of(build(LAB + service()), "web")
    assert eps.endpoints == [] and eps.ports == []
    assert eps.metadata.labels[MANAGED_BY] == "endpointslice-controller.k8s.io"


def test_external_name_service_gets_no_slices() -> None:
    spec = "type: ExternalName, externalName: example.com, selector: {app: web}"
    assert slices_of(build(LAB + service(spec=spec) + bare_pod("a")), "web") == []


def test_selectorless_service_keeps_user_slices_as_given() -> None:
    user_slice = """
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: legacy-1
  labels: {kubernetes.io/service-name: legacy}
addressType: IPv4
endpoints:
- addresses: [192.168.56.50]
ports: [{name: http, port: 8080}]
"""
    state = build(LAB + service("legacy", "ports: [{name: http, port: 80}]") + user_slice)
    (eps,) = slices_of(state, "legacy")
    given = objects(user_slice)[0]
    assert isinstance(given, EndpointSlice)
    assert eps.metadata.name == "legacy-1"
    assert eps.metadata.labels == {SERVICE_NAME: "legacy"}
    assert eps.endpoints == given.endpoints and eps.ports == given.ports


# ---------------------------------------------------------------- a running lab


def test_readiness_change_updates_the_same_slice() -> None:
    client, plane = running(LAB + service() + bare_pod("a") + bare_pod("b"))
    (before,) = slices_of(client, "web")
    pod = client.get(Pod, "default", "a")
    conditions = [
        c if c.type != "Ready" else PodCondition(type="Ready", status="False")
        for c in pod.status.conditions
    ]
    client.update(
        pod.model_copy(update={"status": pod.status.model_copy(update={"conditions": conditions})})
    )
    plane.run_to_fixed_point()
    (after,) = slices_of(client, "web")
    assert after.metadata.name == before.metadata.name
    ready = {ep.target_ref.name: ep.conditions.ready for ep in after.endpoints if ep.target_ref}
    assert ready == {"a": False, "b": True}


def test_scale_down_deletes_emptied_slices() -> None:
    deploy = """
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 150
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c}]}
"""
    client, plane = running(LAB + deploy + service())
    before = slices_of(client, "web")
    assert sorted(len(s.endpoints) for s in before) == [50, 100]

    def scale(replicas: int) -> None:
        d = client.get(Deployment, "default", "web")
        client.update(
            d.model_copy(update={"spec": d.spec.model_copy(update={"replicas": replicas})})
        )
        plane.run_to_fixed_point()

    scale(20)
    slices = slices_of(client, "web")
    assert sum(len(s.endpoints) for s in slices) == 20
    assert all(s.endpoints for s in slices)
    assert {s.metadata.name for s in slices} <= {s.metadata.name for s in before}
    scale(0)
    (placeholder,) = slices_of(client, "web")
    assert placeholder.endpoints == [] and placeholder.ports == []


def test_deleting_the_service_deletes_its_slices() -> None:
    client, plane = running(LAB + service() + bare_pod("a"))
    assert slices_of(client, "web")
    client.delete(Service, "default", "web")
    plane.run_to_fixed_point()
    assert slices_of(client, "web") == []
