"""`netemu get` for ReplicationControllers, Jobs, CronJobs and Endpoints, as
kubectl 1.31 prints them (printReplicationController, printJob with its
STATUS column, printCronJob, printEndpoints)."""

from __future__ import annotations

import datetime
import textwrap
from dataclasses import replace

from manifests import objects

from netemu.api.batch import Job
from netemu.cli_table import render, table
from netemu.controlplane import build_cluster_state
from netemu.controlplane.state import ClusterState

CREATED = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
NOW = CREATED + datetime.timedelta(seconds=200)

TEXT = """
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: lab}
spec:
  nodes:
  - {name: node-1, underlayIP: 192.168.56.11}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: legacy}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: legacy}}
    spec:
      containers: [{name: web, image: nginx:1.27}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: queue}
spec:
  parallelism: 3
  template:
    spec:
      restartPolicy: Never
      containers: [{name: w, image: busybox, command: [sh, -c, "exit 0"]}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  timeZone: Europe/Berlin
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: w, image: busybox}]
"""


def state() -> ClusterState:
    return build_cluster_state(objects(TEXT), clock=lambda: CREATED)


def shown(kind: str, cluster: ClusterState, wide: bool = False) -> str:
    return render(table(kind, cluster, wide, with_namespace=False, now=NOW))


def expect(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def test_replication_controllers() -> None:
    assert shown("replicationcontrollers", state(), wide=True) == expect("""
        NAME     DESIRED   CURRENT   READY   AGE     CONTAINERS   IMAGES       SELECTOR
        legacy   2         2         2       3m20s   web          nginx:1.27   app=legacy
        """)


def test_cronjobs() -> None:
    assert shown("cronjobs", state()) == expect("""
        NAME      SCHEDULE    TIMEZONE        SUSPEND   ACTIVE   LAST SCHEDULE   AGE
        nightly   0 3 * * *   Europe/Berlin   False     0        <none>          3m20s
        """)


def with_status(cluster: ClusterState, status: dict[str, object]) -> ClusterState:
    job = cluster.jobs[0]
    return replace(cluster, jobs=(job.model_copy(update={"status": status}),))


def test_jobs_status_completions_and_duration() -> None:
    cluster = state()
    job: Job = cluster.jobs[0]
    # A work queue of 3 (no completions): "0/1 of 3"; running for 3m20s.
    assert shown("jobs", cluster) == expect("""
        NAME    STATUS    COMPLETIONS   DURATION   AGE
        queue   Running   0/1 of 3      3m20s      3m20s
        """)
    done = with_status(
        cluster,
        {
            "startTime": "2026-03-01T12:00:00Z",
            "completionTime": "2026-03-01T12:00:42Z",
            "succeeded": 1,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True"},
                {"type": "Complete", "status": "True"},
            ],
        },
    )
    assert shown("jobs", done).splitlines()[1].split() == [
        "queue",
        "Complete",
        "1/1",
        "of",
        "3",
        "42s",
        "3m20s",
    ]
    failing = with_status(
        cluster,
        {
            "startTime": "2026-03-01T12:00:00Z",
            "conditions": [{"type": "FailureTarget", "status": "True"}],
        },
    )
    assert shown("jobs", failing).splitlines()[1].split()[1] == "FailureTarget"
    assert job.spec.selector is not None
    wide = shown("jobs", cluster, wide=True).splitlines()
    assert wide[0].split()[-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1].endswith(f"batch.kubernetes.io/controller-uid={job.metadata.uid}")
