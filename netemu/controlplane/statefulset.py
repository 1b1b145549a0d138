"""The StatefulSet controller: pods `<set>-<ordinal>` for ordinals
spec.ordinals.start .. start+replicas-1, each with spec.hostname = its name
and spec.subdomain = spec.serviceName (so the governing headless Service
publishes `<pod>.<service>`), and the labels
`statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index` and
`controller-revision-hash` (`<set>-<hash>`).

Scaling down removes the highest ordinals. Kubernetes creates and removes
one pod at a time under podManagementPolicy OrderedReady; netemu computes the
end state in one step (pods become ready at once here). A pod from an
earlier template is replaced unless updateStrategy.type is OnDelete.
"""

from __future__ import annotations

from netemu.api.apps import StatefulSet
from netemu.api.core import Pod
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
from netemu.controlplane.daemonset import LABEL_REVISION_HASH, update_strategy_type
from netemu.controlplane.errors import NotFound
from netemu.controlplane.names import compute_hash

LABEL_POD_NAME = "statefulset.kubernetes.io/pod-name"
LABEL_POD_INDEX = "apps.kubernetes.io/pod-index"


class StatefulSetController:
    """Keeps each StatefulSet's ordinal pods."""

    name = "statefulset"

    def __init__(self, client: Client) -> None:
        self.client = client

    def reconcile(self) -> bool:
        changed = False
        # Pods by namespace and name, and by their controller's uid: each StatefulSet
        # looks up its own instead of scanning all (linear in objects).
        named: dict[str | None, dict[str | None, Pod]] = {}
        controlled: dict[str, list[Pod]] = {}
        for pod in self.client.list(Pod).items:
            named.setdefault(pod.metadata.namespace, {})[pod.metadata.name] = pod
            ref = controller_ref(pod.metadata)
            if ref is not None and ref.uid:
                controlled.setdefault(ref.uid, []).append(pod)
        for sts in self.client.list(StatefulSet).items:
            changed |= self._sync(
                sts,
                named.get(sts.metadata.namespace, {}),
                controlled.get(sts.metadata.uid or "", []),
            )
        return changed

    def _sync(
        self, sts: StatefulSet, in_namespace: dict[str | None, Pod], candidates: list[Pod]
    ) -> bool:
        changed = False
        set_name = sts.metadata.name or ""
        start = sts.spec.ordinals.start if sts.spec.ordinals is not None else 0
        replicas = sts.spec.replicas if sts.spec.replicas is not None else 1
        wanted = range(start, start + replicas)
        revision = f"{set_name}-{compute_hash(sts.spec.template)}"
        on_delete = update_strategy_type(sts.spec.update_strategy) == "OnDelete"

        removed: set[str | None] = set()  # names of pods deleted below
        # Highest ordinals first, as a scale-down proceeds in Kubernetes.
        owned = sorted(
            (p for p in candidates if controlled_by(p, sts)),
            key=lambda p: ordinal_of(set_name, p.metadata.name or ""),
            reverse=True,
        )
        for pod in owned:
            if is_terminating(pod):
                # Its name is taken until its kubelet has stopped it; the
                # set re-creates that ordinal only then.
                continue
            ordinal = ordinal_of(set_name, pod.metadata.name or "")
            stale = not on_delete and pod.metadata.labels.get(LABEL_REVISION_HASH) != revision
            if ordinal not in wanted or is_terminal(pod) or stale:
                delete(self.client, pod)
                if not _still_there(self.client, pod):
                    removed.add(pod.metadata.name)
                changed = True

        for ordinal in wanted:
            name = f"{set_name}-{ordinal}"
            if name in in_namespace and name not in removed:
                continue
            self.client.create(stateful_pod(sts, name, ordinal, revision))
            changed = True
        return changed


def _still_there(client: Client, pod: Pod) -> bool:
    """Whether a pod just deleted stays, being deleted gracefully."""
    try:
        client.get(Pod, pod.metadata.namespace, pod.metadata.name or "")
    except NotFound:
        return False
    return True


def ordinal_of(set_name: str, pod_name: str) -> int:
    """The ordinal in `<set>-<ordinal>`, or -1 if the name has none."""
    prefix = f"{set_name}-"
    tail = pod_name[len(prefix) :] if pod_name.startswith(prefix) else ""
    if not tail.isdigit() or str(int(tail)) != tail:
        return -1
    return int(tail)


def stateful_pod(sts: StatefulSet, name: str, ordinal: int, revision: str) -> Pod:
    template = sts.spec.template
    labels = sorted_map(
        {
            **template.metadata.labels,
            LABEL_POD_NAME: name,
            LABEL_POD_INDEX: str(ordinal),
            LABEL_REVISION_HASH: revision,
        }
    )
    pod = pod_from_template(template, sts, name=name, labels=labels)
    spec = pod.spec.model_copy(
        update={"hostname": name, "subdomain": sts.spec.service_name or None}
    )
    return pod.model_copy(update={"spec": spec})
