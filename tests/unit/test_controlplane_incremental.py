"""What the controllers keep from pass to pass (a pod's endpoints, a slice's
Endpoints addresses) changes how much work a round does, never its result:
the same steps with controllers that forget everything before each pass
write the same objects, in the same order. And the work a StatefulSet under
OrderedReady costs stays linear in its pods although it takes a round per
pod: each pod's endpoints are made a bounded number of times, not once per
round."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable

import pytest
from manifests import objects

from netemu.api.apps import StatefulSet
from netemu.api.core import Endpoints, EndpointSlice, Node, Pod, PodCondition
from netemu.controlplane import ControlPlane, LocalClient, Store, apply_objects
from netemu.controlplane import endpointslice as endpointslice_module
from netemu.controlplane import endpointsmirror as endpointsmirror_module
from netemu.controlplane.client import Client
from netemu.controlplane.common import IdentityMemo
from netemu.controlplane.endpointslice import EndpointSliceController
from netemu.controlplane.endpointsmirror import EndpointsController, slice_entries
from netemu.controlplane.runner import Controller, default_controllers

LAB = """
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  nodes:
  - {name: node-1, underlayIP: 192.168.56.11, podCIDR: 10.244.0.0/22}
  - {name: node-2, underlayIP: 192.168.56.12, podCIDR: 10.244.4.0/22}
  - {name: node-3, underlayIP: 192.168.56.13, podCIDR: 10.244.8.0/22}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: db-rw}
spec:
  selector: {app: db}
  ports: [{name: pg, port: 5432, targetPort: pg}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  podManagementPolicy: POLICY
  replicas: REPLICAS
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: postgres
        image: postgres:16
        ports: [{name: pg, containerPort: 5432}]
"""


class ForgetfulEndpointSlices(EndpointSliceController):
    """The EndpointSlice controller as if it kept nothing between passes."""

    def reconcile(self) -> bool:
        self._made = {}
        return super().reconcile()


class ForgetfulEndpoints(EndpointsController):
    """The endpoints controller as if it kept nothing between passes."""

    def reconcile(self) -> bool:
        self._entries = IdentityMemo(slice_entries)
        return super().reconcile()


def fixed_clock() -> datetime.datetime:
    return datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def forgetful(client: Client) -> list[Controller]:
    controllers = default_controllers(client, clock=fixed_clock)
    for i, controller in enumerate(controllers):
        if isinstance(controller, EndpointSliceController):
            controllers[i] = ForgetfulEndpointSlices(client)
        elif isinstance(controller, EndpointsController):
            controllers[i] = ForgetfulEndpoints(client)
    return controllers


def lab(replicas: int, policy: str) -> str:
    return LAB.replace("REPLICAS", str(replicas)).replace("POLICY", policy)


def dump(client: Client) -> str:
    """Every object the steps touch, all fields (resourceVersions too: the
    same writes in the same order; the clock is fixed)."""
    kinds = (Pod, EndpointSlice, Endpoints, StatefulSet, Node)
    return json.dumps(
        {
            kind.__name__: [
                item.model_dump(mode="json", by_alias=True) for item in client.list(kind).items
            ]
            for kind in kinds
        },
        sort_keys=True,
    )


def set_ready(client: Client, name: str, ready: bool) -> None:
    pod = client.get(Pod, "default", name)
    conditions = [
        PodCondition(type=c.type, status="True" if ready else "False")
        if c.type in ("Ready", "ContainersReady")
        else c
        for c in pod.status.conditions
    ]
    status = pod.status.model_copy(update={"conditions": conditions})
    client.update(pod.model_copy(update={"status": status}))


def change_set(client: Client, **fields: object) -> None:
    sts = client.get(StatefulSet, "default", "db")
    client.update(sts.model_copy(update={"spec": sts.spec.model_copy(update=fields)}))


def change_image(client: Client, image: str) -> None:
    template = client.get(StatefulSet, "default", "db").spec.template
    containers = [c.model_copy(update={"image": image}) for c in template.spec.containers]
    spec = template.spec.model_copy(update={"containers": containers})
    change_set(client, template=template.model_copy(update={"spec": spec}))


def set_zone(client: Client, node_name: str, zone: str) -> None:
    node = client.get(Node, None, node_name)
    labels = {**node.metadata.labels, "topology.kubernetes.io/zone": zone}
    client.update(
        node.model_copy(update={"metadata": node.metadata.model_copy(update={"labels": labels})})
    )


Step = Callable[[Client], None]

STEPS: dict[str, list[Step]] = {
    "settle": [],
    "not ready, then ready again": [
        lambda c: set_ready(c, "db-3", False),
        lambda c: set_ready(c, "db-3", True),
    ],
    "a node's zone": [lambda c: set_zone(c, "node-2", "zone-b")],
    "rolling update above a partition": [
        lambda c: change_set(
            c, update_strategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 80}}
        ),
        lambda c: change_image(c, "postgres:17"),
    ],
    "scale down": [lambda c: change_set(c, replicas=90)],
    "scale up": [lambda c: change_set(c, replicas=201)],
}


def run(make: Callable[[Client], list[Controller]] | None, text: str, steps: list[Step]) -> str:
    """The state after settling `text`, then after each step and settling again."""
    client = LocalClient(Store(clock=fixed_clock))
    plane = ControlPlane(client, controllers=make(client) if make else None, clock=fixed_clock)
    apply_objects(client, objects(text))
    snapshots = []
    plane.run_to_fixed_point()
    snapshots.append(dump(client))
    for step in steps:
        step(client)
        plane.run_to_fixed_point()
        snapshots.append(dump(client))
    return "\n".join(snapshots)


@pytest.mark.parametrize("policy", ["OrderedReady", "Parallel"])
@pytest.mark.parametrize("case", list(STEPS))
def test_kept_work_writes_what_controllers_that_keep_nothing_write(policy: str, case: str) -> None:
    text = lab(101, policy)  # two slices of each Service, then three
    assert run(None, text, STEPS[case]) == run(forgetful, text, STEPS[case])


def test_ordered_set_pods_ordinals_and_addresses() -> None:
    replicas = 201  # three slices of each Service
    client = LocalClient(Store())
    plane = ControlPlane(client)
    apply_objects(client, objects(lab(replicas, "OrderedReady")))
    rounds = plane.run_to_fixed_point()
    # One pod per round, then a round that settles the last one's status
    # and one that changes nothing.
    assert rounds == replicas + 2
    pods = {p.metadata.name or "": p for p in client.list(Pod).items}
    assert sorted(pods) == sorted(f"db-{i}" for i in range(replicas))
    for i in range(replicas):
        pod = pods[f"db-{i}"]
        assert pod.metadata.labels["apps.kubernetes.io/pod-index"] == str(i)
        # Created in ordinal order and spread evenly: node i % 3, each node's
        # host-local handing out .2, .3, ... in turn.
        node = i % 3
        assert pod.spec.node_name == f"node-{node + 1}"
        offset = i // 3 + 2
        assert pod.status.pod_ip == f"10.244.{4 * node + offset // 256}.{offset % 256}"
    for service in ("db", "db-rw"):
        slices = client.list(EndpointSlice, labels={"kubernetes.io/service-name": service}).items
        addresses = sorted(a for s in slices for e in s.endpoints for a in e.addresses)
        assert addresses == sorted(p.status.pod_ip or "" for p in pods.values())
        assert all(len(s.endpoints) <= 100 for s in slices)


def test_ordered_set_makes_each_endpoint_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = {"endpoints": 0, "slice entries": 0}
    make_endpoints = endpointslice_module.pod_to_endpoint
    make_entries = endpointsmirror_module.slice_entries

    def counted_endpoints(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["endpoints"] += 1
        return make_endpoints(*args, **kwargs)

    def counted_entries(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["slice entries"] += 1
        return make_entries(*args, **kwargs)

    monkeypatch.setattr(endpointslice_module, "pod_to_endpoint", counted_endpoints)
    monkeypatch.setattr(endpointsmirror_module, "slice_entries", counted_entries)
    replicas = 150
    client = LocalClient(Store())
    plane = ControlPlane(client)  # made after the patch: its memos call the counters
    apply_objects(client, objects(lab(replicas, "OrderedReady")))
    rounds = plane.run_to_fixed_point()
    assert rounds == replicas + 2
    # Each pod's endpoint is made once per Service for each version of the
    # pod with an address (two here: the pod is written once more after its
    # address), not once per round the pod exists in (about replicas² / 2).
    assert calls["endpoints"] <= 2 * 2 * replicas
    # A round adds one endpoint to one slice of each Service: the Endpoints
    # controller reads that slice's addresses again, not every slice's.
    assert calls["slice entries"] <= 2 * rounds + 10
