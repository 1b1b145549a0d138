"""Jobs, CronJobs, ReplicationControllers and v1 Endpoints in a live lab.

A Job's pods run their command; the kubelet sets Succeeded/Failed from the
exit codes and the Job controller counts them: a Job of 3 completions, 2 in
parallel, completes (`get jobs` shows 3/3), a failing one stops at its
backoffLimit with Failed. A CronJob's manual trigger (`netemu create job
--from=cronjob/...`) makes a Job that completes. A ReplicationController
scales and its pods serve a Service. A Service without selector answers
through the EndpointSlice mirrored from the v1 Endpoints written for it.

One controlplane/default lab for the module; each test adds its own objects.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from live_helpers import (
    CONTROLPLANE,
    answers,
    cluster_ip,
    lab_name,
    netemu_cli,
    running_lab,
)

from netemu.api.validate import load_and_validate
from netemu.lab import LiveLab

# A Job of `sh -c 'exit 0'` pods is done in well under this.
JOB_WITHIN = 20.0


@pytest.fixture(scope="module")
def lab() -> Iterator[LiveLab]:
    with running_lab([CONTROLPLANE / "default"], lab_name("workloads")) as lab:
        yield lab


def apply(lab: LiveLab, tmp_path: Path, name: str, text: str) -> list[str]:
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(text)
    return lab.apply([item.obj for item in load_and_validate([manifest])])


def wait_for(what: str, check: Callable[[], Any], within: float = JOB_WITHIN) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within}s")
        time.sleep(0.2)


def job(lab: LiveLab, name: str) -> dict[str, Any]:
    listed = lab.table("jobs", "default", "json")["list"]["items"]
    found = [j for j in listed if j["metadata"]["name"] == name]
    assert found, f"no Job {name}"
    return dict(found[0])


def conditions(obj: dict[str, Any]) -> set[str]:
    return {
        c["type"] for c in (obj.get("status") or {}).get("conditions", []) if c["status"] == "True"
    }


def pods_of_job(lab: LiveLab, name: str) -> list[dict[str, Any]]:
    return [
        p
        for p in lab.state()["pods"]
        if p["metadata"].get("labels", {}).get("batch.kubernetes.io/job-name") == name
    ]


def get_row(lab: LiveLab, kind: str, name: str) -> list[str]:
    done = netemu_cli("get", kind, "-n", "default", "--lab", lab.name)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = [line.split() for line in lines[1:] if line.split()[0] == name]
    assert rows, done.stdout
    return [*lines[0].split(), "|", *rows[0]]


JOB = """\
apiVersion: batch/v1
kind: Job
metadata: {name: NAME}
spec:
  completions: 3
  parallelism: 2
  backoffLimit: BACKOFF
  template:
    metadata: {labels: {app: NAME}}
    spec:
      restartPolicy: Never
      containers:
        - name: work
          image: busybox
          command: ["sh", "-c", "exit CODE"]
"""


def test_job_runs_three_completions_two_at_a_time(lab: LiveLab, tmp_path: Path) -> None:
    text = JOB.replace("NAME", "ok").replace("BACKOFF", "6").replace("CODE", "0")
    assert apply(lab, tmp_path, "ok", text) == ["Job/ok"]
    done = wait_for("Job ok Complete", lambda: "Complete" in conditions(job(lab, "ok")))
    assert done
    status = job(lab, "ok")["status"]
    assert status["succeeded"] == 3
    assert "failed" not in status
    assert {"SuccessCriteriaMet", "Complete"} <= conditions(job(lab, "ok"))
    assert status["completionTime"] >= status["startTime"]
    pods = pods_of_job(lab, "ok")
    assert len(pods) == 3, [p["metadata"]["name"] for p in pods]
    assert {p["status"]["phase"] for p in pods} == {"Succeeded"}
    header_and_row = get_row(lab, "jobs", "ok")
    assert header_and_row[:5] == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert header_and_row[6:9] == ["ok", "Complete", "3/3"]
    # Completed pods are shown Completed and are nobody's endpoints.
    pod_rows = netemu_cli("get", "pods", "-n", "default", "--lab", lab.name).stdout
    completed = [line for line in pod_rows.splitlines() if line.startswith("ok-")]
    assert len(completed) == 3 and all(" Completed " in line for line in completed), pod_rows


def test_failing_job_stops_at_backoff_limit(lab: LiveLab, tmp_path: Path) -> None:
    text = JOB.replace("NAME", "bad").replace("BACKOFF", "1").replace("CODE", "3")
    assert apply(lab, tmp_path, "bad", text) == ["Job/bad"]
    wait_for("Job bad Failed", lambda: "Failed" in conditions(job(lab, "bad")))
    found = job(lab, "bad")
    reasons = {c["type"]: c["reason"] for c in found["status"]["conditions"]}
    assert reasons == {"FailureTarget": "BackoffLimitExceeded", "Failed": "BackoffLimitExceeded"}
    # backoffLimit 1: the second failure ends it; no pod is made after that.
    assert found["status"]["failed"] == 2
    time.sleep(1.0)
    pods = pods_of_job(lab, "bad")
    assert len(pods) == 2
    assert {p["status"]["phase"] for p in pods} == {"Failed"}
    assert get_row(lab, "jobs", "bad")[6:9] == ["bad", "Failed", "0/3"]


CRONJOB = """\
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  timeZone: Europe/Berlin
  jobTemplate:
    spec:
      template:
        metadata: {labels: {app: nightly}}
        spec:
          restartPolicy: OnFailure
          containers:
            - name: work
              image: busybox
              command: ["sh", "-c", "exit 0"]
"""


def test_cronjob_manual_trigger_creates_a_job_that_completes(lab: LiveLab, tmp_path: Path) -> None:
    assert apply(lab, tmp_path, "cron", CRONJOB) == ["CronJob/nightly"]
    made = netemu_cli(
        "create", "job", "by-hand", "--from=cronjob/nightly", "-n", "default", "--lab", lab.name
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "job.batch/by-hand created"
    wait_for("Job by-hand Complete", lambda: "Complete" in conditions(job(lab, "by-hand")))
    found = job(lab, "by-hand")
    assert found["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    owner = found["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("CronJob", "nightly", True)
    assert found["status"]["succeeded"] == 1
    listed = netemu_cli("get", "cronjobs", "-n", "default", "--lab", lab.name).stdout
    header, line = listed.splitlines()[0], listed.splitlines()[1]
    assert header.split()[:4] == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND"]
    # The manual Job is finished: not active; no scheduled run yet.
    assert line.split()[:1] == ["nightly"] and "0 3 * * *" in line
    assert line.split()[6:10] == ["Europe/Berlin", "False", "0", "<none>"]
    # A source that is no CronJob, or one that does not exist: errors.
    again = netemu_cli("create", "job", "x", "--from=cronjob/missing", "--lab", lab.name)
    assert again.returncode == 1
    assert 'cronjobs.batch "missing" not found' in again.stderr
    wrong = netemu_cli("create", "job", "x", "--from=deployment/web", "--lab", lab.name)
    assert wrong.returncode == 2
    assert "expected cronjob/NAME" in wrong.stderr


RC = """\
apiVersion: v1
kind: ReplicationController
metadata: {name: legacy}
spec:
  replicas: 1
  template:
    metadata: {labels: {app: legacy}}
    spec:
      containers:
        - name: web
          image: agnhost
          ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: legacy}
spec:
  selector: {app: legacy}
  ports: [{port: 80, targetPort: 8080}]
"""


def rc_pods(lab: LiveLab) -> set[str]:
    return {
        p["metadata"]["name"]
        for p in lab.state()["pods"]
        if p["metadata"].get("labels", {}).get("app") == "legacy"
        and not p["metadata"].get("deletionTimestamp")
    }


def test_replication_controller_scales_and_serves(lab: LiveLab, tmp_path: Path) -> None:
    assert apply(lab, tmp_path, "rc", RC) == ["ReplicationController/legacy", "Service/legacy"]
    assert len(rc_pods(lab)) == 1
    scaled = netemu_cli("scale", "rc/legacy", "--replicas", "3", "--lab", lab.name)
    assert scaled.returncode == 0, scaled.stderr
    assert scaled.stdout.strip() == "replicationcontroller/legacy scaled to 3"
    pods = rc_pods(lab)
    assert len(pods) == 3
    node = lab.info()["nodes"]["node-1"]["netns"]
    vip = cluster_ip(lab.state(), "legacy")
    answered = {a.pod for a in answers(node, vip, 80)}
    assert answered == pods
    row = get_row(lab, "rc", "legacy")
    assert row[row.index("|") + 1 : row.index("|") + 4] == ["legacy", "3", "3"]


SELECTORLESS = """\
apiVersion: v1
kind: Service
metadata: {name: outside}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: outside}
subsets:
  - addresses: [{ip: IP}]
    ports: [{name: http, port: 8080}]
"""

TARGET = """\
apiVersion: v1
kind: Pod
metadata: {name: target, labels: {role: target}}
spec:
  containers:
    - name: web
      image: agnhost
      ports: [{containerPort: 8080}]
"""


def test_selectorless_service_answers_through_mirrored_slice(lab: LiveLab, tmp_path: Path) -> None:
    assert apply(lab, tmp_path, "target", TARGET) == ["Pod/target"]
    pod = next(p for p in lab.state()["pods"] if p["metadata"]["name"] == "target")
    ip = pod["status"]["podIP"]
    applied = apply(lab, tmp_path, "outside", SELECTORLESS.replace("IP", ip))
    assert applied == ["Service/outside", "Endpoints/outside"]
    slices = [
        s
        for s in lab.state()["endpointslices"]
        if s["metadata"].get("labels", {}).get("kubernetes.io/service-name") == "outside"
    ]
    assert len(slices) == 1
    labels = slices[0]["metadata"]["labels"]
    assert labels["endpointslice.kubernetes.io/managed-by"] == (
        "endpointslicemirroring-controller.k8s.io"
    )
    assert [e["addresses"] for e in slices[0]["endpoints"]] == [[ip]]
    node = lab.info()["nodes"]["node-2"]["netns"]
    vip = cluster_ip(lab.state(), "outside")
    assert {a.pod for a in answers(node, vip, 80, count=5)} == {"target"}
    row = get_row(lab, "endpoints", "outside")
    assert row[row.index("|") + 1 :][:2] == ["outside", f"{ip}:8080"]


DEADLINE = """\
apiVersion: batch/v1
kind: Job
metadata: {name: slow}
spec:
  activeDeadlineSeconds: 2
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: work
          image: busybox
          command: ["sleep", "600"]
"""


def test_job_past_its_active_deadline_fails_and_its_pod_goes(lab: LiveLab, tmp_path: Path) -> None:
    assert apply(lab, tmp_path, "slow", DEADLINE) == ["Job/slow"]
    assert len(pods_of_job(lab, "slow")) == 1
    # Nothing changes in the lab meanwhile: the supervisor's timer acts on the deadline.
    wait_for("Job slow Failed", lambda: "Failed" in conditions(job(lab, "slow")), within=8.0)
    found = job(lab, "slow")
    reasons = {c["reason"] for c in found["status"]["conditions"]}
    assert reasons == {"DeadlineExceeded"}
    wait_for("the Job's pod deleted", lambda: not pods_of_job(lab, "slow"), within=5.0)
