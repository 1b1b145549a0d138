"""Which pods a ReplicaSet deletes first when scaled down
(netemu.controlplane.ranking, as controller.ActivePodsWithRanks)."""

from __future__ import annotations

import datetime

from manifests import running

from netemu.api.apps import ReplicaSet
from netemu.api.base import ObjectMeta
from netemu.api.core import Container, ContainerStatus, Pod, PodCondition, PodSpec, PodStatus
from netemu.controlplane.ranking import DELETION_COST, deletion_cost, pods_to_delete

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def ago(seconds: float) -> str:
    return (NOW - datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(
    name: str,
    *,
    node: str | None = "node-1",
    phase: str = "Running",
    ready_since: float | None = 3600,
    created: float = 7200,
    restarts: int = 0,
    cost: str | None = None,
) -> Pod:
    conditions = []
    if ready_since is not None:
        conditions.append(
            PodCondition(type="Ready", status="True", last_transition_time=ago(ready_since))
        )
    else:
        conditions.append(PodCondition(type="Ready", status="False"))
    return Pod(
        metadata=ObjectMeta(
            name=name,
            uid=f"uid-{name}",
            creation_timestamp=ago(created),
            annotations={DELETION_COST: cost} if cost is not None else {},
        ),
        spec=PodSpec(containers=[Container(name="c")], node_name=node),
        status=PodStatus(
            phase=phase,
            conditions=conditions,
            container_statuses=[ContainerStatus(name="c", restart_count=restarts)],
        ),
    )


def first(pods: list[Pod], related: list[Pod] | None = None) -> list[str]:
    """The names in deletion order."""
    order = pods_to_delete(pods, pods if related is None else related, len(pods), NOW)
    return [p.metadata.name or "" for p in order]


def test_unassigned_before_assigned() -> None:
    assert first(
        [pod("on-node"), pod("nowhere", node=None, phase="Pending", ready_since=None)]
    ) == [
        "nowhere",
        "on-node",
    ]


def test_pending_before_unknown_before_running() -> None:
    pods = [
        pod("running"),
        pod("unknown", phase="Unknown", ready_since=None),
        pod("pending", phase="Pending", ready_since=None),
    ]
    assert first(pods) == ["pending", "unknown", "running"]


def test_not_ready_before_ready() -> None:
    assert first([pod("ready"), pod("unready", ready_since=None)]) == ["unready", "ready"]


def test_lower_deletion_cost_first_and_it_outranks_the_node_count() -> None:
    pods = [
        pod("crowded-costly", node="node-1", cost="10"),
        pod("crowded", node="node-1"),
        pod("alone-cheap", node="node-2", cost="-5"),
    ]
    assert first(pods) == ["alone-cheap", "crowded", "crowded-costly"]


def test_unreadable_deletion_cost_counts_as_zero() -> None:
    assert [
        deletion_cost(pod("p", cost=c)) for c in ("7", "+3", "-2", "x", "1e3", "2147483648")
    ] == [
        7,
        3,
        -2,
        0,
        0,
        0,
    ]


def test_pods_on_the_node_with_more_related_replicas_go_first() -> None:
    pods = [pod("lonely", node="node-2"), pod("a", node="node-1"), pod("b", node="node-1")]
    order = first(pods)
    assert order[-1] == "lonely"
    # Related pods (another ReplicaSet of the same Deployment) count too.
    sibling = [pod(f"old-{i}", node="node-2") for i in range(3)]
    assert first(pods, pods + sibling)[0] == "lonely"
    # Only active related pods count.
    gone = [
        p.model_copy(update={"status": p.status.model_copy(update={"phase": "Failed"})})
        for p in sibling
    ]
    assert first(pods, pods + gone)[-1] == "lonely"


def test_recently_ready_before_long_ready_in_power_of_two_buckets() -> None:
    pods = [pod("old", ready_since=1000), pod("new", ready_since=10)]
    assert first(pods) == ["new", "old"]
    # 1000 s and 1010 s ago are in the same bucket (2^39..2^40 ns): the uid decides.
    same = [pod("b", ready_since=1000), pod("a", ready_since=1010)]
    assert first(same) == ["a", "b"]


def test_more_restarts_first() -> None:
    assert first([pod("calm", restarts=0), pod("crashy", restarts=4)]) == ["crashy", "calm"]


def test_newer_first_then_uid() -> None:
    pods = [pod("older", created=5000), pod("newer", created=5)]
    assert first(pods) == ["newer", "older"]
    # The ready time would decide before, so make it equal.
    both = [pod("y", created=5000, ready_since=None), pod("x", created=5001, ready_since=None)]
    assert first(both) == ["x", "y"]


def test_count_limits_the_result() -> None:
    pods = [pod("a"), pod("b", ready_since=None), pod("c", node=None)]
    assert [p.metadata.name for p in pods_to_delete(pods, pods, 2, NOW)] == ["c", "b"]
    assert pods_to_delete(pods, pods, 0, NOW) == []


REPLICASET = """
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  nodes:
  - {name: node-1, underlayIP: 192.168.56.11}
  - {name: node-2, underlayIP: 192.168.56.12}
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


def test_replicaset_scale_down_honours_the_deletion_cost() -> None:
    client, plane = running(REPLICASET)
    pods = client.list(Pod).items
    keep = pods[0]
    for other in pods[1:]:
        meta = other.metadata.model_copy(update={"annotations": {DELETION_COST: "100"}})
        client.update(other.model_copy(update={"metadata": meta}))
    cheap = keep.metadata.model_copy(update={"annotations": {DELETION_COST: "-100"}})
    client.update(keep.model_copy(update={"metadata": cheap}))
    rs = client.get(ReplicaSet, "default", "cache")
    client.update(rs.model_copy(update={"spec": rs.spec.model_copy(update={"replicas": 2})}))
    plane.run_to_fixed_point()
    remaining = {p.metadata.name for p in client.list(Pod).items}
    assert remaining == {p.metadata.name for p in pods[1:]}
