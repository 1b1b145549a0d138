"""The Deployment controller: one ReplicaSet per pod template.

The current template's ReplicaSet is named `<deployment>-<pod-template-hash>`
and carries the `pod-template-hash` label in its labels, selector and pod
template; it is scaled to spec.replicas (default 1). ReplicaSets of earlier
templates are scaled to 0 and kept up to spec.revisionHistoryLimit (default
10), each with the `deployment.kubernetes.io/revision` annotation. Rollout is
immediate (the end state of a rolling update, without the intermediate
steps). A name taken by a ReplicaSet the Deployment does not own is handled
as Kubernetes does, by hashing again with a collision count.
"""

from __future__ import annotations

from netemu.api.apps import Deployment, ReplicaSet, ReplicaSetSpec
from netemu.api.base import LabelSelector, ObjectMeta
from netemu.api.core import PodTemplateSpec
from netemu.controlplane.client import Client
from netemu.controlplane.common import (
    controlled_by,
    controller_ref,
    delete,
    owner_reference,
    sorted_map,
    write,
)
from netemu.controlplane.names import compute_hash

LABEL_POD_TEMPLATE_HASH = "pod-template-hash"
ANNOTATION_REVISION = "deployment.kubernetes.io/revision"
DEFAULT_REVISION_HISTORY_LIMIT = 10
_MAX_COLLISIONS = 100


class DeploymentController:
    """Keeps each Deployment's ReplicaSets in line with its template and replicas."""

    name = "deployment"

    def __init__(self, client: Client) -> None:
        self.client = client

    def reconcile(self) -> bool:
        changed = False
        # ReplicaSets by namespace and name, and by their controller's uid: each
        # Deployment looks up its own instead of scanning all (linear in objects).
        by_name: dict[tuple[str | None, str | None], ReplicaSet] = {}
        controlled: dict[str, list[ReplicaSet]] = {}
        for rs in self.client.list(ReplicaSet).items:
            by_name[(rs.metadata.namespace, rs.metadata.name)] = rs
            ref = controller_ref(rs.metadata)
            if ref is not None and ref.uid:
                controlled.setdefault(ref.uid, []).append(rs)
        for deploy in self.client.list(Deployment).items:
            owned = [
                rs
                for rs in controlled.get(deploy.metadata.uid or "", [])
                if controlled_by(rs, deploy)
            ]
            changed |= self._sync(deploy, by_name, owned)
        return changed

    def _sync(
        self,
        deploy: Deployment,
        by_namespace_name: dict[tuple[str | None, str | None], ReplicaSet],
        owned: list[ReplicaSet],
    ) -> bool:
        namespace = deploy.metadata.namespace
        collision: int | None = None
        while True:
            template_hash = compute_hash(deploy.spec.template, collision)
            name = f"{deploy.metadata.name}-{template_hash}"
            current = by_namespace_name.get((namespace, name))
            if current is None or controlled_by(current, deploy):
                break
            collision = (collision or 0) + 1
            if collision > _MAX_COLLISIONS:
                return False

        replicas = deploy.spec.replicas if deploy.spec.replicas is not None else 1
        old = [rs for rs in owned if rs.metadata.name != name]
        max_old_revision = max((revision(rs) for rs in old), default=0)
        changed = False
        if current is None:
            self.client.create(
                new_replica_set(deploy, name, template_hash, replicas, max_old_revision + 1)
            )
            changed = True
        else:
            meta = current.metadata
            if revision(current) <= max_old_revision:
                # A rollback to an earlier template makes its ReplicaSet the newest revision.
                annotations = sorted_map(
                    {**meta.annotations, ANNOTATION_REVISION: str(max_old_revision + 1)}
                )
                meta = meta.model_copy(update={"annotations": annotations})
            spec = current.spec.model_copy(update={"replicas": replicas})
            changed |= write(
                self.client, current, current.model_copy(update={"metadata": meta, "spec": spec})
            )

        for rs in old:
            if rs.spec.replicas != 0:
                scaled = rs.spec.model_copy(update={"replicas": 0})
                changed |= write(self.client, rs, rs.model_copy(update={"spec": scaled}))

        limit = deploy.spec.revision_history_limit
        if not isinstance(limit, int) or limit < 0:
            limit = DEFAULT_REVISION_HISTORY_LIMIT
        history = sorted(old, key=lambda rs: (revision(rs), rs.metadata.name or ""))
        for rs in history[: max(len(history) - limit, 0)]:
            delete(self.client, rs)
            changed = True
        return changed


def revision(rs: ReplicaSet) -> int:
    try:
        return int(rs.metadata.annotations.get(ANNOTATION_REVISION, "0"))
    except ValueError:
        return 0


def new_replica_set(
    deploy: Deployment, name: str, template_hash: str, replicas: int, rev: int
) -> ReplicaSet:
    template = deploy.spec.template
    labels = sorted_map({**template.metadata.labels, LABEL_POD_TEMPLATE_HASH: template_hash})
    selector = LabelSelector(
        match_labels=sorted_map(
            {**deploy.spec.selector.match_labels, LABEL_POD_TEMPLATE_HASH: template_hash}
        ),
        match_expressions=list(deploy.spec.selector.match_expressions),
    )
    return ReplicaSet(
        metadata=ObjectMeta(
            name=name,
            namespace=deploy.metadata.namespace,
            labels=labels,
            annotations={ANNOTATION_REVISION: str(rev)},
            owner_references=[owner_reference(deploy)],
        ),
        spec=ReplicaSetSpec(
            replicas=replicas,
            selector=selector,
            template=PodTemplateSpec(
                metadata=template.metadata.model_copy(update={"labels": labels}),
                spec=template.spec,
            ),
        ),
    )
