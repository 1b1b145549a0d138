"""The status the workload controllers write about their pods, which
`kubectl get deployments` and friends print: replica counts and
observedGeneration, as the ReplicaSet, Deployment, DaemonSet and
StatefulSet controllers of kube-controller-manager report them
(calculateStatus, syncRolloutStatus, updateDaemonSetStatus,
computeReplicaStatus).

A pod counts as available when it is ready: minReadySeconds is not
modelled, as rollouts here are immediate. Conditions (with their
transition times) are left out: the controllers read no clock. Fields Go
omits when zero are omitted; those without omitempty are always written.

Runs last in a round, after the pods it counts have settled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from netemu.api.apps import DaemonSet, Deployment, ReplicaSet, ReplicationController, StatefulSet
from netemu.api.core import Node, Pod
from netemu.controlplane.client import Client
from netemu.controlplane.common import (
    controller_ref,
    is_active,
    is_pod_ready,
    write,
)
from netemu.controlplane.daemonset import LABEL_REVISION_HASH
from netemu.controlplane.deployment import revision
from netemu.controlplane.names import compute_hash
from netemu.controlplane.nodeaffinity import node_fits


class WorkloadStatusController:
    """Writes the status of every workload from the pods it controls."""

    name = "workload-status"

    def __init__(self, client: Client) -> None:
        self.client = client

    def reconcile(self) -> bool:
        pods: dict[str, list[Pod]] = {}
        for pod in self.client.list(Pod).items:
            ref = controller_ref(pod.metadata)
            if ref is not None and ref.uid and is_active(pod):
                pods.setdefault(ref.uid, []).append(pod)
        changed = False
        replica_sets = self.client.list(ReplicaSet).items
        for rs in replica_sets:
            status = replica_set_status(rs, pods.get(rs.metadata.uid or "", []))
            changed |= write(self.client, rs, rs.model_copy(update={"status": status}))
        for rc in self.client.list(ReplicationController).items:
            status = replica_set_status(rc, pods.get(rc.metadata.uid or "", []))
            changed |= write(self.client, rc, rc.model_copy(update={"status": status}))
        by_owner: dict[str, list[ReplicaSet]] = {}
        for rs in self.client.list(ReplicaSet).items:
            ref = controller_ref(rs.metadata)
            if ref is not None and ref.uid:
                by_owner.setdefault(ref.uid, []).append(rs)
        for deploy in self.client.list(Deployment).items:
            owned = by_owner.get(deploy.metadata.uid or "", [])
            status = deployment_status(deploy, owned, pods)
            changed |= write(self.client, deploy, deploy.model_copy(update={"status": status}))
        nodes = self.client.list(Node).items
        for ds in self.client.list(DaemonSet).items:
            status = daemon_set_status(ds, nodes, pods.get(ds.metadata.uid or "", []))
            changed |= write(self.client, ds, ds.model_copy(update={"status": status}))
        for sts in self.client.list(StatefulSet).items:
            status = stateful_set_status(sts, pods.get(sts.metadata.uid or "", []))
            changed |= write(self.client, sts, sts.model_copy(update={"status": status}))
        return changed


def _nonzero(status: dict[str, Any], required: Sequence[str]) -> dict[str, Any]:
    """Drop zero counts except the fields Go serialises without omitempty."""
    return {k: v for k, v in status.items() if v or k in required}


def replica_set_status(
    rs: ReplicaSet | ReplicationController, pods: Sequence[Pod]
) -> dict[str, Any]:
    """A ReplicaSet's status, and an RC's (the same fields, same computation)."""
    ready = sum(1 for p in pods if is_pod_ready(p))
    template_labels = rs.spec.template.metadata.labels if rs.spec.template is not None else {}
    labelled = sum(1 for p in pods if template_labels.items() <= p.metadata.labels.items())
    return _nonzero(
        {
            "availableReplicas": ready,
            "fullyLabeledReplicas": labelled,
            "observedGeneration": rs.metadata.generation,
            "readyReplicas": ready,
            "replicas": len(pods),
        },
        required=("replicas",),
    )


def deployment_status(
    deploy: Deployment, owned: Sequence[ReplicaSet], pods: dict[str, list[Pod]]
) -> dict[str, Any]:
    newest = max(owned, key=revision, default=None)
    all_pods = [p for rs in owned for p in pods.get(rs.metadata.uid or "", [])]
    new_pods = pods.get(newest.metadata.uid or "", []) if newest is not None else []
    ready = sum(1 for p in all_pods if is_pod_ready(p))
    wanted = deploy.spec.replicas if deploy.spec.replicas is not None else 1
    return _nonzero(
        {
            "availableReplicas": ready,
            "observedGeneration": deploy.metadata.generation,
            "readyReplicas": ready,
            "replicas": len(all_pods),
            "unavailableReplicas": max(wanted - ready, 0),
            "updatedReplicas": len(new_pods),
        },
        required=(),
    )


def daemon_set_status(ds: DaemonSet, nodes: Sequence[Node], pods: Sequence[Pod]) -> dict[str, Any]:
    eligible = {n.metadata.name for n in nodes if node_fits(ds.spec.template.spec, n)}
    scheduled = {p.spec.node_name for p in pods if p.spec.node_name}
    revision_hash = compute_hash(ds.spec.template)
    ready = [p for p in pods if p.spec.node_name in eligible and is_pod_ready(p)]
    updated = [
        p
        for p in pods
        if p.spec.node_name in eligible
        and p.metadata.labels.get(LABEL_REVISION_HASH) == revision_hash
    ]
    return _nonzero(
        {
            "currentNumberScheduled": len(scheduled & eligible),
            "desiredNumberScheduled": len(eligible),
            "numberAvailable": len(ready),
            "numberMisscheduled": len(scheduled - eligible),
            "numberReady": len(ready),
            "numberUnavailable": len(eligible) - len(ready),
            "observedGeneration": ds.metadata.generation,
            "updatedNumberScheduled": len(updated),
        },
        required=(
            "currentNumberScheduled",
            "desiredNumberScheduled",
            "numberMisscheduled",
            "numberReady",
        ),
    )


def stateful_set_status(sts: StatefulSet, pods: Sequence[Pod]) -> dict[str, Any]:
    ready = sum(1 for p in pods if is_pod_ready(p))
    update_revision = f"{sts.metadata.name}-{compute_hash(sts.spec.template)}"
    updated = sum(1 for p in pods if p.metadata.labels.get(LABEL_REVISION_HASH) == update_revision)
    # The current revision is the update revision once every pod runs it.
    current_revision = update_revision if updated == len(pods) else None
    status: dict[str, Any] = _nonzero(
        {
            "availableReplicas": ready,
            "collisionCount": 0,
            "currentReplicas": updated if current_revision else len(pods) - updated,
            "observedGeneration": sts.metadata.generation,
            "readyReplicas": ready,
            "replicas": len(pods),
            "updatedReplicas": updated,
        },
        required=("replicas", "availableReplicas", "collisionCount"),
    )
    if current_revision:
        status["currentRevision"] = current_revision
    status["updateRevision"] = update_revision
    return dict(sorted(status.items()))
