"""Validation of ReplicationControllers, Jobs, CronJobs and v1 Endpoints, with
the API server's messages (pkg/apis/batch/validation, pkg/apis/core/validation)
and file:line."""

from __future__ import annotations

import textwrap

from netemu.api.load import load_text
from netemu.api.validate import validate


def check(text: str) -> list[str]:
    loaded, problems = load_text(textwrap.dedent(text).lstrip("\n"), "x.yaml")
    assert problems == []
    return [str(d) for d in validate(loaded)]


JOB = """
apiVersion: batch/v1
kind: Job
metadata: {name: work}
spec:
  completions: 2
  template:
    spec:
      restartPolicy: RESTART
      containers: [{name: w, image: busybox}]
"""


def test_job_restart_policy_must_be_never_or_on_failure() -> None:
    assert check(JOB.replace("RESTART", "Never")) == []
    assert check(JOB.replace("RESTART", "OnFailure")) == []
    assert check(JOB.replace("RESTART", "Always")) == [
        'x.yaml:8: Job/work: spec.template.spec.restartPolicy: Unsupported value: "Always": '
        'supported values: "OnFailure", "Never"'
    ]
    # Unset means Always (the pod template's default): rejected too.
    unset = JOB.replace("      restartPolicy: RESTART\n", "")
    assert check(unset) == [
        'x.yaml:7: Job/work: spec.template.spec.restartPolicy: Unsupported value: "Always": '
        'supported values: "OnFailure", "Never"'
    ]


def test_job_counts_are_non_negative_and_indexed_needs_completions() -> None:
    text = JOB.replace("RESTART", "Never").replace(
        "completions: 2", "completions: -1\n  backoffLimit: -2"
    )
    assert check(text) == [
        "x.yaml:5: Job/work: spec.completions: must be greater than or equal to 0",
        "x.yaml:6: Job/work: spec.backoffLimit: must be greater than or equal to 0",
    ]
    indexed = JOB.replace("RESTART", "Never").replace("completions: 2", "completionMode: Indexed")
    assert check(indexed) == [
        "x.yaml:4: Job/work: spec.completions: Required value: when completion mode is Indexed"
    ]


def test_job_selector_needs_manual_selector() -> None:
    text = JOB.replace("RESTART", "Never").replace(
        "completions: 2", "completions: 2\n  selector: {matchLabels: {a: b}}"
    )
    (problem,) = check(text)
    assert problem.startswith(
        "x.yaml:6: Job/work: spec.selector: Invalid value: `selector` not auto-generated"
    )


CRONJOB = """
apiVersion: batch/v1
kind: CronJob
metadata: {name: NAME}
spec:
  schedule: "SCHEDULE"
  timeZone: ZONE
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: w, image: busybox}]
"""


def cronjob(name: str = "tick", schedule: str = "@hourly", zone: str = "Etc/UTC") -> str:
    return CRONJOB.replace("NAME", name).replace("SCHEDULE", schedule).replace("ZONE", zone)


def test_cronjob_schedules() -> None:
    for good in ("@hourly", "@midnight", "*/5 * * * *", "0 3 * * 1-5", "0 0 1 jan *"):
        assert check(cronjob(schedule=good)) == [], good
    assert check(cronjob(schedule="every minute")) == [
        'x.yaml:5: CronJob/tick: spec.schedule: Invalid value: "every minute": '
        "expected exactly 5 fields, found 2: [every minute]"
    ]
    assert check(cronjob(schedule="61 * * * *")) == [
        'x.yaml:5: CronJob/tick: spec.schedule: Invalid value: "61 * * * *": '
        "unparseable schedule: not a standard five-field cron expression"
    ]
    assert check(cronjob(schedule="TZ=UTC 0 * * * *")) == [
        'x.yaml:5: CronJob/tick: spec.schedule: Invalid value: "TZ=UTC 0 * * * *": '
        "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
    ]


def test_cronjob_time_zone_and_name_length() -> None:
    assert check(cronjob(zone="Mars/Olympus")) == [
        'x.yaml:6: CronJob/tick: spec.timeZone: Invalid value: "Mars/Olympus": '
        "unknown time zone Mars/Olympus"
    ]
    long_name = "c" * 53
    assert check(cronjob(name=long_name)) == [
        f'x.yaml:3: CronJob/{long_name}: metadata.name: Invalid value: "{long_name}": '
        "must be no more than 52 characters"
    ]


def test_cronjob_job_template_restart_policy() -> None:
    text = cronjob().replace("restartPolicy: OnFailure", "restartPolicy: Always")
    assert check(text) == [
        "x.yaml:11: CronJob/tick: spec.jobTemplate.spec.template.spec.restartPolicy: "
        'Unsupported value: "Always": supported values: "OnFailure", "Never"'
    ]


RC = """
apiVersion: v1
kind: ReplicationController
metadata: {name: legacy}
spec:
  selector: {app: other}
  template:
    metadata: {labels: {app: legacy}}
    spec:
      containers: [{name: web, image: nginx}]
"""


def test_replication_controller_selector_must_match_template() -> None:
    assert check(RC.replace("  selector: {app: other}\n", "")) == []
    assert check(RC) == [
        "x.yaml:7: ReplicationController/legacy: spec.template.metadata.labels: Invalid value: "
        "app=legacy: `selector` does not match template `labels` (selector: app=other)"
    ]
    no_template = (
        "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: x}\nspec:\n  replicas: 1\n"
    )
    assert check(no_template) == [
        "x.yaml:4: ReplicationController/x: spec.template: Required value"
    ]


def test_endpoints_addresses_and_ports() -> None:
    text = """
    apiVersion: v1
    kind: Endpoints
    metadata: {name: db}
    subsets:
    - addresses: [{ip: 10.0.0.1}, {ip: db.example}]
      ports: [{port: 5432}, {port: 70000, name: b}]
    """
    assert check(text) == [
        'x.yaml:5: Endpoints/db: subsets[0].addresses[1].ip: Invalid value: "db.example": '
        "must be a valid IP address",
        "x.yaml:6: Endpoints/db: subsets[0].ports[0].name: Required value",
        "x.yaml:6: Endpoints/db: subsets[0].ports[1].port: must be between 1 and 65535, inclusive",
    ]
