"""ReplicationControllers, Jobs and CronJobs in the control plane: pods
created, counted and finished as kube-controller-manager's controllers do.
Pod phases are set here by hand, as the kubelet would set them."""

from __future__ import annotations

import datetime
from typing import Any

from manifests import build, objects

from netemu.api.apps import ReplicationController
from netemu.api.batch import CronJob, Job
from netemu.api.core import Pod
from netemu.controlplane import ControlPlane, LocalClient, Store, apply_objects
from netemu.controlplane.client import Client
from netemu.controlplane.common import controller_ref
from netemu.controlplane.cronjob import job_name, manual_job, most_recent
from netemu.controlplane.job import COMPLETION_INDEX, backoff_until

LAB = """
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  nodes:
  - {name: node-1, underlayIP: 192.168.56.11}
  - {name: node-2, underlayIP: 192.168.56.12}
"""

START = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime.datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


def plane(text: str, clock: Clock) -> tuple[Client, ControlPlane]:
    client = LocalClient(Store(clock=clock))
    control = ControlPlane(client, clock=clock)
    apply_objects(client, objects(LAB + text))
    control.run_to_fixed_point()
    return client, control


def pods_of(client: Client, job: str) -> list[Pod]:
    return [
        p
        for p in client.list(Pod).items
        if p.metadata.labels.get("batch.kubernetes.io/job-name") == job
    ]


def finish(client: Client, pod: Pod, phase: str) -> None:
    """What the kubelet writes when the pod's containers have all exited."""
    status = pod.status.model_copy(update={"phase": phase})
    client.update(pod.model_copy(update={"status": status}))


def job_status(client: Client, name: str) -> dict[str, Any]:
    status = client.get(Job, "default", name).status
    assert isinstance(status, dict)
    return status


def condition_types(status: dict[str, Any]) -> list[str]:
    return [c["type"] for c in status.get("conditions", [])]


# ---------------------------------------------------------------- ReplicationController

RC = """
---
apiVersion: v1
kind: ReplicationController
metadata: {name: legacy}
spec:
  replicas: 3
  template:
    metadata: {labels: {app: legacy, tier: web}}
    spec:
      containers: [{name: web, image: nginx}]
"""


def test_replication_controller_selector_defaults_to_template_labels() -> None:
    state = build(LAB + RC)
    pods = [p for p in state.pods if (p.metadata.name or "").startswith("legacy-")]
    assert len(pods) == 3
    for pod in pods:
        ref = controller_ref(pod.metadata)
        assert ref is not None
        assert (ref.api_version, ref.kind, ref.name) == ("v1", "ReplicationController", "legacy")
    (rc,) = state.replication_controllers
    assert rc.status == {
        "availableReplicas": 3,
        "fullyLabeledReplicas": 3,
        "observedGeneration": 1,
        "readyReplicas": 3,
        "replicas": 3,
    }


def test_replication_controller_scales_and_adopts_orphans() -> None:
    orphan = """
---
apiVersion: v1
kind: Pod
metadata: {name: stray, labels: {app: legacy, tier: web}}
spec:
  containers: [{name: web, image: nginx}]
"""
    client, control = plane(RC + orphan, Clock())
    names = {p.metadata.name for p in client.list(Pod).items}
    assert "stray" in names and len(names) == 3  # adopted: two more made, not three
    rc = client.get(ReplicationController, "default", "legacy")
    client.update(rc.model_copy(update={"spec": rc.spec.model_copy(update={"replicas": 1})}))
    control.run_to_fixed_point()
    assert len(client.list(Pod).items) == 1


# ---------------------------------------------------------------- Job

JOB = """
---
apiVersion: batch/v1
kind: Job
metadata: {name: work}
spec:
  completions: 3
  parallelism: 2
  backoffLimit: 1
  template:
    metadata: {labels: {app: work}}
    spec:
      restartPolicy: Never
      containers: [{name: w, image: busybox, command: [sh, -c, "exit 0"]}]
"""


def test_job_defaults_selector_and_pod_labels() -> None:
    client, _ = plane(JOB, Clock())
    job = client.get(Job, "default", "work")
    uid = job.metadata.uid or ""
    assert job.spec.selector is not None
    assert job.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    assert job.spec.completion_mode == "NonIndexed"
    pods = pods_of(client, "work")
    assert len(pods) == 2  # parallelism
    for pod in pods:
        assert pod.metadata.labels == {
            "app": "work",
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": "work",
            "controller-uid": uid,
            "job-name": "work",
        }
        assert (pod.metadata.name or "").startswith("work-")


def test_job_runs_to_completion_then_complete() -> None:
    clock = Clock()
    client, control = plane(JOB, clock)
    assert job_status(client, "work")["startTime"] == "2026-01-01T12:00:00Z"
    clock.advance(5)
    for pod in pods_of(client, "work"):
        finish(client, pod, "Succeeded")
    control.run_to_fixed_point()
    status = job_status(client, "work")
    assert status["succeeded"] == 2 and status["active"] == 1  # one completion left
    assert len(pods_of(client, "work")) == 3
    clock.advance(5)
    last = next(p for p in pods_of(client, "work") if p.status.phase != "Succeeded")
    finish(client, last, "Succeeded")
    control.run_to_fixed_point()
    status = job_status(client, "work")
    assert condition_types(status) == ["SuccessCriteriaMet", "Complete"]
    assert status["completionTime"] == "2026-01-01T12:00:10Z"
    assert status["succeeded"] == 3 and "active" not in status
    assert status["ready"] == 0 and status["terminating"] == 0
    reasons = {c["reason"] for c in status["conditions"]}
    assert reasons == {"CompletionsReached"}
    assert len(pods_of(client, "work")) == 3  # no pod is made after completion


def test_job_fails_past_backoff_limit_and_deletes_active_pods() -> None:
    clock = Clock()
    client, control = plane(JOB, clock)
    job_controller = next(c for c in control.controllers if c.name == "job")
    first, second = pods_of(client, "work")
    finish(client, first, "Failed")
    control.run_to_fixed_point()
    # The pod failure back-off: no replacement for 10 s after the failure
    # (the pod's finish time: its creation, having no finishedAt).
    assert len(pods_of(client, "work")) == 2
    assert job_controller.next_event() == START + datetime.timedelta(seconds=10)  # type: ignore[attr-defined]
    clock.advance(10)
    control.run_to_fixed_point()
    assert len(pods_of(client, "work")) == 3  # a replacement, within backoffLimit 1
    assert "conditions" not in job_status(client, "work")
    finish(client, second, "Failed")
    control.run_to_fixed_point()
    status = job_status(client, "work")
    assert condition_types(status) == ["FailureTarget", "Failed"]
    assert {c["reason"] for c in status["conditions"]} == {"BackoffLimitExceeded"}
    assert status["failed"] == 2
    # The one still running was deleted (the store removes it at once).
    assert [p.status.phase for p in pods_of(client, "work")] == ["Failed", "Failed"]


def test_job_active_deadline() -> None:
    clock = Clock()
    client, control = plane(JOB.replace("backoffLimit: 1", "activeDeadlineSeconds: 30"), clock)
    assert control.controllers  # the timer asks the Job controller when to run
    job_controller = next(c for c in control.controllers if c.name == "job")
    assert job_controller.next_event() == START + datetime.timedelta(seconds=30)  # type: ignore[attr-defined]
    clock.advance(29)
    control.run_to_fixed_point()
    assert "conditions" not in job_status(client, "work")
    clock.advance(1)
    control.run_to_fixed_point()
    status = job_status(client, "work")
    assert condition_types(status) == ["FailureTarget", "Failed"]
    assert status["conditions"][1]["reason"] == "DeadlineExceeded"
    assert pods_of(client, "work") == []


def test_job_ttl_after_finished_deletes_it_and_its_pods() -> None:
    clock = Clock()
    text = JOB.replace("completions: 3", "completions: 1").replace(
        "backoffLimit: 1", "ttlSecondsAfterFinished: 10"
    )
    client, control = plane(text, clock)
    for pod in pods_of(client, "work"):
        finish(client, pod, "Succeeded")
    control.run_to_fixed_point()
    assert "Complete" in condition_types(job_status(client, "work"))
    clock.advance(10)
    control.run_to_fixed_point()
    assert client.list(Job).items == ()
    assert pods_of(client, "work") == []


def test_indexed_job_gives_each_pod_its_index() -> None:
    text = JOB.replace("parallelism: 2", "parallelism: 3\n  completionMode: Indexed")
    client, control = plane(text, Clock())
    pods = sorted(pods_of(client, "work"), key=lambda p: p.metadata.annotations[COMPLETION_INDEX])
    assert [p.metadata.annotations[COMPLETION_INDEX] for p in pods] == ["0", "1", "2"]
    assert [p.spec.hostname for p in pods] == ["work-0", "work-1", "work-2"]
    assert (pods[1].metadata.name or "").startswith("work-1-")
    env = pods[0].spec.containers[0].env
    assert env[0]["name"] == "JOB_COMPLETION_INDEX"
    assert env[0]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    finish(client, pods[0], "Succeeded")
    finish(client, pods[2], "Succeeded")
    control.run_to_fixed_point()
    assert job_status(client, "work")["completedIndexes"] == "0,2"


def test_job_without_completions_is_a_work_queue() -> None:
    text = JOB.replace("  completions: 3\n", "")
    client, control = plane(text, Clock())
    pods = pods_of(client, "work")
    assert len(pods) == 2
    finish(client, pods[0], "Succeeded")
    control.run_to_fixed_point()
    # One succeeded: no new pods, and done once the other has ended too.
    assert len(pods_of(client, "work")) == 2
    assert "conditions" not in job_status(client, "work")
    finish(client, pods[1], "Succeeded")
    control.run_to_fixed_point()
    assert "Complete" in condition_types(job_status(client, "work"))


# ---------------------------------------------------------------- CronJob

CRONJOB = """
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    metadata: {labels: {kind: tick}}
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: t, image: busybox, command: [sh, -c, "exit 0"]}]
"""


def cron_jobs(client: Client) -> list[Job]:
    return [j for j in client.list(Job).items if j.metadata.labels.get("kind") == "tick"]


def test_cronjob_defaults_and_creates_jobs_at_schedule_times() -> None:
    clock = Clock()
    client, control = plane(CRONJOB, clock)
    cj = client.get(CronJob, "default", "tick")
    assert (cj.spec.concurrency_policy, cj.spec.suspend) == ("Allow", False)
    assert (cj.spec.successful_jobs_history_limit, cj.spec.failed_jobs_history_limit) == (3, 1)
    assert cron_jobs(client) == []
    cron_controller = next(c for c in control.controllers if c.name == "cronjob")
    first = START + datetime.timedelta(minutes=5)
    assert cron_controller.next_event() == first  # type: ignore[attr-defined]
    clock.advance(5 * 60)
    # Due now: a live lab's timer runs the controllers when next_event has come.
    assert cron_controller.next_event() == first  # type: ignore[attr-defined]
    control.run_to_fixed_point()
    assert cron_controller.next_event() == first + datetime.timedelta(minutes=5)  # type: ignore[attr-defined]
    (job,) = cron_jobs(client)
    scheduled = START + datetime.timedelta(minutes=5)
    assert job.metadata.name == f"tick-{int(scheduled.timestamp()) // 60}"
    assert job.metadata.annotations == {
        "batch.kubernetes.io/cronjob-scheduled-timestamp": "2026-01-01T12:05:00Z"
    }
    ref = controller_ref(job.metadata)
    assert ref is not None and (ref.kind, ref.name) == ("CronJob", "tick")
    status = client.get(CronJob, "default", "tick").status
    assert status["lastScheduleTime"] == "2026-01-01T12:05:00Z"
    assert [a["name"] for a in status["active"]] == [job.metadata.name]


def test_cronjob_forbid_skips_while_a_job_is_active() -> None:
    clock = Clock()
    client, control = plane(
        CRONJOB.replace("jobTemplate:", "concurrencyPolicy: Forbid\n  jobTemplate:"), clock
    )
    clock.advance(5 * 60)
    control.run_to_fixed_point()
    clock.advance(5 * 60)
    control.run_to_fixed_point()
    assert len(cron_jobs(client)) == 1


def test_cronjob_replace_deletes_the_active_job() -> None:
    clock = Clock()
    client, control = plane(
        CRONJOB.replace("jobTemplate:", "concurrencyPolicy: Replace\n  jobTemplate:"), clock
    )
    clock.advance(5 * 60)
    control.run_to_fixed_point()
    (first,) = cron_jobs(client)
    clock.advance(5 * 60)
    control.run_to_fixed_point()
    (second,) = cron_jobs(client)
    assert first.metadata.name != second.metadata.name


def test_cronjob_suspended_and_history_limit() -> None:
    clock = Clock()
    client, control = plane(CRONJOB.replace("jobTemplate:", "suspend: true\n  jobTemplate:"), clock)
    clock.advance(60 * 60)
    control.run_to_fixed_point()
    assert cron_jobs(client) == []
    # Manual Jobs count towards the history: four finished, three kept.
    cj = client.get(CronJob, "default", "tick")
    for n in range(4):
        client.create(manual_job(cj, f"manual-{n}"))
        control.run_to_fixed_point()
        clock.advance(1)
        for pod in pods_of(client, f"manual-{n}"):
            finish(client, pod, "Succeeded")
        control.run_to_fixed_point()
    assert sorted(j.metadata.name or "" for j in cron_jobs(client)) == [
        "manual-1",
        "manual-2",
        "manual-3",
    ]
    job = client.get(Job, "default", "manual-3")
    assert job.metadata.annotations == {"cronjob.kubernetes.io/instantiate": "manual"}


def test_cronjob_starting_deadline_misses_old_times() -> None:
    parsed = objects(
        LAB + CRONJOB.replace("jobTemplate:", "startingDeadlineSeconds: 60\n  jobTemplate:")
    )
    cj = next(o for o in parsed if isinstance(o, CronJob))
    now = START + datetime.timedelta(minutes=7)  # 12:05 was two minutes ago
    earliest = now - datetime.timedelta(seconds=60)
    assert most_recent(cj, earliest, now) is None
    assert most_recent(cj, START, now) == START + datetime.timedelta(minutes=5)


def test_cronjob_schedule_in_time_zone() -> None:
    parsed = objects(
        LAB
        + CRONJOB.replace('"*/5 * * * *"', '"0 9 * * *"').replace(
            "jobTemplate:", "timeZone: Asia/Tokyo\n  jobTemplate:"
        )
    )
    cj = next(o for o in parsed if isinstance(o, CronJob))
    # 09:00 in Tokyo is 00:00 UTC.
    found = most_recent(cj, START, START + datetime.timedelta(days=1))
    assert found == datetime.datetime(2026, 1, 2, 0, 0, tzinfo=datetime.UTC)
    assert job_name(cj, found) == f"tick-{int(found.timestamp()) // 60}"


def test_pod_failure_backoff_doubles_per_failure_and_a_success_resets_it() -> None:
    """backoff_utils.go: 10 s after the last failure since the last success,
    doubled for each further one, at most 10 minutes."""

    def pod(phase: str, finished_at: int) -> Pod:
        terminated = {"exitCode": 1 if phase == "Failed" else 0, "finishedAt": at(finished_at)}
        return Pod.model_validate(
            {
                "metadata": {"name": f"p{finished_at}", "creationTimestamp": at(0)},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
                "status": {
                    "phase": phase,
                    "containerStatuses": [
                        {
                            "name": "c",
                            "ready": False,
                            "restartCount": 0,
                            "image": "i",
                            "imageID": "",
                            "state": {"terminated": terminated},
                        }
                    ],
                },
            }
        )

    def at(seconds: int) -> str:
        return (START + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def until(*pods: Pod) -> datetime.datetime | None:
        return backoff_until(pods)

    second = datetime.timedelta(seconds=1)
    assert until() is None
    assert until(pod("Failed", 5)) == START + 15 * second
    assert until(pod("Failed", 5), pod("Failed", 7), pod("Failed", 9)) == START + 49 * second
    # Only the failures after the last success count.
    assert until(pod("Failed", 5), pod("Succeeded", 6), pod("Failed", 8)) == START + 18 * second
    assert until(pod("Failed", 5), pod("Succeeded", 6)) is None
    many = [pod("Failed", i) for i in range(1, 12)]
    assert until(*many) == START + (11 + 600) * second  # capped at 10 minutes
