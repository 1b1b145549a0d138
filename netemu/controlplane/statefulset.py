"""The StatefulSet controller: pods `<set>-<ordinal>` for ordinals
spec.ordinals.start .. start+replicas-1, each with spec.hostname = its name
and spec.subdomain = spec.serviceName (so the governing headless Service
publishes `<pod>.<service>`), and the labels
`statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index` and
`controller-revision-hash` (`<set>-<hash>`).

It follows kube-controller-manager's updateStatefulSet
(pkg/controller/statefulset/stateful_set_control.go), one sync per round:

- podManagementPolicy OrderedReady (the default, "monotonic" there): the
  pods are visited in ordinal order and the first one that is missing is
  created, and nothing more happens in that sync; a pod that is not
  Running and Ready, or is terminating, blocks everything after it
  ("waiting for Pod to be Running and Ready"). Only once every pod in
  range is healthy are the pods beyond it (a scale-down) deleted: the
  highest ordinal first, one per sync, each waiting until the one before
  is gone entirely (its terminating pod blocks).
- Parallel: every missing pod is created and every pod beyond the range
  deleted in the same sync; nothing waits for readiness.
- A Failed or Succeeded pod is deleted and re-created in a later sync.
- updateStrategy RollingUpdate (the default): once the pods in range are
  settled, pods from an earlier template are deleted from the highest
  ordinal down to rollingUpdate.partition, at most
  rollingUpdate.maxUnavailable (default 1) pods unavailable at a time
  (updateStatefulSetAfterInvariantEstablished, MaxUnavailableStatefulSet
  on by default since 1.35); a deleted pod comes back from the current
  template through the steps above. OnDelete replaces nothing.

Offline (no kubelet probes) a pod is Running and Ready as soon as it is
placed, so the runner's rounds add one pod per round until every replica
exists: the end state is what a cluster settles in. In a live lab a pod
with a readiness probe holds the set until its probe passes. netemu keeps
no ControllerRevisions: a pod re-created below the partition gets the
current template (Kubernetes would give it the set's current revision),
and minReadySeconds is not modelled (ready counts as available).
"""

from __future__ import annotations

from dataclasses import dataclass

from netemu.api.apps import StatefulSet
from netemu.api.core import Pod
from netemu.controlplane.client import Client
from netemu.controlplane.common import (
    IdentityMemo,
    controlled_by,
    controller_ref,
    delete,
    is_pod_ready,
    is_terminal,
    is_terminating,
    pod_from_template,
    sorted_map,
)
from netemu.controlplane.daemonset import LABEL_REVISION_HASH, update_strategy_type
from netemu.controlplane.names import compute_hash

LABEL_POD_NAME = "statefulset.kubernetes.io/pod-name"
LABEL_POD_INDEX = "apps.kubernetes.io/pod-index"


class StatefulSetController:
    """Keeps each StatefulSet's ordinal pods."""

    name = "statefulset"

    def __init__(self, client: Client) -> None:
        self.client = client
        # is_healthy of each pod, by identity: a sync asks it of every pod
        # of the set up to three times, and a set under OrderedReady is
        # synced every round while it grows by a pod per round.
        self._healthy = IdentityMemo(is_healthy)

    def reconcile(self) -> bool:
        self._healthy.start_pass()
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
        """One pass of updateStatefulSet: replicas in range, then those
        beyond it, then the rolling update. In OrderedReady each step may
        end the pass; the next round continues from the new state."""
        plan = SetPlan.of(sts)
        ordered = plan.ordered
        replicas: dict[int, Pod] = {}
        condemned: list[Pod] = []
        for pod in candidates:
            if not controlled_by(pod, sts):
                continue
            ordinal = ordinal_of(plan.set_name, pod.metadata.name or "")
            if ordinal in plan.wanted:
                replicas[ordinal] = pod
            elif ordinal >= 0:
                condemned.append(pod)
            # A pod whose name has no ordinal is left alone, as Kubernetes does.
        condemned.sort(key=lambda p: ordinal_of(plan.set_name, p.metadata.name or ""), reverse=True)

        changed = False
        unsettled: set[int] = set()  # ordinals with no healthy pod after this pass
        for ordinal in plan.wanted:
            current = replicas.get(ordinal)
            if current is None:
                name = f"{plan.set_name}-{ordinal}"
                if name in in_namespace:
                    # Another owner's pod holds the name: the create would fail
                    # (AlreadyExists) and Kubernetes retries it every sync.
                    unsettled.add(ordinal)
                    if ordered:
                        return changed
                    continue
                self.client.create(stateful_pod(sts, name, ordinal, plan.revision))
                changed = True
                unsettled.add(ordinal)
                if ordered:
                    return changed  # processReplica: one creation per sync
                continue
            if is_terminal(current):
                # Its containers will not run again: deleted, and created
                # anew in a later sync once it is gone (processReplica).
                if not is_terminating(current):
                    delete(self.client, current)
                    changed = True
                unsettled.add(ordinal)
                if ordered:
                    return changed
                continue
            if not self._healthy(current):
                unsettled.add(ordinal)
                if ordered:
                    # "waiting for Pod to be Running and Ready" (or to terminate).
                    return changed
        first_unhealthy = next(
            (
                pod
                for pod in [*(replicas.get(o) for o in plan.wanted), *reversed(condemned)]
                if pod is not None and not self._healthy(pod)
            ),
            None,
        )

        # Scale-down (processCondemned): highest ordinal first. In OrderedReady
        # the pass stops at a pod still terminating, and after each deletion;
        # an unhealthy pod is deleted only if it is the set's first unhealthy
        # pod (the lowest ordinal), else the pass waits for that one to be
        # ready, as processCondemned does.
        for pod in condemned:
            if is_terminating(pod):
                if ordered:
                    return changed
                continue
            if ordered and not self._healthy(pod) and pod is not first_unhealthy:
                return changed
            delete(self.client, pod)
            changed = True
            if ordered:
                return changed

        if plan.on_delete:
            return changed
        return self._roll(plan, replicas, unsettled) or changed

    def _roll(self, plan: SetPlan, replicas: dict[int, Pod], unsettled: set[int]) -> bool:
        """RollingUpdate: delete pods of an earlier template from the highest
        ordinal down to the partition, keeping at most maxUnavailable pods in
        range unavailable (updateStatefulSetAfterInvariantEstablished)."""
        unavailable = sum(
            1
            for ordinal in plan.wanted
            if ordinal in unsettled or not self._healthy(replicas[ordinal])
        )
        budget = plan.max_unavailable - unavailable
        changed = False
        for ordinal in reversed(plan.wanted):
            if budget <= 0 or ordinal - plan.wanted.start < plan.partition:
                break
            pod = replicas.get(ordinal)
            if pod is None or is_terminating(pod):
                continue
            if pod.metadata.labels.get(LABEL_REVISION_HASH) != plan.revision:
                delete(self.client, pod)
                changed = True
                budget -= 1
        return changed


@dataclass(frozen=True)
class SetPlan:
    """What one StatefulSet's spec asks for, read once per sync."""

    set_name: str
    wanted: range
    revision: str
    ordered: bool
    on_delete: bool
    partition: int
    max_unavailable: int

    @classmethod
    def of(cls, sts: StatefulSet) -> SetPlan:
        set_name = sts.metadata.name or ""
        start = sts.spec.ordinals.start if sts.spec.ordinals is not None else 0
        replicas = sts.spec.replicas if sts.spec.replicas is not None else 1
        rolling = _rolling_update(sts.spec.update_strategy)
        return cls(
            set_name=set_name,
            wanted=range(start, start + replicas),
            revision=f"{set_name}-{compute_hash(sts.spec.template)}",
            # allowsBurst: only Parallel lets go of the order.
            ordered=sts.spec.pod_management_policy != "Parallel",
            on_delete=update_strategy_type(sts.spec.update_strategy) == "OnDelete",
            partition=_non_negative(rolling.get("partition")),
            max_unavailable=max_unavailable(rolling.get("maxUnavailable"), replicas),
        )


def is_healthy(pod: Pod) -> bool:
    """isHealthy: Running, Ready and not being deleted."""
    return pod.status.phase == "Running" and is_pod_ready(pod) and not is_terminating(pod)


def max_unavailable(value: object, replicas: int) -> int:
    """getStatefulSetMaxUnavailable: an integer, or a percentage of the
    replicas rounded down; never less than 1 (an absent value is 1, as
    defaulted)."""
    count = 1
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    elif isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
        count = int(value[:-1]) * replicas // 100
    return max(count, 1)


def _rolling_update(strategy: object) -> dict[str, object]:
    rolling = strategy.get("rollingUpdate") if isinstance(strategy, dict) else None
    return rolling if isinstance(rolling, dict) else {}


def _non_negative(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return max(value, 0)
    return 0


def rounds_needed(client: Client) -> int:
    """Rounds beyond the usual that StatefulSets may need to settle when
    deleted pods go at once (offline, or in tests without kubelets), as
    each step waits for the one before: under OrderedReady a round per pod
    created and per pod a scale-down deletes; under RollingUpdate two per
    pod replaced (deleted in one round, created in the next)."""
    per_set: dict[str, int] = {}
    for sts in client.list(StatefulSet).items:
        plan = SetPlan.of(sts)
        replicas = len(plan.wanted)
        rounds = (replicas if plan.ordered else 0) + (0 if plan.on_delete else 2 * replicas)
        if rounds:
            per_set[sts.metadata.uid or ""] = rounds
    if not per_set:
        return 0
    condemned = 0
    for pod in client.list(Pod).items:
        ref = controller_ref(pod.metadata)
        if ref is not None and ref.kind == "StatefulSet" and ref.uid in per_set:
            condemned += 1
    return sum(per_set.values()) + condemned


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
