"""The DaemonSet controller: one pod per node that matches the template's
nodeSelector and required node affinity, named `<daemonset>-<5 characters>`.

Like Kubernetes, DaemonSet pods also run on cordoned (unschedulable) nodes:
the DaemonSet controller adds a toleration for that taint. Kubernetes binds
DaemonSet pods through the scheduler with a node-affinity term per pod;
netemu sets spec.nodeName directly, which places them on the same nodes.
Pods carry the `controller-revision-hash` label; a pod from an earlier
template is replaced unless updateStrategy.type is OnDelete.
"""

from __future__ import annotations

from netemu.api.apps import DaemonSet
from netemu.api.core import Node, Pod
from netemu.controlplane.client import Client
from netemu.controlplane.common import (
    controlled_by,
    controller_ref,
    delete,
    is_terminal,
    is_terminating,
    pod_from_template,
    sorted_map,
)
from netemu.controlplane.names import compute_hash
from netemu.controlplane.nodeaffinity import node_fits

LABEL_REVISION_HASH = "controller-revision-hash"


class DaemonSetController:
    """Keeps exactly one pod of each DaemonSet on each eligible node."""

    name = "daemonset"

    def __init__(self, client: Client) -> None:
        self.client = client

    def reconcile(self) -> bool:
        changed = False
        daemon_sets = self.client.list(DaemonSet).items
        if not daemon_sets:
            return False  # and the pods are not read (see ReplicaSetController)
        nodes = self.client.list(Node).items
        # Pods by their controller's uid: each DaemonSet looks only at its own.
        controlled: dict[str, list[Pod]] = {}
        for pod in self.client.list(Pod).items:
            ref = controller_ref(pod.metadata)
            if ref is not None and ref.uid:
                controlled.setdefault(ref.uid, []).append(pod)
        for ds in daemon_sets:
            candidates = controlled.get(ds.metadata.uid or "", [])
            owned = [p for p in candidates if controlled_by(p, ds)]
            changed |= self._sync(ds, nodes, owned)
        return changed

    def _sync(self, ds: DaemonSet, nodes: tuple[Node, ...], owned: list[Pod]) -> bool:
        changed = False
        template = ds.spec.template
        revision = compute_hash(template)
        on_delete = update_strategy_type(ds.spec.update_strategy) == "OnDelete"
        eligible = [node.metadata.name or "" for node in nodes if node_fits(template.spec, node)]
        by_node: dict[str, list[Pod]] = {}
        for pod in sorted(owned, key=lambda p: p.metadata.name or ""):
            if is_terminating(pod):
                continue  # going; a node without another pod gets a new one
            if is_terminal(pod) or (
                not on_delete and pod.metadata.labels.get(LABEL_REVISION_HASH) != revision
            ):
                delete(self.client, pod)
                changed = True
                continue
            by_node.setdefault(pod.spec.node_name or "", []).append(pod)

        for node_name, node_pods in by_node.items():
            keep = 1 if node_name in eligible else 0
            for pod in node_pods[keep:]:
                delete(self.client, pod)
                changed = True

        labels = sorted_map({**template.metadata.labels, LABEL_REVISION_HASH: revision})
        for node_name in eligible:
            if by_node.get(node_name):
                continue
            pod = pod_from_template(
                template, ds, generate_name=f"{ds.metadata.name}-", labels=labels
            )
            pod = pod.model_copy(
                update={"spec": pod.spec.model_copy(update={"node_name": node_name})}
            )
            self.client.create(pod)
            changed = True
        return changed


def update_strategy_type(strategy: object) -> str | None:
    if isinstance(strategy, dict):
        value = strategy.get("type")
        return value if isinstance(value, str) else None
    return None
