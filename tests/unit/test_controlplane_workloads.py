"""Nodes and pod CIDRs, workload controllers (Deployment, ReplicaSet,
DaemonSet, StatefulSet) and garbage collection, both from a one-shot build
and as a running lab that changes (scale, template change, delete)."""

from __future__ import annotations

from manifests import build, objects, running

from netemu.api.apps import DaemonSet, Deployment, ReplicaSet, StatefulSet
from netemu.api.core import Pod, PodCondition
from netemu.controlplane.client import Client
from netemu.controlplane.common import controller_ref
from netemu.controlplane.names import ALPHANUMS
from netemu.controlplane.nodeinfo import host_facts

LAB = """
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  nodes:
  - {name: node-1, underlayIP: 192.168.56.11, labels: {disk: ssd}}
  - {name: node-2, underlayIP: 192.168.56.12}
  - {name: node-3, underlayIP: 192.168.56.13, labels: {disk: ssd}}
"""

DEPLOYMENT = """
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: nginx, image: nginx:1.27}]
"""


def is_safe_suffix(text: str, length: int) -> bool:
    return len(text) == length and all(ch in ALPHANUMS for ch in text)


def pods_of(client: Client, prefix: str) -> list[Pod]:
    return [p for p in client.list(Pod).items if (p.metadata.name or "").startswith(prefix)]


# ---------------------------------------------------------------- nodes


def test_lab_nodes_become_nodes_with_labels_and_addresses() -> None:
    state = build(LAB)
    node = state.node("node-1")
    # The kubelet's labels (the machine's architecture as Go names it), then the Lab's.
    arch = host_facts().architecture
    assert node.metadata.labels == {
        "beta.kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "disk": "ssd",
        "kubernetes.io/arch": arch,
        "kubernetes.io/hostname": "node-1",
        "kubernetes.io/os": "linux",
    }
    assert [(a.type, a.address) for a in node.status.addresses] == [
        ("InternalIP", "192.168.56.11"),
        ("Hostname", "node-1"),
    ]
    assert [n.metadata.name for n in state.nodes] == ["node-1", "node-2", "node-3"]


def test_pod_cidrs_are_carved_in_lab_order_skipping_explicit_ones() -> None:
    state = build("""
        apiVersion: netemu/v1alpha1
        kind: Lab
        metadata: {name: lab}
        spec:
          nodes:
          - {name: zeta, underlayIP: 192.168.56.11}
          - {name: alpha, underlayIP: 192.168.56.12, podCIDR: 10.244.0.0/24}
          - {name: beta, underlayIP: 192.168.56.13}
        """)
    cidrs = {n.metadata.name: (n.spec.pod_cidr, n.spec.pod_cidrs) for n in state.nodes}
    assert cidrs == {
        "zeta": ("10.244.1.0/24", ["10.244.1.0/24"]),
        "alpha": ("10.244.0.0/24", ["10.244.0.0/24"]),
        "beta": ("10.244.2.0/24", ["10.244.2.0/24"]),
    }


def test_lab_pod_cidr_is_the_cluster_cidr() -> None:
    state = build(LAB.replace("spec:\n", "spec:\n  podCIDR: 10.32.0.0/16\n", 1))
    assert state.node("node-1").spec.pod_cidr == "10.32.0.0/24"
    assert state.node("node-3").spec.pod_cidr == "10.32.2.0/24"


def test_manifest_nodes_are_kept_and_get_pod_cidrs_from_the_proxy_cluster_cidr() -> None:
    state = build("""
        apiVersion: v1
        kind: Node
        metadata: {name: worker, labels: {role: worker}}
        status: {addresses: [{type: InternalIP, address: 172.18.0.3}]}
        ---
        apiVersion: v1
        kind: Node
        metadata: {name: cp}
        spec: {podCIDR: 10.200.5.0/24}
        ---
        apiVersion: kubeproxy.config.k8s.io/v1alpha1
        kind: KubeProxyConfiguration
        clusterCIDR: 10.200.0.0/16
        """)
    worker = state.node("worker")
    assert worker.metadata.labels == {"role": "worker"}
    assert worker.internal_ips() == ["172.18.0.3"]
    assert worker.spec.pod_cidr == "10.200.0.0/24"
    assert state.node("cp").spec.pod_cidrs == ["10.200.5.0/24"]


def test_manifest_node_for_a_lab_node_keeps_its_values_and_gains_the_rest() -> None:
    state = build(
        LAB
        + """
---
apiVersion: v1
kind: Node
metadata: {name: node-2, labels: {role: edge}}
spec: {unschedulable: true}
"""
    )
    node = state.node("node-2")
    assert node.spec.unschedulable is True
    arch = host_facts().architecture
    assert node.metadata.labels == {
        "beta.kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "kubernetes.io/hostname": "node-2",
        "kubernetes.io/os": "linux",
        "role": "edge",
    }
    assert node.internal_ips() == ["192.168.56.12"]
    assert node.spec.pod_cidr == "10.244.1.0/24"


def test_manifest_node_without_lab_or_proxy_config_uses_default_pod_cidr() -> None:
    state = build("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n")
    assert state.node("n1").spec.pod_cidr == "10.244.0.0/24"


# ---------------------------------------------------------------- Deployment


def test_deployment_creates_replicaset_named_by_template_hash() -> None:
    state = build(LAB + DEPLOYMENT)
    (deploy,) = state.deployments
    (rs,) = state.replica_sets
    name = rs.metadata.name or ""
    assert name.startswith("web-")
    template_hash = name.removeprefix("web-")
    assert 8 <= len(template_hash) <= 10 and is_safe_suffix(template_hash, len(template_hash))
    assert rs.metadata.labels == {"app": "web", "pod-template-hash": template_hash}
    assert rs.spec.selector.match_labels == {"app": "web", "pod-template-hash": template_hash}
    assert rs.spec.template.metadata.labels["pod-template-hash"] == template_hash
    assert rs.spec.replicas == 3
    ref = controller_ref(rs.metadata)
    assert ref is not None
    assert (ref.kind, ref.name, ref.uid) == ("Deployment", "web", deploy.metadata.uid)
    assert ref.block_owner_deletion is True


def test_deployment_pods_are_named_after_the_replicaset_and_owned_by_it() -> None:
    state = build(LAB + DEPLOYMENT)
    (rs,) = state.replica_sets
    assert len(state.pods) == 3
    for pod in state.pods:
        name = pod.metadata.name or ""
        assert name.startswith(f"{rs.metadata.name}-")
        assert is_safe_suffix(name.removeprefix(f"{rs.metadata.name}-"), 5)
        assert pod.metadata.labels == rs.spec.template.metadata.labels
        ref = controller_ref(pod.metadata)
        assert ref is not None and (ref.kind, ref.uid) == ("ReplicaSet", rs.metadata.uid)
        assert pod.spec.containers[0].image == "nginx:1.27"


def test_deployment_without_replicas_runs_one_pod() -> None:
    state = build(LAB + DEPLOYMENT.replace("  replicas: 3\n", ""))
    assert len(state.pods) == 1


def test_template_hash_changes_with_the_template_only() -> None:
    first = build(LAB + DEPLOYMENT).replica_sets[0].metadata.name
    same = build(LAB + DEPLOYMENT.replace("replicas: 3", "replicas: 5")).replica_sets[0]
    other = build(LAB + DEPLOYMENT.replace("nginx:1.27", "nginx:1.28")).replica_sets[0]
    assert same.metadata.name == first
    assert other.metadata.name != first


def test_template_change_rolls_out_a_new_replicaset_and_scales_the_old_one_down() -> None:
    client, plane = running(LAB + DEPLOYMENT)
    (old_rs,) = client.list(ReplicaSet).items
    deploy = client.get(Deployment, "default", "web")
    template = deploy.spec.template
    new_template = template.model_copy(
        update={"spec": template.spec.model_copy(update={"node_selector": {"disk": "ssd"}})}
    )
    client.update(
        deploy.model_copy(
            update={"spec": deploy.spec.model_copy(update={"template": new_template})}
        )
    )
    plane.run_to_fixed_point()

    replica_sets = {rs.metadata.name: rs for rs in client.list(ReplicaSet).items}
    assert replica_sets[old_rs.metadata.name].spec.replicas == 0
    (new_rs,) = [rs for name, rs in replica_sets.items() if name != old_rs.metadata.name]
    assert new_rs.spec.replicas == 3
    assert new_rs.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    pods = client.list(Pod).items
    assert len(pods) == 3
    assert all((p.metadata.name or "").startswith(f"{new_rs.metadata.name}-") for p in pods)
    assert {p.spec.node_name for p in pods} <= {"node-1", "node-3"}


def test_scaling_a_deployment_down_and_up() -> None:
    client, plane = running(LAB + DEPLOYMENT)
    before = {p.metadata.name for p in client.list(Pod).items}

    def scale(replicas: int) -> None:
        deploy = client.get(Deployment, "default", "web")
        spec = deploy.spec.model_copy(update={"replicas": replicas})
        client.update(deploy.model_copy(update={"spec": spec}))
        plane.run_to_fixed_point()

    scale(1)
    after_down = {p.metadata.name for p in client.list(Pod).items}
    assert len(after_down) == 1 and after_down <= before
    scale(4)
    after_up = {p.metadata.name for p in client.list(Pod).items}
    assert len(after_up) == 4 and after_down <= after_up
    # Replacement pods get new names, never those of deleted pods.
    assert not (after_up - after_down) & before


# ---------------------------------------------------------------- ReplicaSet


REPLICASET = """
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: cache}
spec:
  replicas: 3
  selector: {matchLabels: {app: cache}}
  template:
    metadata: {labels: {app: cache}}
    spec: {containers: [{name: redis}]}
"""


def test_replicaset_creates_pods_and_adopts_a_matching_orphan() -> None:
    state = build(
        LAB
        + REPLICASET
        + """
---
apiVersion: v1
kind: Pod
metadata: {name: stray, labels: {app: cache}}
spec: {containers: [{name: redis}]}
"""
    )
    (rs,) = state.replica_sets
    assert len(state.pods) == 3
    stray = next(p for p in state.pods if p.metadata.name == "stray")
    ref = controller_ref(stray.metadata)
    assert ref is not None and ref.uid == rs.metadata.uid


def test_replicaset_scale_down_removes_not_ready_pods_first() -> None:
    client, plane = running(LAB + REPLICASET)
    pods = client.list(Pod).items
    victim = pods[-1]
    conditions = [
        c if c.type != "Ready" else PodCondition(type="Ready", status="False")
        for c in victim.status.conditions
    ]
    client.update(
        victim.model_copy(
            update={"status": victim.status.model_copy(update={"conditions": conditions})}
        )
    )
    rs = client.get(ReplicaSet, "default", "cache")
    client.update(rs.model_copy(update={"spec": rs.spec.model_copy(update={"replicas": 2})}))
    plane.run_to_fixed_point()
    remaining = {p.metadata.name for p in client.list(Pod).items}
    assert remaining == {p.metadata.name for p in pods[:-1]}


# ---------------------------------------------------------------- DaemonSet


DAEMONSET = """
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: agent}]}
"""


def test_daemonset_runs_one_pod_per_node() -> None:
    state = build(LAB + DAEMONSET)
    assert sorted(p.spec.node_name or "" for p in state.pods) == ["node-1", "node-2", "node-3"]
    (ds,) = state.daemon_sets
    for pod in state.pods:
        name = pod.metadata.name or ""
        assert name.startswith("agent-") and is_safe_suffix(name.removeprefix("agent-"), 5)
        assert pod.metadata.labels["app"] == "agent"
        ref = controller_ref(pod.metadata)
        assert ref is not None and (ref.kind, ref.uid) == ("DaemonSet", ds.metadata.uid)


def test_daemonset_node_selector_limits_nodes() -> None:
    text = DAEMONSET.replace("spec: {containers:", "spec: {nodeSelector: {disk: ssd}, containers:")
    state = build(LAB + text)
    assert sorted(p.spec.node_name or "" for p in state.pods) == ["node-1", "node-3"]


def test_daemonset_also_runs_on_cordoned_nodes() -> None:
    cordoned = (
        "---\napiVersion: v1\nkind: Node\nmetadata: {name: node-2}\nspec: {unschedulable: true}\n"
    )
    state = build(LAB + cordoned + DAEMONSET)
    assert sorted(p.spec.node_name or "" for p in state.pods) == ["node-1", "node-2", "node-3"]


def test_daemonset_follows_nodes_added_to_a_running_lab() -> None:
    client, plane = running(LAB + DAEMONSET)
    client.create(objects("apiVersion: v1\nkind: Node\nmetadata: {name: node-4}\n")[0])
    plane.run_to_fixed_point()
    assert sorted(p.spec.node_name or "" for p in client.list(Pod).items) == [
        "node-1",
        "node-2",
        "node-3",
        "node-4",
    ]


# ---------------------------------------------------------------- StatefulSet


STATEFULSET = """
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: nginx
  replicas: 3
  selector: {matchLabels: {app: nginx}}
  template:
    metadata: {labels: {app: nginx}}
    spec: {containers: [{name: nginx}]}
"""


def test_statefulset_pods_have_ordinals_hostnames_and_subdomain() -> None:
    state = build(LAB + STATEFULSET)
    (sts,) = state.stateful_sets
    assert [p.metadata.name for p in state.pods] == ["web-0", "web-1", "web-2"]
    for i, pod in enumerate(state.pods):
        assert pod.spec.hostname == f"web-{i}"
        assert pod.spec.subdomain == "nginx"
        assert pod.metadata.labels["statefulset.kubernetes.io/pod-name"] == f"web-{i}"
        assert pod.metadata.labels["apps.kubernetes.io/pod-index"] == str(i)
        assert pod.metadata.labels["app"] == "nginx"
        ref = controller_ref(pod.metadata)
        assert ref is not None and (ref.kind, ref.uid) == ("StatefulSet", sts.metadata.uid)


def test_statefulset_ordinals_start_is_honoured() -> None:
    state = build(LAB + STATEFULSET.replace("replicas: 3", "replicas: 2\n  ordinals: {start: 5}"))
    assert [p.metadata.name for p in state.pods] == ["web-5", "web-6"]


def test_statefulset_scale_down_removes_highest_ordinals() -> None:
    client, plane = running(LAB + STATEFULSET.replace("replicas: 3", "replicas: 5"))
    sts = client.get(StatefulSet, "default", "web")
    client.update(sts.model_copy(update={"spec": sts.spec.model_copy(update={"replicas": 2})}))
    plane.run_to_fixed_point()
    assert [p.metadata.name for p in client.list(Pod).items] == ["web-0", "web-1"]


# ---------------------------------------------------------------- garbage collection


def test_deleting_a_deployment_deletes_its_replicasets_and_pods() -> None:
    client, plane = running(LAB + DEPLOYMENT + DAEMONSET)
    client.delete(Deployment, "default", "web")
    plane.run_to_fixed_point()
    assert client.list(ReplicaSet).items == ()
    assert [p.metadata.name for p in client.list(Pod).items] == [
        p.metadata.name for p in pods_of(client, "agent-")
    ]
    client.delete(DaemonSet, "default", "agent")
    plane.run_to_fixed_point()
    assert client.list(Pod).items == ()


def test_pod_owned_by_an_object_never_seen_is_kept() -> None:
    state = build(
        LAB
        + """
---
apiVersion: v1
kind: Pod
metadata:
  name: copied
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: gone, uid: '1234', controller: true}
spec: {containers: [{name: c}]}
"""
    )
    assert [p.metadata.name for p in state.pods] == ["copied"]
