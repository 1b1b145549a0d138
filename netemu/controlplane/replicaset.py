"""The ReplicaSet controller: keeps spec.replicas (default 1) active pods.

Pods are named `<replicaset>-<5 characters>` (generateName). Orphan pods
matching the selector are adopted, as Kubernetes does. When scaling down,
pods are removed in the spirit of controller.ActivePods: unscheduled before
scheduled, Pending before Running, not-ready before ready, then by name (a
deterministic stand-in for "newest first", since netemu keeps no creation
timestamps).
"""

from __future__ import annotations

import datetime

from netemu.api.apps import ReplicaSet
from netemu.api.core import Pod
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


class ReplicaSetController:
    """Creates and deletes pods so each ReplicaSet has spec.replicas of them."""

    name = "replicaset"

    def __init__(self, client: Client) -> None:
        self.client = client

    def reconcile(self) -> bool:
        changed = False
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
        sets = self.client.list(ReplicaSet).items
        # getReplicaSetsWithSameController: the sets of one owner (a
        # Deployment's old and new ones); a set without an owner stands alone.
        siblings: dict[str, list[ReplicaSet]] = {}
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
        self, rs: ReplicaSet, claimed: list[Pod], orphans: list[Pod], related: list[Pod]
    ) -> bool:
        changed = False
        selector = rs.spec.selector
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
        desired = rs.spec.replicas if rs.spec.replicas is not None else 1
        if len(active) < desired:
            for _ in range(desired - len(active)):
                self.client.create(
                    pod_from_template(rs.spec.template, rs, generate_name=f"{rs.metadata.name}-")
                )
            changed = True
        elif len(active) > desired:
            now = datetime.datetime.now(datetime.UTC)
            for pod in pods_to_delete(active, related, len(active) - desired, now):
                delete(self.client, pod)
            changed = True
        return changed
