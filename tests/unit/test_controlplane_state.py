"""build_cluster_state end to end: input handling, the snapshot, the
fixed-point runner, and determinism (same input, byte-identical output)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from manifests import objects

from netemu.api.base import K8sModel
from netemu.api.config import KubeProxyConfiguration, Lab
from netemu.api.core import Pod, Service
from netemu.api.load import load_paths
from netemu.controlplane import (
    ClusterState,
    ControlPlane,
    FixedPointError,
    LocalClient,
    Store,
    apply_objects,
    build_cluster_state,
    run_to_fixed_point,
)
from netemu.controlplane.client import Client

DEMO = Path(__file__).parent / "data" / "controlplane" / "demo"


def demo_objects() -> list[K8sModel]:
    return [item.obj for item in load_paths([DEMO])]


def as_json(state: ClusterState) -> str:
    groups: dict[str, Any] = {
        name: [obj.to_dict() for obj in getattr(state, name)]
        for name in (
            "nodes",
            "namespaces",
            "services",
            "pods",
            "endpoint_slices",
            "deployments",
            "replica_sets",
            "daemon_sets",
            "stateful_sets",
        )
    }
    groups["lab"] = state.lab.to_dict() if state.lab else None
    groups["proxy_config"] = state.proxy_config.to_dict()
    return json.dumps(groups, indent=1)


def test_two_runs_give_byte_identical_output() -> None:
    def clock() -> datetime.datetime:
        return datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)

    assert as_json(build_cluster_state(demo_objects(), clock)) == as_json(
        build_cluster_state(demo_objects(), clock)
    )


def test_demo_lab_settles_into_the_expected_shape() -> None:
    state = build_cluster_state(demo_objects())
    assert [n.metadata.name for n in state.nodes] == ["node-1", "node-2", "node-3"]
    assert {p.metadata.name for p in state.pods if p.metadata.namespace == "shop"} >= {
        "db-0",
        "db-1",
    }
    # db pods only on ssd nodes; every scheduled non-hostNetwork pod has a pod-CIDR address.
    for pod in state.pods:
        if pod.metadata.name in ("db-0", "db-1"):
            assert pod.spec.node_name in ("node-1", "node-3")
        assert pod.status.phase == "Running"
        if not pod.spec.host_network:
            assert (pod.status.pod_ip or "").startswith("10.244.")
    web = next(s for s in state.services if s.metadata.name == "web")
    assert web.spec.health_check_node_port is not None
    dns = next(s for s in state.services if s.metadata.name == "kube-dns")
    assert dns.spec.cluster_ip == "10.96.0.10"
    assert all(s.spec.cluster_ip != "10.96.0.10" for s in state.services if s is not dns)
    legacy = [s for s in state.endpoint_slices if s.metadata.name == "external-db-1"]
    assert len(legacy) == 1


def test_snapshot_is_sorted_by_namespace_and_name() -> None:
    state = build_cluster_state(demo_objects())
    for group in (state.services, state.pods, state.endpoint_slices):
        keys = [(o.metadata.namespace or "", o.metadata.name or "") for o in group]
        assert keys == sorted(keys)


def test_lab_and_proxy_config_are_returned_as_given() -> None:
    given = demo_objects()
    state = build_cluster_state(given)
    lab = next(o for o in given if isinstance(o, Lab))
    config = next(o for o in given if isinstance(o, KubeProxyConfiguration))
    assert state.lab == lab
    assert state.proxy_config == config


def test_without_lab_or_proxy_config_state_has_defaults() -> None:
    state = build_cluster_state(objects("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n"))
    assert state.lab is None
    assert state.proxy_config == KubeProxyConfiguration()


def test_namespaces_default_used_and_system_ones_exist() -> None:
    state = build_cluster_state(demo_objects())
    names = [ns.metadata.name for ns in state.namespaces]
    assert names == ["default", "kube-node-lease", "kube-public", "kube-system", "shop"]
    shop = next(ns for ns in state.namespaces if ns.metadata.name == "shop")
    assert shop.metadata.labels == {"kubernetes.io/metadata.name": "shop", "team": "shop"}
    assert shop.status == {"phase": "Active"}
    debug = next(p for p in state.pods if p.metadata.name == "debug")
    assert debug.metadata.namespace == "default"


def test_later_duplicate_replaces_earlier_object() -> None:
    state = build_cluster_state(
        objects("""
            apiVersion: v1
            kind: Service
            metadata: {name: web}
            spec: {ports: [{port: 80}]}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: web}
            spec: {ports: [{port: 8080}]}
            """)
    )
    (svc,) = state.services
    assert [p.port for p in svc.spec.ports] == [8080]


def test_server_set_fields_in_input_are_ignored() -> None:
    state = build_cluster_state(
        objects("""
            apiVersion: v1
            kind: Service
            metadata: {name: web, uid: copied-uid, resourceVersion: "999"}
            spec: {ports: [{port: 80}]}
            """)
    )
    (svc,) = state.services
    assert svc.metadata.uid != "copied-uid"
    assert svc.metadata.resource_version != "999"


def test_empty_input_gives_only_system_namespaces() -> None:
    state = build_cluster_state([])
    assert state.nodes == () and state.pods == () and state.services == ()
    assert len(state.namespaces) == 4


# ---------------------------------------------------------------- runner


def test_run_to_fixed_point_settles_and_a_second_run_changes_nothing() -> None:
    client = LocalClient(Store())
    apply_objects(client, demo_objects())
    rounds = run_to_fixed_point(client)
    assert rounds >= 2
    before = client.list(Pod).resource_version
    assert run_to_fixed_point(client) == 1
    assert client.list(Pod).resource_version == before


class Flapper:
    """A broken controller that always writes something."""

    name = "flapper"

    def __init__(self, client: Client) -> None:
        self.client = client
        self.flip = False

    def reconcile(self) -> bool:
        self.flip = not self.flip
        svc = self.client.get(Service, "default", "web")
        labels = {"flip": str(self.flip)}
        self.client.update(
            svc.model_copy(update={"metadata": svc.metadata.model_copy(update={"labels": labels})})
        )
        return True


def test_controllers_that_never_settle_raise() -> None:
    client = LocalClient(Store())
    apply_objects(client, objects("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"))
    with pytest.raises(FixedPointError, match="flapper"):
        ControlPlane(client, [Flapper(client)]).run_to_fixed_point(max_rounds=5)
