"""A StatefulSet under podManagementPolicy OrderedReady in a live lab: the
kubelet's readiness probes decide when the next ordinal is created, and
when a rolling update moves on to the next pod.

The set of 3 has a readiness probe (GET /readyz every second). Before the
set is applied, pod web-1's flag file `fail-readiness` is put in place
(netemu.node.kubelet.health_dir), so its built-in server fails the probe
from its first answer: the set stops at web-0 (ready) and web-1 (not
ready) and creates no web-2, as the StatefulSet controller waits for
web-1 to be Running and Ready; once the flag file is gone web-1 becomes
ready and web-2 follows without anyone asking.

A template change replaces the pods from web-2 down to web-0, each once the
one before is back and ready (the kubelet's lines in the supervisor log
give the order), and the whole update runs by itself: each pod, created
again under the name of the one that just stopped, is started.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from live_helpers import running_lab

from netemu.api.validate import load_and_validate
from netemu.kernel.journal import LOG, run_dir
from netemu.lab import LiveLab
from netemu.net.plan import check_lab_name
from netemu.node.kubelet import health_dir

LAB = """\
apiVersion: netemu/v1alpha1
kind: Lab
metadata: {name: sts}
spec:
  nodes:
    - {name: node-1, underlayIP: 192.168.56.11}
    - {name: node-2, underlayIP: 192.168.56.12}
  dns: {enabled: false}
"""
STATEFULSET = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          ports: [{name: http, containerPort: 8080}]
          readinessProbe:
            httpGet: {path: /readyz, port: http}
            periodSeconds: 1
            failureThreshold: 1
"""
# How long the set must stay held at web-1: several probe periods, and
# longer than a pod that is not held takes to be created and probed.
HELD_FOR = 4.0


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LiveLab]:
    (tmp_path / "lab.yaml").write_text(LAB)
    with running_lab([tmp_path / "lab.yaml"], check_lab_name(f"sts-t{os.getpid() % 10000}")) as lab:
        yield lab


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def web_pods(lab: LiveLab) -> dict[str, dict[str, Any]]:
    return {
        p["metadata"]["name"]: p
        for p in lab.state()["pods"]
        if p["metadata"]["name"].startswith("web-")
    }


def apply(lab: LiveLab, directory: Path, text: str) -> None:
    manifest = directory / "web.yaml"
    manifest.write_text(text)
    lab.apply([item.obj for item in load_and_validate([manifest])])


def revision(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["labels"]["controller-revision-hash"])


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_a_pod_failing_readiness_holds_the_next_ordinal_back(lab: LiveLab, tmp_path: Path) -> None:
    flag = health_dir(lab.name, "default", "web-1") / "fail-readiness"
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch()
    apply(lab, tmp_path, STATEFULSET)

    wait_for(lambda: "web-1" in web_pods(lab), 10.0, "web-1 created once web-0 is ready")
    assert ready(web_pods(lab)["web-0"])

    held_until = time.monotonic() + HELD_FOR
    while time.monotonic() < held_until:
        pods = web_pods(lab)
        assert sorted(pods) == ["web-0", "web-1"], "web-2 created while web-1 is not ready"
        assert not ready(pods["web-1"])
        time.sleep(0.2)

    flag.unlink()
    wait_for(lambda: "web-2" in web_pods(lab), 10.0, "web-2 created once web-1 is ready")
    wait_for(lambda: ready(web_pods(lab)["web-2"]), 10.0, "web-2 ready")
    pods = web_pods(lab)
    assert sorted(pods) == ["web-0", "web-1", "web-2"]
    assert all(ready(p) for p in pods.values())


def test_a_rolling_update_replaces_the_highest_ordinal_first_and_finishes(
    lab: LiveLab, tmp_path: Path
) -> None:
    apply(lab, tmp_path, STATEFULSET)
    wait_for(
        lambda: len(pods := web_pods(lab)) == 3 and all(ready(p) for p in pods.values()),
        10.0,
        "three ready pods",
    )
    old = revision(web_pods(lab)["web-0"])
    apply(
        lab,
        tmp_path,
        STATEFULSET.replace(
            "        - name: web\n", "        - name: web\n          env: [{name: V, value: '2'}]\n"
        ),
    )

    def updated() -> bool:
        pods = web_pods(lab)
        return (
            len(pods) == 3
            and all(revision(p) != old and ready(p) for p in pods.values())
            and not any(p["metadata"].get("deletionTimestamp") for p in pods.values())
        )

    wait_for(updated, 20.0, "every pod replaced and ready")
    log = (run_dir(lab.name) / LOG).read_text().splitlines()
    replaced = [line.split(":")[0] for line in log if ": deleted, stopping" in line]
    assert replaced == ["default/web-2", "default/web-1", "default/web-0"]
