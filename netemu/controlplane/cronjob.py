"""The CronJob controller, as kube-controller-manager's (pkg/controller/cronjob,
cronjob_controllerv2.go and utils.go).

A CronJob's `schedule` (five cron fields or a descriptor such as `@hourly`,
parsed by croniter; evaluated in `timeZone`, default UTC) gives the times at
which it runs. At each sync the controller takes the most recent scheduled
time after the last one it ran (or the CronJob's creation) that is not in the
future; if `startingDeadlineSeconds` has passed since it, that run is missed.
Otherwise, unless suspended, it creates the Job `<cronjob>-<minutes since
the epoch of the scheduled time>` from `jobTemplate` (labels and annotations
of the template, plus `batch.kubernetes.io/cronjob-scheduled-timestamp`),
owned by the CronJob, after applying `concurrencyPolicy`: Allow runs it
beside active Jobs, Forbid skips it while one is active, Replace deletes the
active ones first. Finished Jobs beyond `successfulJobsHistoryLimit`
(default 3) and `failedJobsHistoryLimit` (default 1) are deleted, oldest
first. Status: `active` (references to its unfinished Jobs),
`lastScheduleTime`, `lastSuccessfulTime`.

`job_from_cronjob` is `kubectl create job NAME --from=cronjob/CJ`: a Job
with the template's spec, annotated `cronjob.kubernetes.io/instantiate:
manual`, owned by the CronJob.
"""

from __future__ import annotations

import datetime
import zoneinfo
from typing import Any

from croniter import croniter

from netemu.api.base import ObjectMeta
from netemu.api.batch import CronJob, Job, schedule_error
from netemu.controlplane.client import Client
from netemu.controlplane.common import controller_ref, delete, owner_reference, sorted_map, write
from netemu.controlplane.job import condition, finished, parse_time
from netemu.controlplane.store import Clock, rfc3339, wall_clock

SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"
INSTANTIATE = "cronjob.kubernetes.io/instantiate"
DEFAULT_SUCCESSFUL_HISTORY = 3
DEFAULT_FAILED_HISTORY = 1
# How far back the controller looks for missed times (it gives up past 100).
_MAX_MISSED = 100


def _expression(schedule: str) -> str:
    text = schedule.strip()
    # croniter knows @midnight as a descriptor only by @daily's expression.
    return {"@midnight": "0 0 * * *", "@annually": "0 0 1 1 *"}.get(text, text)


def _zone(cj: CronJob) -> datetime.tzinfo:
    if cj.spec.time_zone:
        try:
            return zoneinfo.ZoneInfo(cj.spec.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return datetime.UTC
    return datetime.UTC


def next_time(cj: CronJob, after: datetime.datetime) -> datetime.datetime:
    """The first scheduled time strictly after `after`."""
    it = croniter(_expression(cj.spec.schedule), after.astimezone(_zone(cj)))
    found: datetime.datetime = it.get_next(datetime.datetime)
    return found.astimezone(datetime.UTC)


def most_recent(
    cj: CronJob, earliest: datetime.datetime, now: datetime.datetime
) -> datetime.datetime | None:
    """The latest scheduled time in (earliest, now], or None."""
    latest = None
    t = next_time(cj, earliest)
    for _ in range(_MAX_MISSED + 1):
        if t > now:
            break
        latest = t
        t = next_time(cj, t)
    else:
        # More than 100 missed (the controller logs "too many missed start
        # times" and runs the latest): the last one before now.
        it = croniter(_expression(cj.spec.schedule), now.astimezone(_zone(cj)))
        latest = it.get_prev(datetime.datetime).astimezone(datetime.UTC)
    return latest


def cronjob_defaults(cj: CronJob) -> dict[str, Any]:
    """SetDefaults_CronJob: the spec fields the API server fills in."""
    spec = cj.spec
    defaults: dict[str, Any] = {}
    if spec.concurrency_policy is None:
        defaults["concurrency_policy"] = "Allow"
    if spec.suspend is None:
        defaults["suspend"] = False
    if spec.successful_jobs_history_limit is None:
        defaults["successful_jobs_history_limit"] = DEFAULT_SUCCESSFUL_HISTORY
    if spec.failed_jobs_history_limit is None:
        defaults["failed_jobs_history_limit"] = DEFAULT_FAILED_HISTORY
    return defaults


def job_name(cj: CronJob, scheduled: datetime.datetime) -> str:
    """getJobName: the name and the scheduled time in minutes since the epoch."""
    return f"{cj.metadata.name}-{int(scheduled.timestamp()) // 60}"


def job_from_cronjob(
    cj: CronJob,
    name: str,
    annotations: dict[str, str] | None = None,
) -> Job:
    template = cj.spec.job_template
    meta = ObjectMeta(
        name=name,
        namespace=cj.metadata.namespace,
        labels=dict(template.metadata.labels),
        annotations=sorted_map({**template.metadata.annotations, **(annotations or {})}),
        owner_references=[owner_reference(cj)],
    )
    return Job(metadata=meta, spec=template.spec)


def manual_job(cj: CronJob, name: str) -> Job:
    """`kubectl create job NAME --from=cronjob/CJ`."""
    return job_from_cronjob(cj, name, {INSTANTIATE: "manual"})


class CronJobController:
    """Creates Jobs at a CronJob's scheduled times (see the module)."""

    name = "cronjob"

    def __init__(self, client: Client, clock: Clock = wall_clock) -> None:
        self.client = client
        self.clock = clock

    def reconcile(self) -> bool:
        jobs: dict[str, list[Job]] = {}
        for job in self.client.list(Job).items:
            ref = controller_ref(job.metadata)
            if ref is not None and ref.kind == "CronJob" and ref.uid:
                jobs.setdefault(ref.uid, []).append(job)
        now = self.clock()
        changed = False
        for cj in self.client.list(CronJob).items:
            defaults = cronjob_defaults(cj)
            if defaults:
                spec = cj.spec.model_copy(update=defaults)
                changed |= write(self.client, cj, cj.model_copy(update={"spec": spec}))
                continue
            changed |= self._sync(cj, jobs.get(cj.metadata.uid or "", []), now)
        return changed

    def next_event(self) -> datetime.datetime | None:
        """The earliest scheduled time not yet run (it may have passed)."""
        times = []
        for cj in self.client.list(CronJob).items:
            if cj.spec.suspend or schedule_error(cj.spec.schedule):
                continue
            status = cj.status if isinstance(cj.status, dict) else {}
            last = parse_time(status.get("lastScheduleTime")) or parse_time(
                cj.metadata.creation_timestamp
            )
            if cj.spec.concurrency_policy == "Forbid" and status.get("active"):
                # A run skipped while one is active is not retried: the next
                # chance is the next scheduled time.
                last = self.clock()
            times.append(next_time(cj, last or self.clock()))
        return min(times) if times else None

    def _sync(self, cj: CronJob, jobs: list[Job], now: datetime.datetime) -> bool:
        status: dict[str, Any] = dict(cj.status) if isinstance(cj.status, dict) else {}
        changed = False
        active = [j for j in jobs if finished(j) is None]
        done = [j for j in jobs if finished(j) is not None]
        for job in done:
            job_status = job.status if isinstance(job.status, dict) else {}
            complete = condition(job_status, "Complete")
            when = job_status.get("completionTime") or (complete or {}).get("lastTransitionTime")
            if complete is not None and when and when > status.get("lastSuccessfulTime", ""):
                status["lastSuccessfulTime"] = when
        changed |= self._clean_history(cj, done)

        if not cj.spec.suspend and schedule_error(cj.spec.schedule) is None:
            last = parse_time(status.get("lastScheduleTime")) or parse_time(
                cj.metadata.creation_timestamp
            )
            earliest = last or now
            deadline = cj.spec.starting_deadline_seconds
            if deadline is not None:
                earliest = max(earliest, now - datetime.timedelta(seconds=deadline))
            scheduled = most_recent(cj, earliest, now)
            if scheduled is not None:
                policy = cj.spec.concurrency_policy or "Allow"
                if policy == "Forbid" and active:
                    pass  # skipped; retried at the next scheduled time
                else:
                    if policy == "Replace":
                        for job in active:
                            delete(self.client, job)
                            changed = True
                        active = []
                    name = job_name(cj, scheduled)
                    if not any(j.metadata.name == name for j in jobs):
                        zone = _zone(cj)
                        stamp = scheduled.astimezone(zone).isoformat().replace("+00:00", "Z")
                        created = self.client.create(
                            job_from_cronjob(cj, name, {SCHEDULED_TIMESTAMP: stamp})
                        )
                        active.append(created)
                        changed = True
                    status["lastScheduleTime"] = rfc3339(scheduled)
        refs = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": j.metadata.name,
                "namespace": j.metadata.namespace,
                "uid": j.metadata.uid,
            }
            for j in sorted(active, key=lambda j: j.metadata.name or "")
        ]
        if refs:
            status["active"] = refs
        else:
            status.pop("active", None)
        status = dict(sorted(status.items()))
        changed |= write(self.client, cj, cj.model_copy(update={"status": status}))
        return changed

    def _clean_history(self, cj: CronJob, done: list[Job]) -> bool:
        changed = False
        for kind, limit in (
            ("Complete", cj.spec.successful_jobs_history_limit),
            ("Failed", cj.spec.failed_jobs_history_limit),
        ):
            keep = limit
            if keep is None:
                keep = DEFAULT_SUCCESSFUL_HISTORY if kind == "Complete" else DEFAULT_FAILED_HISTORY
            of_kind = sorted(
                (j for j in done if finished(j) == kind),
                key=lambda j: (str((j.status or {}).get("startTime", "")), j.metadata.name or ""),
            )
            for job in of_kind[: max(len(of_kind) - keep, 0)]:
                delete(self.client, job)
                changed = True
        return changed
