"""batch/v1 workload types: Job and CronJob, and what makes a CronJob's
schedule and time zone valid."""

from __future__ import annotations

import zoneinfo
from typing import Any, Literal

from croniter import croniter
from pydantic import Field

from netemu.api.base import K8sModel, LabelSelector, ObjectMeta
from netemu.api.core import PodTemplateSpec


class JobSpec(K8sModel):
    template: PodTemplateSpec
    parallelism: int | None = None
    completions: int | None = None
    backoff_limit: int | None = None
    completion_mode: Literal["NonIndexed", "Indexed"] | None = None
    active_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = None
    selector: LabelSelector | None = None
    manual_selector: bool | None = None
    suspend: bool | None = None
    backoff_limit_per_index: Any = None
    max_failed_indexes: Any = None
    pod_failure_policy: Any = None
    success_policy: Any = None
    pod_replacement_policy: Any = None
    managed_by: Any = None


class Job(K8sModel):
    api_version: Literal["batch/v1"] = "batch/v1"
    kind: Literal["Job"] = "Job"
    metadata: ObjectMeta
    spec: JobSpec
    status: Any = None


class JobTemplateSpec(K8sModel):
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: JobSpec


class CronJobSpec(K8sModel):
    schedule: str
    job_template: JobTemplateSpec
    time_zone: str | None = None
    starting_deadline_seconds: int | None = None
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] | None = None
    suspend: bool | None = None
    successful_jobs_history_limit: int | None = None
    failed_jobs_history_limit: int | None = None


class CronJob(K8sModel):
    api_version: Literal["batch/v1"] = "batch/v1"
    kind: Literal["CronJob"] = "CronJob"
    metadata: ObjectMeta
    spec: CronJobSpec
    status: Any = None


# robfig/cron's descriptors that Kubernetes accepts (ParseStandard).
DESCRIPTORS = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)


def schedule_error(schedule: str) -> str | None:
    """Why `schedule` is not a Kubernetes cron schedule, or None."""
    text = schedule.strip()
    if text.startswith(("TZ=", "CRON_TZ=")):
        return "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
    if text in DESCRIPTORS:
        return None
    if text.startswith("@"):
        return f"unrecognized descriptor: {text}"
    fields = text.split()
    if len(fields) != 5:
        return f"expected exactly 5 fields, found {len(fields)}: [{text}]"
    if not croniter.is_valid(text):
        return "unparseable schedule: not a standard five-field cron expression"
    return None


def time_zone_error(name: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "unknown time zone " + name
    return None
