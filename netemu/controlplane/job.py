"""The Job controller, as kube-controller-manager's (pkg/controller/job,
Kubernetes 1.31).

Defaulting (the API server's, done here because it needs the Job's uid):
unless `manualSelector` is true, the selector becomes
`batch.kubernetes.io/controller-uid: <uid>` and the template gets the labels
`batch.kubernetes.io/controller-uid`, `batch.kubernetes.io/job-name` and
their legacy forms `controller-uid`, `job-name`; parallelism defaults to 1,
backoffLimit to 6, completionMode to NonIndexed. (Written as an update after
the create, so such a Job's metadata.generation is 2 where a cluster's is 1.)

Each sync counts the Job's pods: Succeeded and Failed ones (phases the
kubelet sets), active ones (neither, not being deleted). It keeps
min(parallelism, completions - succeeded) pods active (with completions
unset, parallelism until one pod succeeds; none while suspended). Pods are
named `<job>-<5 characters>`; in Indexed mode `<job>-<index>-<5 characters>`,
with the index in the annotation and label
`batch.kubernetes.io/job-completion-index`, the env variable
JOB_COMPLETION_INDEX (a fieldRef on that annotation, as the controller
writes it) and hostname `<job>-<index>`, each index run until one pod of it
succeeds.

The Job fails when its failures exceed backoffLimit (failed pods, plus
container restarts of active pods with restartPolicy OnFailure, as
pastBackoffLimitOnFailure counts them) or when it has been active longer
than activeDeadlineSeconds; it succeeds when `completions` pods succeeded
(with completions unset, when one succeeded and none is active). As in 1.31
(JobPodReplacementPolicy on, so delayTerminalCondition), it first adds the
interim condition (FailureTarget or SuccessCriteriaMet), deletes its
remaining active pods, and adds the terminal one (Failed or Complete, with
completionTime for Complete) once no pod of it is still running or
terminating. A finished Job with ttlSecondsAfterFinished is deleted that
long after it finished (the TTL-after-finished controller); its pods go
with it (the garbage collector).

Status: startTime, active, ready, terminating, succeeded, failed,
completedIndexes (Indexed), conditions, uncountedTerminatedPods ({}: netemu
counts finished pods directly rather than through finalizers).

Failed pods are replaced after the controller's pod failure back-off
(backoff_utils.go, getRemainingTimeForFailuresCount): 10 s after the last
failure, doubling with each failure since the last success, at most
10 minutes (DefaultJobPodFailureBackOff, MaxJobPodFailureBackOff); until
then manageJob creates no pod. A pod's finish time is its containers'
latest finishedAt, else its Ready=False transition, else its creation.

The clock is an input (`clock`), read for startTime, the conditions' times,
the deadlines and the back-off; `next_event` says when a deadline or the end
of a back-off comes so a live lab runs a round then.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Sequence
from typing import Any

from netemu.api.base import LabelSelector
from netemu.api.batch import Job
from netemu.api.core import Pod
from netemu.controlplane.client import Client
from netemu.controlplane.common import (
    controller_ref,
    delete,
    is_pod_ready,
    is_terminating,
    pod_from_template,
    sorted_map,
    write,
)
from netemu.controlplane.errors import NotFound
from netemu.controlplane.store import Clock, rfc3339, wall_clock

LABEL_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID = "controller-uid"
LEGACY_JOB_NAME = "job-name"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
DEFAULT_BACKOFF_LIMIT = 6

REASON_COMPLETIONS = "CompletionsReached"
MESSAGE_COMPLETIONS = "Reached expected number of succeeded pods"
REASON_BACKOFF = "BackoffLimitExceeded"
MESSAGE_BACKOFF = "Job has reached the specified backoff limit"
REASON_DEADLINE = "DeadlineExceeded"
# The pod failure back-off (pkg/controller/job/job_controller.go).
POD_FAILURE_BACKOFF = datetime.timedelta(seconds=10)
MAX_POD_FAILURE_BACKOFF = datetime.timedelta(minutes=10)
MESSAGE_DEADLINE = "Job was active longer than specified deadline"


def parse_time(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def finished(job: Job) -> str | None:
    """ "Complete" or "Failed" once the Job has that condition (IsJobFinished)."""
    status = job.status if isinstance(job.status, dict) else {}
    for kind in ("Complete", "Failed"):
        if condition(status, kind) is not None:
            return kind
    return None


def is_indexed(job: Job) -> bool:
    return job.spec.completion_mode == "Indexed"


class JobController:
    """Runs Jobs' pods to completion (see the module)."""

    name = "job"

    def __init__(self, client: Client, clock: Clock = wall_clock) -> None:
        self.client = client
        self.clock = clock

    def _owned_by_job(self) -> dict[str, list[Pod]]:
        owned: dict[str, list[Pod]] = {}
        for pod in self.client.list(Pod).items:
            ref = controller_ref(pod.metadata)
            if ref is not None and ref.kind == "Job" and ref.uid:
                owned.setdefault(ref.uid, []).append(pod)
        return owned

    def reconcile(self) -> bool:
        jobs = self.client.list(Job).items
        if not jobs:
            return False  # and the pods are not read (see ReplicaSetController)
        owned = self._owned_by_job()
        changed = False
        now = self.clock()
        for job in jobs:
            if job.spec.selector is None and not job.spec.manual_selector:
                changed |= write(self.client, job, defaulted(job))
                continue
            changed |= self._sync(job, owned.get(job.metadata.uid or "", []), now)
        return changed

    def next_event(self) -> datetime.datetime | None:
        """The earliest time a deadline, a TTL or a pod failure back-off of a
        Job falls due."""
        times = []
        jobs = self.client.list(Job).items
        # The pods only when a Job is still running (the timer asks every second).
        owned = self._owned_by_job() if any(finished(j) is None for j in jobs) else {}
        for job in jobs:
            status = job.status if isinstance(job.status, dict) else {}
            if finished(job) is None:
                until = backoff_until(owned.get(job.metadata.uid or "", []))
                if until is not None:
                    times.append(until)
                start = parse_time(status.get("startTime"))
                deadline = job.spec.active_deadline_seconds
                if start is not None and deadline is not None:
                    times.append(start + datetime.timedelta(seconds=deadline))
            ttl = job.spec.ttl_seconds_after_finished
            done = _finish_time(status)
            if ttl is not None and done is not None:
                times.append(done + datetime.timedelta(seconds=ttl))
        return min(times) if times else None

    def _sync(self, job: Job, pods: Sequence[Pod], now: datetime.datetime) -> bool:
        status: dict[str, Any] = dict(job.status) if isinstance(job.status, dict) else {}
        conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
        succeeded = [p for p in pods if p.status.phase == "Succeeded"]
        failed = [p for p in pods if p.status.phase == "Failed"]
        running = [p for p in pods if p.status.phase not in ("Succeeded", "Failed")]
        active = [p for p in running if not is_terminating(p)]
        terminating = [p for p in running if is_terminating(p)]
        stamp = rfc3339(now)

        done = finished(job)
        if done is not None:
            ttl = job.spec.ttl_seconds_after_finished
            finished_at = _finish_time(status)
            expired = (
                ttl is not None
                and finished_at is not None
                and now >= finished_at + datetime.timedelta(seconds=ttl)
            )
            if expired:
                with contextlib.suppress(NotFound):
                    delete(self.client, job)
                return True
            return False

        if "startTime" not in status and not job.spec.suspend:
            status["startTime"] = stamp
        start = parse_time(status.get("startTime"))
        spec = job.spec
        parallelism = 1 if spec.parallelism is None else spec.parallelism
        backoff_limit = DEFAULT_BACKOFF_LIMIT if spec.backoff_limit is None else spec.backoff_limit
        restarts = 0
        if spec.template.spec.restart_policy == "OnFailure":
            restarts = sum(c.restart_count for p in active for c in p.status.container_statuses)

        changed = False
        target = condition(status, "FailureTarget") or condition(status, "SuccessCriteriaMet")
        if target is None:
            if len(failed) + restarts > backoff_limit:
                target = _condition("FailureTarget", REASON_BACKOFF, MESSAGE_BACKOFF, stamp)
            elif (
                spec.active_deadline_seconds is not None
                and start is not None
                and now >= start + datetime.timedelta(seconds=spec.active_deadline_seconds)
            ):
                target = _condition("FailureTarget", REASON_DEADLINE, MESSAGE_DEADLINE, stamp)
            elif _complete(job, succeeded, active):
                target = _condition(
                    "SuccessCriteriaMet", REASON_COMPLETIONS, MESSAGE_COMPLETIONS, stamp
                )
            if target is not None:
                conditions.append(target)

        if target is not None:
            # Finishing: no new pods; the remaining active ones are deleted.
            for pod in active:
                delete(self.client, pod)
                changed = True
            terminating = [*terminating, *active]
            active = []
            if not terminating:
                final = "Failed" if target["type"] == "FailureTarget" else "Complete"
                conditions.append(_condition(final, target["reason"], target["message"], stamp))
                if final == "Complete":
                    status["completionTime"] = stamp
        elif not spec.suspend:
            until = backoff_until(pods)
            may_create = until is None or now >= until
            changed |= self._scale(job, parallelism, succeeded, active, may_create=may_create)
            active = [p for p in self._owned_now(job) if _is_active(p)]

        status.update(
            {
                "active": len(active),
                "ready": sum(1 for p in active if is_pod_ready(p)),
                "terminating": len(terminating),
                "succeeded": len(succeeded),
                "failed": len(failed),
                "uncountedTerminatedPods": {},
            }
        )
        if is_indexed(job):
            indexes = sorted({i for p in succeeded if (i := _index(p)) is not None})
            if indexes:
                status["completedIndexes"] = _ranges(indexes)
        if conditions:
            status["conditions"] = conditions
        for zero in ("active", "succeeded", "failed"):
            if not status[zero]:
                del status[zero]  # omitempty (ready and terminating are pointers: kept)
        status = dict(sorted(status.items()))
        changed |= write(self.client, job, job.model_copy(update={"status": status}))
        return changed

    def _owned_now(self, job: Job) -> list[Pod]:
        return [
            p
            for p in self.client.list(Pod, namespace=job.metadata.namespace).items
            if (ref := controller_ref(p.metadata)) is not None and ref.uid == job.metadata.uid
        ]

    def _scale(
        self,
        job: Job,
        parallelism: int,
        succeeded: Sequence[Pod],
        active: Sequence[Pod],
        *,
        may_create: bool,
    ) -> bool:
        """Pods created or deleted to keep the wanted number active; none
        created while `may_create` is false (the pod failure back-off)."""
        completions = job.spec.completions
        if is_indexed(job) and completions is not None:
            done = {_index(p) for p in succeeded}
            running = {_index(p) for p in active}
            pending = [i for i in range(completions) if i not in done and i not in running]
            room = max(parallelism - len(active), 0) if may_create else 0
            for index in pending[:room]:
                self.client.create(pod_for(job, index))
            return bool(pending[:room])
        if completions is None:
            # A work queue: once one pod succeeded, no new ones, and those
            # running are left running (manageJob).
            wanted = len(active) if succeeded else parallelism
        else:
            wanted = max(min(parallelism, completions - len(succeeded)), 0)
        if len(active) < wanted:
            if not may_create:
                return False
            for _ in range(wanted - len(active)):
                self.client.create(pod_for(job, None))
            return True
        if len(active) > wanted:
            # Newest (highest name) first, a stand-in for the controller's ranking.
            for pod in sorted(active, key=lambda p: p.metadata.name or "", reverse=True)[
                : len(active) - wanted
            ]:
                delete(self.client, pod)
            return True
        return False


def finish_time(pod: Pod) -> datetime.datetime:
    """getFinishedTime: the containers' latest finishedAt when all finished,
    else the Ready=False condition's transition, else the pod's creation."""
    ends = [
        parse_time(c.state.terminated.finished_at) if c.state and c.state.terminated else None
        for c in pod.status.container_statuses
    ]
    if ends and all(end is not None for end in ends):
        return max(end for end in ends if end is not None)
    for cond in pod.status.conditions:
        when = parse_time(cond.last_transition_time)
        if cond.type == "Ready" and cond.status == "False" and when is not None:
            return when
    created = parse_time(pod.metadata.creation_timestamp)
    return created or datetime.datetime.min.replace(tzinfo=datetime.UTC)


def backoff_until(pods: Sequence[Pod]) -> datetime.datetime | None:
    """When the pod failure back-off of a Job with these pods ends (None:
    no failure since its last success): newBackoffRecord counts the failures
    finished after the last success, getRemainingTimeForFailuresCount waits
    10 s after the last of them, doubled per further failure, at most 10 min."""
    failed = sorted(finish_time(p) for p in pods if p.status.phase == "Failed")
    succeeded = [finish_time(p) for p in pods if p.status.phase == "Succeeded"]
    if succeeded:
        last_success = max(succeeded)
        failed = [t for t in failed if t > last_success]
    if not failed:
        return None
    delay = POD_FAILURE_BACKOFF
    for _ in range(1, len(failed)):
        delay *= 2
        if delay >= MAX_POD_FAILURE_BACKOFF:
            delay = MAX_POD_FAILURE_BACKOFF
            break
    return failed[-1] + delay


def _is_active(pod: Pod) -> bool:
    return pod.status.phase not in ("Succeeded", "Failed") and not is_terminating(pod)


def _complete(job: Job, succeeded: Sequence[Pod], active: Sequence[Pod]) -> bool:
    completions = job.spec.completions
    if completions is None:
        return bool(succeeded) and not active
    if is_indexed(job):
        return len({_index(p) for p in succeeded} - {None}) >= completions
    return len(succeeded) >= completions


def _condition(kind: str, reason: str, message: str, stamp: str) -> dict[str, Any]:
    return {
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
        "message": message,
        "reason": reason,
        "status": "True",
        "type": kind,
    }


def _finish_time(status: dict[str, Any]) -> datetime.datetime | None:
    for kind in ("Complete", "Failed"):
        cond = condition(status, kind)
        if cond is not None:
            return parse_time(cond.get("lastTransitionTime"))
    return None


def _index(pod: Pod) -> int | None:
    text = pod.metadata.annotations.get(COMPLETION_INDEX)
    return int(text) if text is not None and text.isdigit() else None


def _ranges(indexes: list[int]) -> str:
    """completedIndexes: "0-2,5" as the controller writes intervals."""
    parts: list[str] = []
    start = prev = indexes[0]
    for i in [*indexes[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(parts)


def job_labels(job: Job) -> dict[str, str]:
    uid, name = job.metadata.uid or "", job.metadata.name or ""
    return {
        LABEL_CONTROLLER_UID: uid,
        LABEL_JOB_NAME: name,
        LEGACY_CONTROLLER_UID: uid,
        LEGACY_JOB_NAME: name,
    }


def defaulted(job: Job) -> Job:
    """The Job as the API server stores it: generated selector and template
    labels, parallelism, backoffLimit and completionMode defaults."""
    spec = job.spec
    labels = sorted_map({**spec.template.metadata.labels, **job_labels(job)})
    template = spec.template.model_copy(
        update={"metadata": spec.template.metadata.model_copy(update={"labels": labels})}
    )
    update: dict[str, Any] = {
        "template": template,
        "selector": LabelSelector(match_labels={LABEL_CONTROLLER_UID: job.metadata.uid or ""}),
    }
    if spec.parallelism is None:
        update["parallelism"] = 1
    if spec.backoff_limit is None:
        update["backoff_limit"] = DEFAULT_BACKOFF_LIMIT
    if spec.completion_mode is None:
        update["completion_mode"] = "NonIndexed"
    if spec.completions is None and spec.parallelism is None:
        update["completions"] = 1  # SetDefaults_Job: both unset → 1 and 1
    if spec.suspend is None:
        update["suspend"] = False
    return job.model_copy(update={"spec": spec.model_copy(update=update)})


def pod_for(job: Job, index: int | None) -> Pod:
    """A pod of `job` (for completion index `index` in Indexed mode)."""
    name = job.metadata.name or ""
    template = job.spec.template
    if index is None:
        return pod_from_template(template, job, generate_name=f"{name}-")
    annotations = {**template.metadata.annotations, COMPLETION_INDEX: str(index)}
    labels = {**template.metadata.labels, COMPLETION_INDEX: str(index)}
    env_var = {
        "name": "JOB_COMPLETION_INDEX",
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}},
    }
    containers = [
        c.model_copy(update={"env": [env_var, *(c.env if isinstance(c.env, list) else [])]})
        for c in template.spec.containers
    ]
    spec = template.spec.model_copy(
        update={"containers": containers, "hostname": template.spec.hostname or f"{name}-{index}"}
    )
    indexed = template.model_copy(
        update={
            "metadata": template.metadata.model_copy(
                update={"annotations": sorted_map(annotations), "labels": sorted_map(labels)}
            ),
            "spec": spec,
        }
    )
    return pod_from_template(indexed, job, generate_name=f"{name}-{index}-")
