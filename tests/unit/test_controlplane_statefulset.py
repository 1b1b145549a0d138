"""The StatefulSet controller's pod management, step by step, as
kube-controller-manager's updateStatefulSet does it: OrderedReady creates
one pod at a time and waits for each to be Running and Ready, deletes the
highest ordinal first and waits for it to be gone; Parallel does neither;
RollingUpdate replaces pods from the highest ordinal down.

Readiness is set by hand here where a kubelet's prober would set it in a
live lab (the control plane runs with `kubelet_probes`, so a pod with a
readinessProbe starts not ready), and pods being deleted gracefully are
removed by hand where their kubelet would remove them."""

from __future__ import annotations

from manifests import objects

from netemu.api.apps import StatefulSet
from netemu.api.core import Pod, PodCondition
from netemu.controlplane import ControlPlane, LocalClient, Store, apply_objects
from netemu.controlplane.client import Client
from netemu.controlplane.common import is_terminating

LAB = """
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  nodes:
  - {name: node-1, underlayIP: 192.168.56.11}
  - {name: node-2, underlayIP: 192.168.56.12}
"""

PROBED = """
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        readinessProbe: {httpGet: {path: /ready, port: 8080}}
"""

UNPROBED = PROBED.replace("        readinessProbe: {httpGet: {path: /ready, port: 8080}}\n", "")


def start(
    text: str, *, probes: bool = False, graceful: bool = False
) -> tuple[Client, ControlPlane]:
    """A control plane with `text` applied, not yet run."""
    client = LocalClient(Store(graceful_pods=graceful))
    plane = ControlPlane(client, kubelet_probes=probes)
    apply_objects(client, objects(text))
    return client, plane


def names(client: Client) -> list[str]:
    return [p.metadata.name or "" for p in client.list(Pod).items]


def terminating(client: Client) -> list[str]:
    return [p.metadata.name or "" for p in client.list(Pod).items if is_terminating(p)]


def set_ready(client: Client, name: str, ready: bool = True) -> None:
    """What the kubelet's status manager writes when a readiness probe
    changes its result."""
    pod = client.get(Pod, "default", name)
    conditions = [
        PodCondition(type=c.type, status="True" if ready else "False")
        if c.type in ("Ready", "ContainersReady")
        else c
        for c in pod.status.conditions
    ]
    client.update(
        pod.model_copy(update={"status": pod.status.model_copy(update={"conditions": conditions})})
    )


def finish_termination(client: Client, name: str) -> None:
    """The kubelet has stopped the pod's containers: it deletes it for good."""
    client.delete(Pod, "default", name, grace_period_seconds=0)


def change_spec(client: Client, **fields: object) -> None:
    sts = client.get(StatefulSet, "default", "web")
    client.update(sts.model_copy(update={"spec": sts.spec.model_copy(update=fields)}))


def change_image(client: Client, image: str) -> None:
    sts = client.get(StatefulSet, "default", "web")
    template = sts.spec.template
    containers = [c.model_copy(update={"image": image}) for c in template.spec.containers]
    spec = template.spec.model_copy(update={"containers": containers})
    change_spec(client, template=template.model_copy(update={"spec": spec}))


def revision_of(client: Client, name: str) -> str:
    return client.get(Pod, "default", name).metadata.labels["controller-revision-hash"]


# ---------------------------------------------------------------- OrderedReady


def test_ordered_ready_creates_one_pod_per_round_in_ordinal_order() -> None:
    client, plane = start(LAB + UNPROBED)
    seen: list[list[str]] = []
    while plane.run_round():
        if not seen or names(client) != seen[-1]:
            seen.append(names(client))
    # Each pod is Running and Ready in the round it is created (no probes),
    # so the next ordinal follows in the next round, never in the same one.
    assert seen == [["web-0"], ["web-0", "web-1"], ["web-0", "web-1", "web-2"]]


def test_a_pod_that_is_not_ready_holds_back_the_next_ordinal() -> None:
    client, plane = start(LAB + PROBED, probes=True)
    plane.run_to_fixed_point()
    assert names(client) == ["web-0"]
    set_ready(client, "web-0")
    plane.run_to_fixed_point()
    assert names(client) == ["web-0", "web-1"]
    plane.run_to_fixed_point()
    assert names(client) == ["web-0", "web-1"]  # web-1 is not ready yet
    set_ready(client, "web-1")
    plane.run_to_fixed_point()
    assert names(client) == ["web-0", "web-1", "web-2"]


def test_a_pod_that_loses_readiness_blocks_a_scale_up() -> None:
    client, plane = start(LAB + UNPROBED)
    plane.run_to_fixed_point()
    set_ready(client, "web-1", ready=False)
    change_spec(client, replicas=5)
    plane.run_to_fixed_point()
    assert names(client) == ["web-0", "web-1", "web-2"]
    set_ready(client, "web-1")
    plane.run_to_fixed_point()
    assert names(client) == ["web-0", "web-1", "web-2", "web-3", "web-4"]


def test_large_ordered_set_settles_offline_with_every_replica() -> None:
    # More pods than the runner's usual round limit: each takes a round.
    client, plane = start(LAB + UNPROBED.replace("replicas: 3", "replicas: 120"))
    rounds = plane.run_to_fixed_point()
    assert sorted(names(client)) == sorted(f"web-{i}" for i in range(120))
    assert rounds > 120


def test_scale_down_deletes_the_highest_ordinal_and_waits_until_it_is_gone() -> None:
    client, plane = start(LAB + UNPROBED.replace("replicas: 3", "replicas: 4"), graceful=True)
    plane.run_to_fixed_point()
    change_spec(client, replicas=1)
    plane.run_to_fixed_point()
    assert terminating(client) == ["web-3"]
    assert names(client) == ["web-0", "web-1", "web-2", "web-3"]
    finish_termination(client, "web-3")
    plane.run_to_fixed_point()
    assert terminating(client) == ["web-2"]
    finish_termination(client, "web-2")
    plane.run_to_fixed_point()
    assert terminating(client) == ["web-1"]
    finish_termination(client, "web-1")
    plane.run_to_fixed_point()
    assert names(client) == ["web-0"]
    assert terminating(client) == []


def test_scale_down_waits_for_a_not_ready_pod_in_range() -> None:
    client, plane = start(LAB + UNPROBED, graceful=True)
    plane.run_to_fixed_point()
    set_ready(client, "web-0", ready=False)
    change_spec(client, replicas=2)
    plane.run_to_fixed_point()
    assert terminating(client) == []
    set_ready(client, "web-0")
    plane.run_to_fixed_point()
    assert terminating(client) == ["web-2"]


def test_scale_down_deletes_a_not_ready_pod_when_it_is_the_first_unhealthy_one() -> None:
    client, plane = start(LAB + UNPROBED, graceful=True)
    plane.run_to_fixed_point()
    set_ready(client, "web-2", ready=False)
    change_spec(client, replicas=2)
    plane.run_to_fixed_point()
    assert terminating(client) == ["web-2"]


def test_a_failed_pod_is_deleted_then_created_again() -> None:
    client, plane = start(LAB + UNPROBED)
    plane.run_to_fixed_point()
    failed = client.get(Pod, "default", "web-1")
    client.update(
        failed.model_copy(update={"status": failed.status.model_copy(update={"phase": "Failed"})})
    )
    plane.run_to_fixed_point()
    again = client.get(Pod, "default", "web-1")
    assert again.metadata.uid != failed.metadata.uid
    assert again.status.phase == "Running"
    assert names(client) == ["web-0", "web-1", "web-2"]


# ---------------------------------------------------------------- Parallel


def test_parallel_creates_every_pod_without_waiting_for_readiness() -> None:
    text = PROBED.replace(
        "  serviceName: web\n", "  serviceName: web\n  podManagementPolicy: Parallel\n"
    )
    client, plane = start(LAB + text, probes=True)
    plane.run_round()
    assert names(client) == ["web-0", "web-1", "web-2"]
    plane.run_to_fixed_point()
    assert all(p.status.condition("Ready") == "False" for p in client.list(Pod).items)


def test_parallel_scale_down_deletes_every_condemned_pod_at_once() -> None:
    text = UNPROBED.replace(
        "  serviceName: web\n", "  serviceName: web\n  podManagementPolicy: Parallel\n"
    )
    client, plane = start(LAB + text.replace("replicas: 3", "replicas: 4"), graceful=True)
    plane.run_to_fixed_point()
    set_ready(client, "web-0", ready=False)
    change_spec(client, replicas=1)
    plane.run_to_fixed_point()
    assert terminating(client) == ["web-1", "web-2", "web-3"]


# ---------------------------------------------------------------- RollingUpdate


def test_rolling_update_replaces_pods_from_the_highest_ordinal_down() -> None:
    client, plane = start(LAB + UNPROBED, graceful=True)
    plane.run_to_fixed_point()
    old = revision_of(client, "web-0")
    change_image(client, "nginx:2")
    replaced = []
    for _ in range(3):
        plane.run_to_fixed_point()
        (going,) = terminating(client)
        replaced.append(going)
        finish_termination(client, going)
    plane.run_to_fixed_point()
    assert replaced == ["web-2", "web-1", "web-0"]
    assert terminating(client) == []
    new = {revision_of(client, name) for name in names(client)}
    assert len(new) == 1 and old not in new


def test_rolling_update_waits_for_the_replaced_pod_to_be_ready() -> None:
    client, plane = start(LAB + PROBED, probes=True, graceful=True)
    for name in ("web-0", "web-1", "web-2"):
        plane.run_to_fixed_point()
        set_ready(client, name)
    plane.run_to_fixed_point()
    change_image(client, "nginx:2")
    plane.run_to_fixed_point()
    assert terminating(client) == ["web-2"]
    finish_termination(client, "web-2")
    plane.run_to_fixed_point()
    # web-2 is back at the new revision but not ready: web-1 is left alone.
    assert terminating(client) == []
    assert client.get(Pod, "default", "web-2").status.condition("Ready") == "False"
    set_ready(client, "web-2")
    plane.run_to_fixed_point()
    assert terminating(client) == ["web-1"]


def test_rolling_update_partition_keeps_lower_ordinals() -> None:
    client, plane = start(LAB + UNPROBED)
    plane.run_to_fixed_point()
    old = revision_of(client, "web-0")
    change_spec(
        client, update_strategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    )
    change_image(client, "nginx:2")
    plane.run_to_fixed_point()
    assert revision_of(client, "web-0") == old
    assert revision_of(client, "web-1") == old
    assert revision_of(client, "web-2") != old


def test_rolling_update_max_unavailable_replaces_several_at_once() -> None:
    client, plane = start(LAB + UNPROBED.replace("replicas: 3", "replicas: 4"), graceful=True)
    plane.run_to_fixed_point()
    change_spec(
        client, update_strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}
    )
    change_image(client, "nginx:2")
    plane.run_to_fixed_point()
    assert terminating(client) == ["web-2", "web-3"]


def test_on_delete_replaces_nothing() -> None:
    client, plane = start(LAB + UNPROBED)
    plane.run_to_fixed_point()
    old = revision_of(client, "web-2")
    change_spec(client, update_strategy={"type": "OnDelete"})
    change_image(client, "nginx:2")
    plane.run_to_fixed_point()
    assert {revision_of(client, name) for name in names(client)} == {old}


def test_parallel_rolling_update_of_a_large_set_settles_when_pods_go_at_once() -> None:
    # Without kubelets a deleted pod is gone at once: one pod replaced per two
    # rounds, more rounds than the runner's usual limit.
    text = UNPROBED.replace(
        "  serviceName: web\n", "  serviceName: web\n  podManagementPolicy: Parallel\n"
    )
    client, plane = start(LAB + text.replace("replicas: 3", "replicas: 60"))
    plane.run_to_fixed_point()
    change_image(client, "nginx:2")
    plane.run_to_fixed_point()
    revisions = {revision_of(client, name) for name in names(client)}
    assert len(names(client)) == 60 and len(revisions) == 1
