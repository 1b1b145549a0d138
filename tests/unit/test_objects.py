"""Objects as the API server and the node agents complete them: the
metadata the store stamps (creationTimestamp, uid, generation), the Pod
defaults of the API server and its admission plugins, the Pod status
(qosClass, startTime, containerStatuses), the Node status a kubelet
reports, the workload statuses, and the Kubernetes JSON of `to_dict`."""

from __future__ import annotations

import datetime
import uuid

import pytest
from manifests import objects

from netemu.api.apps import Deployment
from netemu.api.base import ObjectMeta
from netemu.api.core import Container, Pod, PodSpec
from netemu.controlplane import build_cluster_state, nodeinfo, nodes
from netemu.controlplane.client import LocalClient
from netemu.controlplane.defaulting import default_pod
from netemu.controlplane.podstatus import image_id, qos_class, quantity
from netemu.controlplane.state import ClusterState
from netemu.controlplane.store import Store

T0 = datetime.datetime(2026, 3, 1, 12, 0, 0, 500_000, tzinfo=datetime.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now


def pod(*containers: Container, **spec: object) -> Pod:
    return Pod.model_validate(
        {
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [c.to_dict() for c in containers], **spec},
        }
    )


# -- metadata -------------------------------------------------------------------


def test_creation_timestamp_is_rfc3339_and_kept_on_update() -> None:
    clock = Clock()
    client = LocalClient(Store(clock=clock))
    created = client.create(pod(Container(name="c")))
    assert created.metadata.creation_timestamp == "2026-03-01T12:00:00Z"
    assert uuid.UUID(created.metadata.uid or "").version == 5
    clock.now = T0 + datetime.timedelta(hours=1)
    # A client cannot move it: the API server keeps the stored one.
    moved = created.metadata.model_copy(
        update={"creation_timestamp": "2000-01-01T00:00:00Z", "labels": {"a": "b"}}
    )
    updated = client.update(created.model_copy(update={"metadata": moved}))
    assert updated.metadata.creation_timestamp == "2026-03-01T12:00:00Z"
    assert updated.metadata.uid == created.metadata.uid
    assert updated.metadata.resource_version != created.metadata.resource_version
    # Pods have no generation (1.31).
    assert updated.metadata.generation is None


def test_generation_moves_with_the_spec_not_with_metadata_or_status() -> None:
    client = LocalClient(Store())
    (deploy,) = [
        o
        for o in objects("""
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: web, namespace: default}
            spec:
              selector: {matchLabels: {app: web}}
              template:
                metadata: {labels: {app: web}}
                spec: {containers: [{name: web, image: nginx}]}
            """)
        if isinstance(o, Deployment)
    ]
    stored = client.create(deploy)
    assert stored.metadata.generation == 1
    labelled = client.update(
        stored.model_copy(
            update={"metadata": stored.metadata.model_copy(update={"labels": {"x": "y"}})}
        )
    )
    with_status = client.update(labelled.model_copy(update={"status": {"replicas": 1}}))
    assert with_status.metadata.generation == 1
    scaled = client.update(
        with_status.model_copy(update={"spec": with_status.spec.model_copy(update={"replicas": 5})})
    )
    assert scaled.metadata.generation == 2


# -- pod defaults ---------------------------------------------------------------


def test_pod_defaults_are_the_api_servers() -> None:
    done = default_pod(pod(Container(name="a", image="nginx"), Container(name="b", image="x:1")))
    spec = done.spec
    assert (spec.restart_policy, spec.dns_policy, spec.scheduler_name) == (
        "Always",
        "ClusterFirst",
        "default-scheduler",
    )
    assert spec.termination_grace_period_seconds == 30 and spec.security_context == {}
    assert spec.enable_service_links is True
    assert (spec.priority, spec.preemption_policy) == (0, "PreemptLowerPriority")
    assert spec.tolerations == [
        {
            "key": f"node.kubernetes.io/{taint}",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        }
        for taint in ("not-ready", "unreachable")
    ]
    a, b = spec.containers
    # Untagged means :latest, which is pulled Always; a tag IfNotPresent.
    assert (a.image_pull_policy, b.image_pull_policy) == ("Always", "IfNotPresent")
    assert (a.termination_message_path, a.termination_message_policy) == (
        "/dev/termination-log",
        "File",
    )
    assert a.resources == {}
    assert done.status.qos_class == "BestEffort"
    assert default_pod(done) == done  # settled


def test_pod_defaults_keep_what_is_given() -> None:
    given = pod(
        Container(name="a", image="nginx@sha256:" + "0" * 64, image_pull_policy="Never"),
        restartPolicy="Never",
        dnsPolicy="Default",
        tolerations=[{"key": "node.kubernetes.io/unreachable", "operator": "Exists"}],
        enableServiceLinks=False,
    )
    spec = default_pod(given).spec
    assert (spec.restart_policy, spec.dns_policy, spec.enable_service_links) == (
        "Never",
        "Default",
        False,
    )
    assert spec.containers[0].image_pull_policy == "Never"
    # Only the taint not yet tolerated gets its default toleration.
    assert [t["key"] for t in spec.tolerations] == [
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/not-ready",
    ]


def test_requests_default_to_limits() -> None:
    limited = Container(name="a", resources={"limits": {"cpu": "1", "memory": "1Gi"}})
    (container,) = default_pod(pod(limited)).spec.containers
    assert container.resources == {
        "limits": {"cpu": "1", "memory": "1Gi"},
        "requests": {"cpu": "1", "memory": "1Gi"},
    }


@pytest.mark.parametrize(
    ("resources", "qos"),
    [
        ([None], "BestEffort"),
        ([{"limits": {"cpu": "500m", "memory": "1Gi"}}], "Guaranteed"),
        ([{"limits": {"cpu": "0.5", "memory": "1Gi"}, "requests": {"cpu": "500m"}}], "Guaranteed"),
        ([{"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}], "Burstable"),
        ([{"limits": {"cpu": "1", "memory": "1Gi"}}, None], "Burstable"),
        ([{"requests": {"memory": "64Mi"}}], "Burstable"),
        ([{"requests": {"ephemeral-storage": "1Gi"}}], "BestEffort"),
    ],
)
def test_qos_class(resources: list[dict[str, object] | None], qos: str) -> None:
    containers = [Container(name=f"c{i}", resources=r) for i, r in enumerate(resources)]
    assert qos_class(pod(*containers)) == qos


def test_quantities() -> None:
    assert quantity("500m") == quantity("0.5") and quantity("1Ki") == 1024
    assert quantity("1e3") == 1000 and quantity("nonsense") is None


def test_image_id_names_the_repository() -> None:
    assert image_id("registry.k8s.io/pause:3.9").startswith("registry.k8s.io/pause@sha256:")
    assert image_id("localhost:5000/app").startswith("localhost:5000/app@sha256:")
    assert image_id(None) == ""


# -- status ---------------------------------------------------------------------

LAB = """
    apiVersion: netemu/v1alpha1
    kind: Lab
    metadata: {name: objects}
    spec:
      nodes:
      - {name: node-1, underlayIP: 192.168.56.11}
      - {name: node-2, underlayIP: 192.168.56.12, podCIDR: 10.244.9.0/24}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: lone, namespace: default}
    spec:
      nodeName: node-1
      containers: [{name: a, image: "nginx:1.27"}, {name: b, image: busybox}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: nowhere, namespace: default}
    spec:
      nodeSelector: {disk: none}
      containers: [{name: a, image: nginx}]
    """
FACTS = nodeinfo.HostFacts(
    kernel_version="6.1.0",
    os_image="Debian GNU/Linux 12 (bookworm)",
    architecture="arm64",
    cpus=4,
    memory_kib=8_000_000,
    ephemeral_storage_kib=30_000_000,
)


@pytest.fixture(scope="module")
def state() -> ClusterState:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nodes, "host_facts", lambda: FACTS)
        return build_cluster_state(objects(LAB), clock=lambda: T0)


def test_a_running_pod_reports_every_container(state: ClusterState) -> None:
    lone = next(p for p in state.pods if p.metadata.name == "lone")
    assert lone.status.start_time == "2026-03-01T12:00:00Z" and lone.status.qos_class
    a, b = lone.status.container_statuses
    assert (a.name, b.name) == ("a", "b")
    for status, image in ((a, "nginx:1.27"), (b, "busybox")):
        assert status.image == image
        assert (status.image_id or "").startswith(image.split(":")[0] + "@sha256:")
        container_id = status.container_id or ""
        assert container_id.startswith("netemu://") and len(container_id) == 9 + 64
        assert status.ready and status.started and status.restart_count == 0
        assert status.state is not None and status.state.running is not None
        assert status.state.running.started_at == "2026-03-01T12:00:00Z"
    assert a.container_id != b.container_id
    assert [(c.type, c.status, c.last_transition_time) for c in lone.status.conditions] == [
        (kind, "True", "2026-03-01T12:00:00Z")
        for kind in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
    ]


def test_an_unschedulable_pod_has_no_container_statuses(state: ClusterState) -> None:
    nowhere = next(p for p in state.pods if p.metadata.name == "nowhere")
    assert nowhere.status.phase == "Pending" and nowhere.status.container_statuses == []
    assert nowhere.status.qos_class == "BestEffort"


def test_nodes_report_what_a_kubelet_reports(state: ClusterState) -> None:
    one, two = state.nodes
    for node in (one, two):
        conditions = {c["type"]: c for c in node.status.conditions}
        assert list(conditions) == ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        assert conditions["Ready"]["status"] == "True"
        assert conditions["Ready"]["reason"] == "KubeletReady"
        assert conditions["Ready"]["lastTransitionTime"] == "2026-03-01T12:00:00Z"
        assert conditions["MemoryPressure"]["status"] == "False"
        info = node.status.node_info
        assert (info["kubeletVersion"], info["kubeProxyVersion"]) == ("v1.31.0", "v1.31.0")
        assert (info["architecture"], info["kernelVersion"]) == ("arm64", "6.1.0")
        assert info["containerRuntimeVersion"].startswith("netemu://")
        assert (
            node.status.capacity
            == node.status.allocatable
            == {
                "cpu": "4",
                "ephemeral-storage": "30000000Ki",
                "hugepages-1Gi": "0",
                "hugepages-2Mi": "0",
                "memory": "8000000Ki",
                "pods": "110",
            }
        )
        assert node.status.daemon_endpoints == {"kubeletEndpoint": {"Port": 10250}}
    # Each node is its own machine: distinct ids.
    ids = [(n.status.node_info["machineID"], n.status.node_info["bootID"]) for n in (one, two)]
    assert ids[0][0] != ids[1][0] and ids[0][1] != ids[1][1]
    assert two.spec.pod_cidr == "10.244.9.0/24"


def test_to_dict_keeps_empty_structs_and_drops_empty_lists_and_maps(state: ClusterState) -> None:
    service = objects("""
        apiVersion: v1
        kind: Service
        metadata: {name: s, namespace: default}
        spec: {ports: [{port: 80}]}
        """)[0]
    shown = service.to_dict()
    assert shown["status"] == {"loadBalancer": {}}
    assert "labels" not in shown["metadata"] and "externalIPs" not in shown["spec"]
    lone = next(p for p in state.pods if p.metadata.name == "lone")
    assert lone.to_dict()["spec"]["securityContext"] == {}
    # A false `omitempty` bool is left out, a true one kept.
    assert "hostNetwork" not in lone.to_dict()["spec"]
    host = lone.model_copy(update={"spec": lone.spec.model_copy(update={"host_network": True})})
    assert host.to_dict()["spec"]["hostNetwork"] is True
    assert "unschedulable" not in state.nodes[0].to_dict()["spec"]
    bare = Pod(metadata=ObjectMeta(name="x"), spec=PodSpec(containers=[Container(name="c")]))
    assert "status" in bare.to_dict()
