"""`netemu get -o json` of ReplicationControllers, Jobs, CronJobs and
Endpoints deserialises with the official Kubernetes Python client (with
client-side validation), and the fields a client reads survive."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from k8s_client import deserialize

from netemu.cli import main

OBJECTS = """
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
  replicas: 1
  template:
    metadata: {labels: {app: legacy}}
    spec:
      containers: [{name: web, image: nginx, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: legacy}
spec:
  selector: {app: legacy}
  ports: [{port: 80}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: w, image: busybox, command: [sh, -c, "exit 0"]}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "@daily"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: w, image: busybox}]
"""


def listed(tmp_path: Path, resource: str, list_type: str) -> list[Any]:
    manifest = tmp_path / "objects.yaml"
    manifest.write_text(textwrap.dedent(OBJECTS))
    result = CliRunner().invoke(main, ["get", resource, "-f", str(manifest), "-o", "json"])
    assert result.exit_code == 0, result.stderr
    items: list[Any] = deserialize(result.stdout, list_type).items
    assert items
    return items


def test_replication_controllers(tmp_path: Path) -> None:
    (rc,) = listed(tmp_path, "rc", "V1ReplicationControllerList")
    assert rc.spec.replicas == 1 and rc.status.ready_replicas == 1


def test_jobs(tmp_path: Path) -> None:
    (job,) = listed(tmp_path, "jobs", "V1JobList")
    spec = job.spec
    assert spec.completions == 1 and spec.parallelism == 1 and spec.backoff_limit == 6
    assert spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": job.metadata.uid}
    assert job.status.active == 1 and job.status.start_time is not None


def test_cronjobs(tmp_path: Path) -> None:
    (cj,) = listed(tmp_path, "cronjobs", "V1CronJobList")
    assert cj.spec.schedule == "@daily" and cj.spec.concurrency_policy == "Allow"


def test_endpoints(tmp_path: Path) -> None:
    (ep,) = listed(tmp_path, "endpoints", "V1EndpointsList")
    assert ep.metadata.name == "legacy"
    (subset,) = ep.subsets
    assert [p.port for p in subset.ports] == [80] and len(subset.addresses) == 1
