"""The ReplicaSet controller: keeps spec.replicas (default 1) active pods.
It runs ReplicationControllers too, as kube-controller-manager's
replication controller is the ReplicaSet controller's code behind an
adapter (pkg/controller/replication): an RC's selector is a plain map,
defaulted to its template's labels.

Pods are named `<replicaset>-<5 characters>` (generateName). Orphan pods
matching the selector are adopted, as Kubernetes does. When scaling down,
pods are removed in the order the controller ranks them
(netemu.controlplane.ranking: getPodsToDelete / ActivePodsWithRanks).
"""

from __future__ import annotations

import datetime

from netemu.api.apps import ReplicaSet, ReplicationController
from netemu.api.base import LabelSelector
from netemu.api.core import Pod, PodTemplateSpec
from netemu.controlplane.client import Client
from netemu.controlplane.common import (
    controlled_by,
    controller_ref,
    delete,
    is_active,
    owner_reference,
    pod_from_template,
    write,
)
from netemu.controlplane.ranking import pods_to_delete


def replicated_spec(
    owner: ReplicaSet | ReplicationController,
) -> tuple[LabelSelector, PodTemplateSpec | None, int]:
    """The selector, template and wanted replicas of a ReplicaSet or RC."""
    replicas = owner.spec.replicas if owner.spec.replicas is not None else 1
    if isinstance(owner, ReplicationController):
        selector = LabelSelector(match_labels=owner.spec.effective_selector())
        return selector, owner.spec.template, replicas
    return owner.spec.selector, owner.spec.template, replicas


class ReplicaSetController:
    """Creates and deletes pods so each ReplicaSet (and ReplicationController)
    has spec.replicas of them."""

    name = "replicaset"

    def __init__(self, client: Client) -> None:
        self.client = client

    def reconcile(self) -> bool:
        changed = False
        sets: list[ReplicaSet | ReplicationController] = [
            *self.client.list(ReplicaSet).items,
            *self.client.list(ReplicationController).items,
        ]
        if not sets:
            # Nothing to do, and the pods are not read: other controllers
            # may change pods round after round (a StatefulSet adds one per
            # round), and indexing them all each time is what a round costs.
            return False
        # Pods by their controller's uid, and the pods without a controller by namespace:
        # each ReplicaSet looks only at its own and at those it may adopt.
        controlled: dict[str, list[Pod]] = {}
        orphans: dict[str | None, list[Pod]] = {}
        for pod in self.client.list(Pod).items:
            ref = controller_ref(pod.metadata)
            if ref is None:
                orphans.setdefault(pod.metadata.namespace, []).append(pod)
            elif ref.uid:
                controlled.setdefault(ref.uid, []).append(pod)
        # getReplicaSetsWithSameController: the sets of one owner (a
        # Deployment's old and new ones); a set without an owner stands alone.
        siblings: dict[str, list[ReplicaSet | ReplicationController]] = {}
        for rs in sets:
            ref = controller_ref(rs.metadata)
            siblings.setdefault(ref.uid if ref else rs.metadata.uid or "", []).append(rs)
        for rs in sets:
            owned = controlled.get(rs.metadata.uid or "", [])
            claimed = [p for p in owned if controlled_by(p, rs)]
            ref = controller_ref(rs.metadata)
            family = siblings[ref.uid if ref else rs.metadata.uid or ""]
            related = [p for s in family for p in controlled.get(s.metadata.uid or "", [])]
            changed |= self._sync(rs, claimed, orphans.get(rs.metadata.namespace, []), related)
        return changed

    def _sync(
        self,
        rs: ReplicaSet | ReplicationController,
        claimed: list[Pod],
        orphans: list[Pod],
        related: list[Pod],
    ) -> bool:
        changed = False
        selector, template, desired = replicated_spec(rs)
        if template is None:
            return False  # rejected by validation; nothing to create pods from
        if selector.match_labels or selector.match_expressions:
            for pod in orphans:
                if (
                    controller_ref(pod.metadata) is None
                    and is_active(pod)
                    and selector.matches(pod.metadata.labels)
                ):
                    refs = [*pod.metadata.owner_references, owner_reference(rs)]
                    adopted = pod.model_copy(
                        update={
                            "metadata": pod.metadata.model_copy(update={"owner_references": refs})
                        }
                    )
                    write(self.client, pod, adopted)
                    claimed.append(adopted)
                    changed = True

        active = [p for p in claimed if is_active(p)]
        if len(active) < desired:
            for _ in range(desired - len(active)):
                self.client.create(
                    pod_from_template(template, rs, generate_name=f"{rs.metadata.name}-")
                )
            changed = True
        elif len(active) > desired:
            now = datetime.datetime.now(datetime.UTC)
            for pod in pods_to_delete(active, related, len(active) - desired, now):
                delete(self.client, pod)
            changed = True
        return changed
