"""Reading netemu's `get -o json` with the official Kubernetes Python client
(PyPI `kubernetes`), as any client program would: each List deserialised
into the client's typed list (V1PodList, ...), whose pydantic models reject
a missing required field or a value of the wrong type. Shared by the unit
test (offline `get -f`) and the privileged one (a live lab)."""

from __future__ import annotations

import datetime
from typing import Any

from kubernetes.client import ApiClient, Configuration

# `netemu get` resource -> the client's list type.
LIST_TYPES = {
    "pods": "V1PodList",
    "services": "V1ServiceList",
    "endpointslices": "V1EndpointSliceList",
    "nodes": "V1NodeList",
    "namespaces": "V1NamespaceList",
    "deployments": "V1DeploymentList",
    "replicasets": "V1ReplicaSetList",
    "daemonsets": "V1DaemonSetList",
    "statefulsets": "V1StatefulSetList",
}


def deserialize(text: str, list_type: str) -> Any:
    """`text` (JSON) as the client's `list_type`, with client-side validation."""
    config = Configuration()
    config.client_side_validation = True
    return ApiClient(configuration=config).deserialize(text, list_type, "application/json")


def check_common(items: list[Any]) -> None:
    """What every stored object carries: a uid, a resourceVersion and a
    creationTimestamp the client reads as an aware datetime."""
    assert items
    for item in items:
        meta = item.metadata
        assert meta.name and meta.uid and meta.resource_version
        assert isinstance(meta.creation_timestamp, datetime.datetime)
        assert meta.creation_timestamp.tzinfo is not None


def check_kind(resource: str, items: list[Any]) -> None:
    """Key fields survive the client's models, per kind."""
    check_common(items)
    if resource == "pods":
        for pod in items:
            assert pod.spec.restart_policy == "Always" and pod.spec.dns_policy == "ClusterFirst"
            assert pod.spec.scheduler_name == "default-scheduler"
            assert pod.spec.termination_grace_period_seconds == 30
            assert {t.key for t in pod.spec.tolerations} >= {
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
            }
            assert pod.status.qos_class in ("BestEffort", "Burstable", "Guaranteed")
            assert isinstance(pod.status.start_time, datetime.datetime)
            assert pod.status.pod_ip and pod.status.host_ip
            assert len(pod.status.container_statuses) == len(pod.spec.containers)
            for status in pod.status.container_statuses:
                assert status.image_id and status.container_id and status.started is not None
            assert any(c.type == "Ready" for c in pod.status.conditions)
    elif resource == "services":
        for svc in items:
            assert svc.spec.type and svc.spec.session_affinity
            assert svc.spec.ip_families and svc.spec.ip_family_policy
            assert svc.status.load_balancer is not None
    elif resource == "endpointslices":
        for eps in items:
            assert eps.address_type == "IPv4" and eps.endpoints is not None
        assert any(ep.addresses for eps in items for ep in eps.endpoints)
    elif resource == "nodes":
        for node in items:
            ready = [c for c in node.status.conditions if c.type == "Ready"]
            assert ready and ready[0].status == "True" and ready[0].reason == "KubeletReady"
            info = node.status.node_info
            assert info.kubelet_version.startswith("v") and info.operating_system == "linux"
            assert info.machine_id and info.system_uuid and info.boot_id
            assert node.status.capacity["pods"] == "110"
            assert node.status.allocatable["cpu"]
            assert {a.type for a in node.status.addresses} == {"InternalIP", "Hostname"}
            assert node.spec.pod_cidr and node.spec.pod_cidrs == [node.spec.pod_cidr]
    elif resource == "namespaces":
        assert {ns.status.phase for ns in items} == {"Active"}
    elif resource in ("deployments", "replicasets", "statefulsets"):
        for workload in items:
            assert workload.metadata.generation == 1
            assert workload.status.observed_generation == 1
            assert workload.status.ready_replicas == workload.spec.replicas
    elif resource == "daemonsets":
        for ds in items:
            assert ds.status.desired_number_scheduled >= 1
            assert ds.status.number_ready == ds.status.desired_number_scheduled
