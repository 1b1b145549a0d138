"""Which pods a ReplicaSet (or ReplicationController) deletes when it has
too many: the replica set controller's getPodsToDelete, which sorts its
active pods with controller.ActivePodsWithRanks and takes the first ones.

The order, first deleted first (pkg/controller/controller_utils.go, Less):

1. unassigned (no nodeName) before assigned;
2. phase Pending before Unknown before Running;
3. not ready before ready;
4. lower `controller.kubernetes.io/pod-deletion-cost` before higher (an
   absent or unreadable annotation counts as 0, as the sort reads it);
5. pods on nodes with more *related* active pods before those on nodes with
   fewer (related: the pods of every ReplicaSet with the same owner, so a
   Deployment's rollout spreads what is left across nodes);
6. both ready: ready more recently before ready longer, in power-of-two
   buckets of how long ago (LogarithmicScaleDown, on since 1.22);
7. more container restarts (the highest of its containers) before fewer;
8. created more recently before created earlier, again in power-of-two
   buckets; a tie within a bucket goes to the lower uid (so which of two
   pods of the same age goes is random, as in Kubernetes, yet stable).

Pure: the time is passed in.
"""

from __future__ import annotations

import datetime
import functools
import math
import re
from collections.abc import Sequence
from typing import Any

from netemu.api.core import Pod
from netemu.controlplane.common import is_active, is_pod_ready

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
_PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}
_INT32 = re.compile(r"[+-]?[0-9]+")


def deletion_cost(pod: Pod) -> int:
    """GetDeletionCostFromPodAnnotations: an int32, 0 when absent or invalid."""
    text = pod.metadata.annotations.get(DELETION_COST)
    if text is None or not _INT32.fullmatch(text):
        return 0
    value = int(text)
    return value if -(2**31) <= value < 2**31 else 0


def _time(value: Any) -> datetime.datetime | None:
    """A metav1.Time from its JSON form; None for the zero time."""
    if not value:
        return None
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    try:
        when = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def _ready_time(pod: Pod) -> datetime.datetime | None:
    for condition in pod.status.conditions:
        if condition.type == "Ready" and condition.status == "True":
            return _time(condition.last_transition_time)
    return None


def _log_rank(when: datetime.datetime, now: datetime.datetime) -> int:
    """The power-of-two bucket of how long ago `when` was, in nanoseconds
    as Go's time.Duration counts (-1 for now or the future)."""
    nanoseconds = (now - when) // datetime.timedelta(microseconds=1) * 1000
    return int(math.log2(nanoseconds)) if nanoseconds > 0 else -1


def _newer_first(
    a: datetime.datetime | None, b: datetime.datetime | None, now: datetime.datetime
) -> int:
    """<0 if `a` goes first: the zero time first, then the more recent
    bucket (afterOrZero and logarithmicRankDiff); 0 for the same bucket."""
    if a is None or b is None:
        return (a is not None) - (b is not None)
    return _log_rank(a, now) - _log_rank(b, now)


def _compare(a: Pod, b: Pod, rank_a: int, rank_b: int, now: datetime.datetime) -> int:
    """<0 if `a` is deleted before `b` (ActivePodsWithRanks.Less), >0 after."""
    if bool(a.spec.node_name) != bool(b.spec.node_name):
        return -1 if not a.spec.node_name else 1
    phase_a = _PHASE_ORDINAL.get(a.status.phase or "Pending", 0)
    phase_b = _PHASE_ORDINAL.get(b.status.phase or "Pending", 0)
    if phase_a != phase_b:
        return phase_a - phase_b
    ready_a, ready_b = is_pod_ready(a), is_pod_ready(b)
    if ready_a != ready_b:
        return -1 if not ready_a else 1
    if deletion_cost(a) != deletion_cost(b):
        return deletion_cost(a) - deletion_cost(b)
    if rank_a != rank_b:
        return rank_b - rank_a
    if ready_a and ready_b:
        time_a, time_b = _ready_time(a), _ready_time(b)
        if time_a != time_b:
            order = _newer_first(time_a, time_b, now)
            if order:
                return order
            return _by_uid(a, b)
    restarts_a, restarts_b = _max_restarts(a), _max_restarts(b)
    if restarts_a != restarts_b:
        return restarts_b - restarts_a
    created_a, created_b = (
        _time(a.metadata.creation_timestamp),
        _time(b.metadata.creation_timestamp),
    )
    if created_a != created_b:
        order = _newer_first(created_a, created_b, now)
        if order:
            return order
        return _by_uid(a, b)
    return 0


def _by_uid(a: Pod, b: Pod) -> int:
    uid_a, uid_b = a.metadata.uid or "", b.metadata.uid or ""
    return (uid_a > uid_b) - (uid_a < uid_b)


def _max_restarts(pod: Pod) -> int:
    return max((s.restart_count for s in pod.status.container_statuses), default=0)


def pods_to_delete(
    pods: Sequence[Pod],
    related: Sequence[Pod],
    count: int,
    now: datetime.datetime,
) -> list[Pod]:
    """The `count` pods of `pods` (a set's active pods) to delete first.
    `related`: the active and inactive pods of every set with the same
    owner (or of this set alone), whose active ones on a node give that
    node's rank (getPodsRankedByRelatedPodsOnSameNode)."""
    on_node: dict[str, int] = {}
    for pod in related:
        if is_active(pod):
            node = pod.spec.node_name or ""
            on_node[node] = on_node.get(node, 0) + 1
    ranks = {id(pod): on_node.get(pod.spec.node_name or "", 0) for pod in pods}

    def order(a: Pod, b: Pod) -> int:
        return _compare(a, b, ranks[id(a)], ranks[id(b)], now)

    return sorted(pods, key=functools.cmp_to_key(order))[: max(count, 0)]
